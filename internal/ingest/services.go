package ingest

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/identity"
	"github.com/weft-mesh/weft/internal/ir"
	"github.com/weft-mesh/weft/internal/workload"
)

// service is a Service being built.
type service struct {
	obj *corev1.Service
	ir  *ir.Service
	// targetPorts are the endpoint ports seen per Service port, i.e. the
	// container ports that a Service port resolves to.
	targetPorts map[int32][]int32
	// rateLimit is the RateLimitPolicy in force on the Service.
	rateLimit *ir.RateLimit
}

func serviceRef(ns, name string) ir.ObjectRef {
	return ir.ObjectRef{Kind: "Service", Namespace: ns, Name: name}
}

func (s *state) hostname(ns, name string) string {
	return name + "." + ns + ".svc." + s.domain
}

func (s *state) buildServices() {
	for _, svc := range s.b.Services {
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		ref := serviceRef(svc.Namespace, svc.Name)
		out := &ir.Service{
			Source:       ref,
			Namespace:    svc.Namespace,
			Name:         svc.Name,
			Hostname:     s.hostname(svc.Namespace, svc.Name),
			MTLS:         s.mtls(svc.Namespace),
			LoadBalancer: s.loadBalancer(svc, ref),
			ExportTo:     s.exportTo(svc, ref),
		}
		for _, ip := range svc.Spec.ClusterIPs {
			if _, err := netip.ParseAddr(ip); err == nil {
				out.VIPs = append(out.VIPs, ip)
			}
		}
		if len(out.VIPs) == 0 && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
			if _, err := netip.ParseAddr(svc.Spec.ClusterIP); err == nil {
				out.VIPs = []string{svc.Spec.ClusterIP}
			}
		}
		slices.Sort(out.VIPs)
		st := &service{obj: svc, ir: out, targetPorts: map[int32][]int32{}}
		for _, p := range svc.Spec.Ports {
			if !meshedPort(p) {
				continue // the mesh carries TCP only; UDP and SCTP bypass the proxy
			}
			if st.port(p.Port) != nil {
				continue
			}
			port := &ir.Port{
				Name:     p.Name,
				Port:     p.Port,
				Protocol: PortProtocol(p),
				Cluster:  ir.ClusterName(out.Hostname, p.Port),
			}
			out.Ports = append(out.Ports, port)
		}
		slices.SortFunc(out.Ports, func(a, b *ir.Port) int { return cmp.Compare(a.Port, b.Port) })
		s.services[svc.Namespace+"/"+svc.Name] = st
	}
}

// meshedPort says whether the mesh carries a Service port: TCP only; UDP
// and SCTP bypass the proxy.
func meshedPort(p corev1.ServicePort) bool {
	return p.Protocol == "" || p.Protocol == corev1.ProtocolTCP
}

// port returns the Service's port with a number; a Service has few ports,
// so a search costs less than a map per Service.
func (st *service) port(n int32) *ir.Port {
	for _, p := range st.ir.Ports {
		if p.Port == n {
			return p
		}
	}
	return nil
}

