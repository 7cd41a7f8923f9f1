package controllers_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/weft-mesh/weft/controllers"
	_ "github.com/weft-mesh/weft/internal/golden"
	"github.com/weft-mesh/weft/internal/testenv"
	"github.com/weft-mesh/weft/internal/xds/server"
	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

// harness is an API server with Weft's controller running in-process and an
// mTLS xDS server on loopback.
type harness struct {
	api      *apiProxy
	env      *testenv.Env
	c        client.Client
	ca       *xdstest.CA
	xdsAddr  string
	mesh     *controllers.MeshReconciler
	xds      *server.Server
	xdsStats *server.Metrics
}

func init() {
	if os.Getenv("WEFT_TEST_LOGS") != "" {
		ctrl.SetLogger(zap.New(zap.UseDevMode(true)))
	} else {
		ctrl.SetLogger(logr.Discard())
	}
}

type harnessOptions struct {
	// insecure serves xDS without TLS, and the controller then checks no
	// client identity.
	insecure bool
	// debounce is the mesh controller's Debounce; zero means 10 ms, which
	// keeps tests quick (weft-controller's --debounce defaults to 20 ms).
	debounce time.Duration
}

func startHarness(t testing.TB, opts ...harnessOptions) *harness {
	var o harnessOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	t.Helper()
	env := testenv.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	ca, err := xdstest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	certDir := t.TempDir()
	if err := ca.WriteDir(certDir, "spiffe://cluster.local/ns/weft-system/sa/weft-controller", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}); err != nil {
		t.Fatal(err)
	}
	// The controller reaches the API server through a proxy the test can cut.
	u, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	api := newAPIProxy(t, u.Host)
	cfg := rest.CopyConfig(env.Config)
	cfg.Host = "https://" + api.addr
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
		Cache:                  controllers.CacheOptions(),
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	debounce := o.debounce
	if debounce == 0 {
		debounce = 10 * time.Millisecond
	}
	mesh := &controllers.MeshReconciler{Client: mgr.GetClient(), Debounce: debounce, Metrics: controllers.NewMetrics(reg)}
	ft, err := server.NewFileTLS(certDir)
	if err != nil {
		t.Fatal(err)
	}
	stats := server.NewMetrics(reg)
	xopts := server.Options{Address: "127.0.0.1:0", TLS: ft.Config(), Authorizer: mesh, Metrics: stats, Log: ctrl.Log.WithName("xds")}
	if o.insecure {
		xopts.TLS, xopts.Insecure = nil, true
	}
	xds, err := server.New(xopts)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := xds.Listen()
	if err != nil {
		t.Fatal(err)
	}
	mesh.XDS = xds
	mesh.Status = controllers.NewStatusWriter(mgr.GetClient(), mesh.Metrics)
	for _, r := range []interface {
		Start(context.Context) error
	}{xds, mesh.Status} {
		if err := mgr.Add(r.(interface {
			Start(context.Context) error
			NeedLeaderElection() bool
		})); err != nil {
			t.Fatal(err)
		}
	}
	if err := mesh.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return &harness{api: api, env: env, c: env.Client, ca: ca, xdsAddr: addr.String(), mesh: mesh, xds: xds, xdsStats: stats}
}

// proxy connects to the xDS server over delta ADS, as Envoy does, as node
// with a certificate for spiffeID.
func (h *harness) proxy(t *testing.T, node, spiffeID string, subs map[string][]string) *xdstest.Client {
	t.Helper()
	return h.dial(t, spiffeID, func(conn *grpc.ClientConn) (*xdstest.Client, error) {
		return xdstest.DialDelta(t.Context(), conn, node, subs)
	})
}

// grpcClient connects over state-of-the-world ADS, as proxyless gRPC does.
func (h *harness) grpcClient(t *testing.T, node, spiffeID string, subs map[string][]string) *xdstest.Client {
	t.Helper()
	return h.dial(t, spiffeID, func(conn *grpc.ClientConn) (*xdstest.Client, error) {
		return xdstest.Dial(t.Context(), conn, node, subs)
	})
}

