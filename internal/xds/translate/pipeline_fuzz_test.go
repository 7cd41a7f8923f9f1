package translate

import (
	"fmt"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ingest"
	"github.com/weft-mesh/weft/internal/ir"
)

// FuzzIngestTranslate feeds random bundles of Kubernetes objects (within
// what the CRD schemas admit) through ingest and the translator: neither may
// panic or fail, and every resource of every proxy group must pass Envoy's
// validation.
func FuzzIngestTranslate(f *testing.F) {
	f.Add([]byte("seed: a canary"))
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})
	f.Add([]byte("\xff\xfe\xfd\xfc retries, breakers, routes and policies \x01\x02"))
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, data []byte) {
		b := randomBundle(&fuzzBytes{data: data})
		res := ingest.Build(b)
		prep, err := Prepare(res.Mesh, Options{})
		if err != nil {
			t.Fatalf("Prepare: %v", err)
		}
		for _, e := range Endpoints(res.Mesh) {
			if err := validateDeep(e); err != nil {
				t.Fatalf("endpoints: %v", err)
			}
		}
		for _, g := range res.Mesh.ProxyGroups {
			for _, build := range []func(*ir.ProxyGroup) (*Config, error){prep.ForGroup, prep.ForGRPC} {
				cfg, err := build(g)
				if err != nil {
					t.Fatalf("group %s: %v", g.Key, err)
				}
				all := cfg.Resources()
				for _, list := range [][]types.Resource{all.Listeners, all.Routes, all.Clusters, all.Secrets} {
					for _, r := range list {
						if err := validateDeep(r); err != nil {
							t.Fatalf("group %s: %v", g.Key, err)
						}
					}
				}
			}
		}
	})
}

// fuzzBytes hands out fuzz bytes; it returns zeros when they run out.
type fuzzBytes struct {
	data []byte
	pos  int
}

func (s *fuzzBytes) byte() byte {
	if s.pos >= len(s.data) {
		return 0
	}
	b := s.data[s.pos]
	s.pos++
	return b
}

func (s *fuzzBytes) intn(n int) int { return int(s.byte()) % n }

func (s *fuzzBytes) pick(options ...string) string { return options[s.intn(len(options))] }