// portNamed returns the Service's port with a name.
func (st *service) portNamed(name string) *ir.Port {
	for _, p := range st.ir.Ports {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// specPort returns the spec of the port the mesh carries with a number:
// the first TCP one, as buildServices keeps.
func (st *service) specPort(n int32) (corev1.ServicePort, bool) {
	for _, p := range st.obj.Spec.Ports {
		if p.Port == n && meshedPort(p) {
			return p, true
		}
	}
	return corev1.ServicePort{}, false
}

// PortProtocol decides how a Service port is handled: appProtocol first,
// then the port name's prefix (http, http2, grpc, tcp), else opaque TCP.
// Opaque TCP is the safe default: the proxy forwards bytes it does not
// understand without breaking them.
func PortProtocol(p corev1.ServicePort) ir.Protocol {
	if p.AppProtocol != nil {
		switch strings.ToLower(*p.AppProtocol) {
		case "http", "http1", "kubernetes.io/ws":
			return ir.ProtocolHTTP
		case "http2", "h2c", "kubernetes.io/h2c":
			return ir.ProtocolHTTP2
		case "grpc", "grpc-web":
			return ir.ProtocolGRPC
		case "tcp", "https", "tls", "kubernetes.io/wss":
			return ir.ProtocolTCP
		}
	}
	name := strings.ToLower(p.Name)
	prefix, _, _ := strings.Cut(name, "-")
	switch prefix {
	case "http", "http1":
		return ir.ProtocolHTTP
	case "http2", "h2c":
		return ir.ProtocolHTTP2
	case "grpc":
		return ir.ProtocolGRPC
	}
	return ir.ProtocolTCP
}

// loadBalancer reads the weft.dev/load-balancer annotation:
// least-request (default), round-robin, weighted-round-robin (by the load
// endpoints report), ring-hash:header=<name>,
// ring-hash:cookie=<name>[;ttl=<duration>] or ring-hash:source-ip.
func (s *state) loadBalancer(svc *corev1.Service, ref ir.ObjectRef) ir.LoadBalancer {
	v, ok := svc.Annotations[meshv1alpha1.AnnotationLoadBalancer]
	if !ok {
		return ir.LoadBalancer{Policy: ir.LBLeastRequest}
	}
	lb, err := ParseLoadBalancer(v)
	if err != nil {
		s.warn(ref, "InvalidLoadBalancer", fmt.Sprintf("annotation %s: %v; using least-request", meshv1alpha1.AnnotationLoadBalancer, err))
		return ir.LoadBalancer{Policy: ir.LBLeastRequest}
	}
	return lb
}

// exportTo reads the weft.dev/export-to annotation of the Service, or else
// of its namespace. A value that cannot be read is reported and the
// Service stays visible to every namespace, as without the annotation:
// hiding it by mistake would cut off its callers.
func (s *state) exportTo(svc *corev1.Service, ref ir.ObjectRef) []string {
	v, ok := svc.Annotations[meshv1alpha1.AnnotationExportTo]
	on := ref
	if !ok {
		ns := s.namespaces[svc.Namespace]
		if ns == nil {
			return nil
		}
		if v, ok = ns.Annotations[meshv1alpha1.AnnotationExportTo]; !ok {
			return nil
		}
		on = ir.ObjectRef{Kind: "Namespace", Name: ns.Name}
	}
	out, err := ParseExportTo(v, svc.Namespace)
	if err != nil {
		s.warn(ref, "InvalidExportTo", fmt.Sprintf("annotation %s on %s: %v; the Service is sent to every namespace", meshv1alpha1.AnnotationExportTo, on, err))
		return nil
	}
	return out
}

// reportExportsToProxyless warns on each Service exported to some
// namespaces only when proxyless gRPC clients run in another: they ask
// for the names they dial and are sent them, export or not (only Envoy
// proxies are scoped).
func (s *state) reportExportsToProxyless() {
	var limited []*service
	for _, key := range sortedKeys(s.services) {
		if st := s.services[key]; st.ir.ExportTo != nil {
			limited = append(limited, st)
		}
	}
	if len(limited) == 0 {
		return
	}
	proxyless := map[string]bool{}
	for _, pod := range s.b.Pods {
		var nsLabels map[string]string
		if ns := s.namespaces[pod.Namespace]; ns != nil {
			nsLabels = ns.Labels
		}
		if w := workload.Of(pod, nsLabels); w.Meshed && w.Mode == workload.ModeProxyless {
			proxyless[pod.Namespace] = true
		}
	}
	for _, st := range limited {
		var outside []string
		for _, ns := range sortedKeys(proxyless) {
			if !st.ir.ExportedTo(ns) {
				outside = append(outside, ns)
			}
		}
		if len(outside) > 0 {
			s.warn(st.ir.Source, "ExportNotHonouredByProxyless", fmt.Sprintf("annotation %s keeps the Service from Envoy proxies outside %s, but proxyless gRPC clients are sent every name they dial: those in namespaces %s can still reach it", meshv1alpha1.AnnotationExportTo, strings.Join(st.ir.ExportTo, ", "), strings.Join(outside, ", ")))
		}
	}
}

// ParseExportTo parses a weft.dev/export-to value for a Service in
// namespace own: nil means every namespace, []string{ir.ExportNowhere}
// none, else the sorted namespace names.
func ParseExportTo(v, own string) ([]string, error) {
	var out []string
	all, none := false, false
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		switch {
		case item == "*":
			all = true
		case item == ir.ExportNowhere:
			none = true
		case item == ".":
			out = append(out, own)
		case item == "":
			return nil, fmt.Errorf("%q has an empty entry: list namespace names, \".\" for the Service's own, \"*\" for all or \"~\" for none, separated by commas", v)
		case len(validation.IsDNS1123Label(item)) == 0:
			out = append(out, item)
		default:
			return nil, fmt.Errorf("%q is not a namespace name: list namespace names, \".\" for the Service's own, \"*\" for all or \"~\" for none, separated by commas", item)
		}
	}
	switch {
	case none && (all || len(out) > 0):
		return nil, fmt.Errorf("%q combines \"~\" (no namespace) with other entries", v)
	case all:
		return nil, nil
	case none:
		return []string{ir.ExportNowhere}, nil
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// ParseLoadBalancer parses a weft.dev/load-balancer annotation value.
func ParseLoadBalancer(v string) (ir.LoadBalancer, error) {
	v = strings.TrimSpace(v)
	switch v {
	case "", "least-request":
		return ir.LoadBalancer{Policy: ir.LBLeastRequest}, nil
	case "round-robin":
		return ir.LoadBalancer{Policy: ir.LBRoundRobin}, nil
	case "weighted-round-robin":
		return ir.LoadBalancer{Policy: ir.LBWeightedRoundRobin}, nil
	case "ring-hash:source-ip":
		return ir.LoadBalancer{Policy: ir.LBRingHash, HashOn: &ir.HashOn{SourceIP: true}}, nil
	}
	if h, ok := strings.CutPrefix(v, "ring-hash:header="); ok {
		if !validHeaderName(h) {
			return ir.LoadBalancer{}, fmt.Errorf("%q is not a header name", h)
		}
		return ir.LoadBalancer{Policy: ir.LBRingHash, HashOn: &ir.HashOn{Header: strings.ToLower(h)}}, nil
	}
	if c, ok := strings.CutPrefix(v, "ring-hash:cookie="); ok {
		name, ttl, hasTTL := strings.Cut(c, ";ttl=")
		if !validHeaderName(name) {
			return ir.LoadBalancer{}, fmt.Errorf("%q is not a cookie name", name)
		}
		h := &ir.HashOn{Cookie: name}
		if hasTTL {
			d, err := time.ParseDuration(ttl)
			if err != nil || d <= 0 {
				return ir.LoadBalancer{}, fmt.Errorf("cookie ttl %q is not a positive duration such as 1h", ttl)
			}
			h.CookieTTL = ir.Duration(d)
		}
		return ir.LoadBalancer{Policy: ir.LBRingHash, HashOn: h}, nil
	}
	return ir.LoadBalancer{}, fmt.Errorf("unknown value %q: use least-request, round-robin, weighted-round-robin, ring-hash:header=<name>, ring-hash:cookie=<name>[;ttl=<duration>] or ring-hash:source-ip", v)
}

func validHeaderName(h string) bool {
	if h == "" || len(h) > 256 {
		return false
	}
	for _, r := range h {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && !strings.ContainsRune("-_.!#$%&'*+^`|~", r) {
			return false
		}
	}
	return true
}

// buildEndpoints fills each Service port's endpoints from its EndpointSlices:
// ready endpoints take traffic, terminating ones that still serve drain.
func (s *state) buildEndpoints() {
	podSA := map[string]string{}
	for _, p := range s.b.Pods {
		podSA[p.Namespace+"/"+p.Name] = workload.ServiceAccount(p)
	}
	type epKey struct {
		addr string
		port int32
	}
	seen := map[string]map[epKey]bool{}
	identities := map[string]map[string]bool{}
	for _, es := range s.b.EndpointSlices {
		if es.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		svcName := es.Labels[discoveryv1.LabelServiceName]
		st := s.services[es.Namespace+"/"+svcName]
		if st == nil {
			continue
		}
		for _, ep := range es.Endpoints {
			health, ok := endpointHealth(ep.Conditions)
			if !ok {
				continue
			}
			pod := ""
			if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
				pod = cmp.Or(ep.TargetRef.Namespace, es.Namespace) + "/" + ep.TargetRef.Name
				if sa, ok := podSA[pod]; ok {
					podNS, _, _ := strings.Cut(pod, "/")
					if td := s.meshNS[podNS]; td != nil && td.TrustDomain != "" {
						if identities[st.ir.Key()] == nil {
							identities[st.ir.Key()] = map[string]bool{}
						}
						identities[st.ir.Key()][identity.SpiffeID(td.TrustDomain, podNS, sa)] = true
					}
				}
			}
			zone := ""
			if ep.Zone != nil {
				zone = *ep.Zone
			}
			for _, esp := range es.Ports {
				if esp.Port == nil || (esp.Protocol != nil && *esp.Protocol != corev1.ProtocolTCP) {
					continue
				}
				name := ""
				if esp.Name != nil {
					name = *esp.Name
				}
				port := st.portNamed(name)
				if port == nil {
					continue
				}
				for _, addr := range ep.Addresses {
					a, err := netip.ParseAddr(addr)
					if err != nil {
						continue
					}
					key := epKey{a.String(), *esp.Port}
					cl := port.Cluster
					if seen[cl] == nil {
						seen[cl] = map[epKey]bool{}
					}
					if seen[cl][key] {
						continue
					}
					seen[cl][key] = true
					port.Endpoints = append(port.Endpoints, ir.Endpoint{Address: a.String(), Port: *esp.Port, Health: health, Zone: zone, Pod: pod})
					if !slices.Contains(st.targetPorts[port.Port], *esp.Port) {
						st.targetPorts[port.Port] = append(st.targetPorts[port.Port], *esp.Port)
					}
				}
			}
		}
	}
	for _, st := range s.services {
		for _, p := range st.ir.Ports {
			slices.SortFunc(p.Endpoints, func(a, b ir.Endpoint) int {
				return cmp.Or(compareAddr(a.Address, b.Address), cmp.Compare(a.Port, b.Port))
			})
			slices.Sort(st.targetPorts[p.Port])
		}
		for id := range identities[st.ir.Key()] {
			st.ir.Identities = append(st.ir.Identities, id)
		}
		slices.Sort(st.ir.Identities)
	}
}

func endpointHealth(c discoveryv1.EndpointConditions) (ir.Health, bool) {
	ready := c.Ready == nil || *c.Ready
	if ready {
		return ir.HealthHealthy, true
	}
	serving := c.Serving != nil && *c.Serving
	terminating := c.Terminating != nil && *c.Terminating
	if serving && terminating {
		return ir.HealthDraining, true
	}
	return "", false
}

func compareAddr(a, b string) int {
	pa, errA := netip.ParseAddr(a)
	pb, errB := netip.ParseAddr(b)
	if errA != nil || errB != nil {
		return strings.Compare(a, b)
	}
	return pa.Compare(pb)
}