func (h *harness) dial(t *testing.T, spiffeID string, open func(*grpc.ClientConn) (*xdstest.Client, error)) *xdstest.Client {
	t.Helper()
	tlsCfg, err := h.ca.ClientTLS(spiffeID)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(h.xdsAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c, err := open(conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func (h *harness) create(t testing.TB, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := h.c.Create(t.Context(), o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

// pod creates a running pod with an IP.
func (h *harness) pod(t testing.TB, ns, name, sa, ip string, labels map[string]string) *corev1.Pod {
	t.Helper()
	p, err := h.tryPod(t.Context(), ns, name, sa, ip, labels)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tryPod is pod for use off the test goroutine.
func (h *harness) tryPod(ctx context.Context, ns, name, sa, ip string, labels map[string]string) (*corev1.Pod, error) {
	return h.tryAnnotatedPod(ctx, ns, name, sa, ip, labels, nil)
}

// tryAnnotatedPod is tryPod for a pod with annotations, such as
// weft.dev/inject: grpc-agent for a proxyless gRPC pod.
func (h *harness) tryAnnotatedPod(ctx context.Context, ns, name, sa, ip string, labels, annotations map[string]string) (*corev1.Pod, error) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, Annotations: annotations},
		Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{
			Name: "app", Image: "example/app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
	}
	if err := h.c.Create(ctx, p); err != nil {
		return nil, fmt.Errorf("creating pod %s: %w", name, err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if err := h.c.Status().Update(ctx, p); err != nil {
		return nil, fmt.Errorf("setting pod %s running: %w", name, err)
	}
	return p, nil
}

// service creates an HTTP Service on port 80 with an EndpointSlice of pods.
func (h *harness) service(t testing.TB, ns, name, ip string, selector map[string]string, pods ...*corev1.Pod) {
	t.Helper()
	if err := h.tryService(t.Context(), ns, name, ip, selector, pods...); err != nil {
		t.Fatal(err)
	}
}

// tryService is service for use off the test goroutine; an empty ip lets
// the API server allocate one.
func (h *harness) tryService(ctx context.Context, ns, name, ip string, selector map[string]string, pods ...*corev1.Pod) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Selector: selector,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}},
	}
	if ip != "" {
		svc.Spec.ClusterIP, svc.Spec.ClusterIPs = ip, []string{ip}
	}
	if err := h.c.Create(ctx, svc); err != nil {
		return fmt.Errorf("creating service %s: %w", name, err)
	}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, p := range pods {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{p.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: p.Name},
		})
	}
	if err := h.c.Create(ctx, es); err != nil {
		return fmt.Errorf("creating endpoints of %s: %w", name, err)
	}
	return nil
}

// routeWeights returns the traffic share in percent of each cluster of the

// update reads obj's current version, applies change and writes it back
// (its status when status is set), until the write lands.
func update[T client.Object](t *testing.T, h *harness, obj T, status bool, change func(T)) {
	t.Helper()
	eventually(t, 20*time.Second, "updating "+obj.GetName(), func() (bool, string) {
		cur, ok := obj.DeepCopyObject().(T)
		if !ok {
			return false, fmt.Sprintf("%T does not copy to itself", obj)
		}
		if err := h.c.Get(t.Context(), client.ObjectKeyFromObject(obj), cur); err != nil {
			return false, err.Error()
		}
		change(cur)
		var err error
		if status {
			err = h.c.Status().Update(t.Context(), cur)
		} else {
			err = h.c.Update(t.Context(), cur)
		}
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

// first forwarding route of a route configuration.
func routeWeights(rc *routev3.RouteConfiguration) map[string]uint32 {
	out := map[string]uint32{}
	defer func() {
		total := uint32(0)
		for _, w := range out {
			total += w
		}
		for c, w := range out {
			out[c] = w * 100 / total
		}
	}()
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			a := r.GetRoute()
			if a == nil {
				continue
			}
			if c := a.GetCluster(); c != "" {
				out[c] = 1
			}
			for _, wc := range a.GetWeightedClusters().GetClusters() {
				out[wc.GetName()] += wc.GetWeight().GetValue()
			}
			if len(out) > 0 {
				return out
			}
		}
	}
	return out
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	last := ""
	err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		ok, msg := cond()
		last = msg
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: not within %s; last: %s", what, timeout, last)
	}
}