func randomBundle(s *fuzzBytes) *ingest.Bundle {
	b := &ingest.Bundle{}
	nss := []string{"a", "b"}
	for _, ns := range nss {
		labels := map[string]string{"kubernetes.io/metadata.name": ns}
		if s.intn(3) > 0 {
			labels[meshv1alpha1.LabelInject] = meshv1alpha1.NamespaceInjectEnabled
		}
		b.Namespaces = append(b.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}})
	}
	if s.intn(4) > 0 {
		mode := meshv1alpha1.MTLSMode(s.pick("Strict", "Permissive", ""))
		b.MeshIdentities = append(b.MeshIdentities, &meshv1alpha1.MeshIdentity{ObjectMeta: metav1.ObjectMeta{Name: "m"},
			Spec: meshv1alpha1.MeshIdentitySpec{TrustDomain: s.pick("cluster.local", "x.y", "a-b_c"), MTLS: meshv1alpha1.MTLS{Mode: mode}}})
	}
	svcNames := []string{"s0", "s1", "s2", "s3"}
	portNames := []string{"http", "grpc", "http2-x", "tcp", "", "web", "grpc-web", "h2c"}
	ports := []int32{80, 81, 9090, 5432, 65535, 1}
	for i := range 1 + s.intn(4) {
		ns := nss[s.intn(2)]
		name := svcNames[i]
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": s.pick("x", "y")}}}
		if s.intn(4) > 0 {
			ip := fmt.Sprintf("10.96.0.%d", 1+s.intn(250))
			svc.Spec.ClusterIP, svc.Spec.ClusterIPs = ip, []string{ip}
		} else {
			svc.Spec.ClusterIP = corev1.ClusterIPNone
		}
		if s.intn(6) == 0 {
			svc.Annotations = map[string]string{meshv1alpha1.AnnotationLoadBalancer: s.pick("round-robin", "ring-hash:header=x-u", "ring-hash:cookie=c;ttl=1h", "ring-hash:source-ip", "bogus")}
		}
		for range 1 + s.intn(3) {
			p := corev1.ServicePort{Name: portNames[s.intn(len(portNames))], Port: ports[s.intn(len(ports))], Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(int32(1 + s.intn(9000)))}
			if s.intn(5) == 0 {
				p.AppProtocol = ptr.To(s.pick("http", "grpc", "kubernetes.io/h2c", "tcp", "weird"))
			}
			svc.Spec.Ports = append(svc.Spec.Ports, p)
		}
		b.Services = append(b.Services, svc)
		es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-x", Labels: map[string]string{discoveryv1.LabelServiceName: name}}, AddressType: discoveryv1.AddressTypeIPv4}
		for _, p := range svc.Spec.Ports {
			es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Port: ptr.To(p.TargetPort.IntVal), Protocol: ptr.To(corev1.ProtocolTCP)})
		}
		for e := range s.intn(4) {
			pod := fmt.Sprintf("%s-%d", name, e)
			ip := fmt.Sprintf("10.244.%d.%d", i, 1+s.intn(3))
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(s.intn(4) > 0), Serving: ptr.To(true), Terminating: ptr.To(s.intn(2) == 0)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod}})
			b.Pods = append(b.Pods, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pod, Labels: svc.Spec.Selector, Annotations: map[string]string{meshv1alpha1.AnnotationInject: s.pick("true", "grpc-agent", "false", "")}},
				Spec:   corev1.PodSpec{ServiceAccountName: s.pick("", "sa1", "sa2")},
				Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip}})
		}
		b.EndpointSlices = append(b.EndpointSlices, es)
	}
	ref := func() (string, string) { return nss[s.intn(2)], svcNames[s.intn(len(svcNames))] }
	dur := func() *metav1.Duration {
		return &metav1.Duration{Duration: []time.Duration{time.Millisecond, 250 * time.Millisecond, time.Second, time.Hour}[s.intn(4)]}
	}
	for i := range s.intn(3) {
		ns, apex := ref()
		ts := &meshv1alpha1.TrafficSplit{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("ts%d", i)}, Spec: meshv1alpha1.TrafficSplitSpec{Service: apex}}
		for j := range 1 + s.intn(3) {
			ts.Spec.Backends = append(ts.Spec.Backends, meshv1alpha1.TrafficSplitBackend{Service: svcNames[(j+s.intn(4))%4], Weight: int32(s.intn(2)) * int32(1+s.intn(200)) * int32(1+s.intn(5000))})
		}
		b.TrafficSplits = append(b.TrafficSplits, ts)
	}
	for i := range s.intn(3) {
		ns, target := ref()
		rp := &meshv1alpha1.RetryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("rp%d", i)}, Spec: meshv1alpha1.RetryPolicySpec{
			TargetRef: meshv1alpha1.RouteTargetReference{Kind: "Service", Name: target}, Attempts: ptr.To(int32(s.intn(11))), RetryNonIdempotent: s.intn(2) == 0,
		}}
		if s.intn(2) == 0 {
			rp.Spec.TargetRef = meshv1alpha1.RouteTargetReference{Group: "gateway.networking.k8s.io", Kind: s.pick("HTTPRoute", "GRPCRoute"), Name: "r0"}
		}
		if s.intn(2) == 0 {
			rp.Spec.PerTryTimeout, rp.Spec.Timeout = dur(), dur()
		}
		if s.intn(2) == 0 {
			rp.Spec.RetryOn = []meshv1alpha1.RetryOn{meshv1alpha1.RetryOn(s.pick("5xx", "reset", "unavailable", "retriable-status-codes", "cancelled"))}
			rp.Spec.RetriableStatusCodes = []int32{int32(100 + s.intn(250)*2)}
		}
		if s.intn(2) == 0 {
			rp.Spec.Backoff = &meshv1alpha1.RetryBackoff{BaseInterval: *dur()}
			rp.Spec.Budget = &meshv1alpha1.RetryBudget{Percent: int32(1 + s.intn(100)), MinRetryConcurrency: ptr.To(int32(s.intn(10)))}
		}
		b.RetryPolicies = append(b.RetryPolicies, rp)
	}
	for i := range s.intn(3) {
		ns, target := ref()
		cb := &meshv1alpha1.CircuitBreaker{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("cb%d", i)}, Spec: meshv1alpha1.CircuitBreakerSpec{
			TargetRef: meshv1alpha1.CircuitBreakerTargetReference{Kind: "Service", Name: target}, MaxRequests: ptr.To(int32(1 + s.intn(100))), MaxRetries: ptr.To(int32(s.intn(3))),
		}}
		if s.intn(2) == 0 {
			cb.Spec.TargetRef.Port = ptr.To(ports[s.intn(len(ports))])
		}
		if s.intn(2) == 0 {
			cb.Spec.OutlierDetection = &meshv1alpha1.OutlierDetection{Consecutive5xxErrors: ptr.To(int32(1 + s.intn(9))), Interval: dur(), BaseEjectionTime: dur(), MaxEjectionPercent: ptr.To(int32(s.intn(101))),
				FailurePercentage: &meshv1alpha1.FailurePercentage{Threshold: int32(1 + s.intn(100)), MinimumHosts: int32(1 + s.intn(5)), RequestVolume: int32(1 + s.intn(100))}}
		}
		b.CircuitBreakers = append(b.CircuitBreakers, cb)
	}
	for i := range s.intn(3) {
		ns, target := ref()
		ap := &meshv1alpha1.AccessPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("ap%d", i)}, Spec: meshv1alpha1.AccessPolicySpec{
			TargetRef: meshv1alpha1.ServiceTargetReference{Kind: "Service", Name: target}, Action: meshv1alpha1.AccessAction(s.pick("Allow", "Deny", "")),
		}}
		for range 1 + s.intn(2) {
			rule := meshv1alpha1.AccessRule{}
			switch s.intn(3) {
			case 0:
				rule.From = []meshv1alpha1.AccessSource{{ServiceAccount: &meshv1alpha1.ServiceAccountRef{Name: s.pick("sa1", "sa2"), Namespace: s.pick("", "a", "b")}}}
			case 1:
				rule.From = []meshv1alpha1.AccessSource{{Namespace: ptr.To(s.pick("a", "b"))}}
			default:
				rule.From = []meshv1alpha1.AccessSource{{Identity: ptr.To(s.pick("spiffe://x.y/ns/a/sa/z", "spiffe://cluster.local/custom/path"))}}
			}
			if s.intn(2) == 0 {
				rule.To = []meshv1alpha1.AccessDestination{{Ports: []int32{ports[s.intn(len(ports))]}, Methods: []meshv1alpha1.HTTPMethod{meshv1alpha1.HTTPMethod(s.pick("GET", "POST"))}, Paths: []string{s.pick("/", "/api/*", "/x", "/a b")}}}
			}
			ap.Spec.Rules = append(ap.Spec.Rules, rule)
		}
		b.AccessPolicies = append(b.AccessPolicies, ap)
	}
	if s.intn(2) == 0 {
		ns, parent := ref()
		kind := gwapiv1.Kind("Service")
		port := ports[s.intn(len(ports))]
		ptype := gwapiv1.PathMatchType(s.pick("Exact", "PathPrefix", "RegularExpression"))
		pval := s.pick("/", "/api", "/a/", "[unclosed", "/x.*", "/.*(a|b)", "/ünï")
		r := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "r0"}, Spec: gwapiv1.HTTPRouteSpec{
			CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{{Group: ptr.To(gwapiv1.Group("")), Kind: &kind, Name: gwapiv1.ObjectName(parent), Port: &port}}},
			Rules: []gwapiv1.HTTPRouteRule{{
				Matches: []gwapiv1.HTTPRouteMatch{{Path: &gwapiv1.HTTPPathMatch{Type: &ptype, Value: &pval},
					Headers: []gwapiv1.HTTPHeaderMatch{{Name: gwapiv1.HTTPHeaderName(s.pick("x-v", ":authority", "host")), Value: s.pick("1", "", "a b")}}}},
				BackendRefs: []gwapiv1.HTTPBackendRef{{BackendRef: gwapiv1.BackendRef{Weight: ptr.To(int32(s.intn(3))), BackendObjectReference: gwapiv1.BackendObjectReference{Name: gwapiv1.ObjectName(svcNames[s.intn(4)]), Port: &port}}}},
			}},
		}}
		if s.intn(2) == 0 {
			r.Spec.Rules[0].Filters = []gwapiv1.HTTPRouteFilter{{Type: gwapiv1.HTTPRouteFilterURLRewrite, URLRewrite: &gwapiv1.HTTPURLRewriteFilter{
				Path: &gwapiv1.HTTPPathModifier{Type: gwapiv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr.To(s.pick("/", "/v2", ""))}}}}
		}
		b.HTTPRoutes = append(b.HTTPRoutes, r)
	}
	return b
}
