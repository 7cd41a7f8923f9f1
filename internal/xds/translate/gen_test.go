package translate

import (
	"fmt"
	"math"
	"time"

	"github.com/weft-mesh/weft/internal/ir"
)

// byteSource reads choices from fuzz input; when the input runs out every
// choice is 0, so any input describes some mesh.
type byteSource struct {
	data []byte
}

func (s *byteSource) byte() byte {
	if len(s.data) == 0 {
		return 0
	}
	b := s.data[0]
	s.data = s.data[1:]
	return b
}

func (s *byteSource) intn(n int) int { return int(s.byte()) % n }

func (s *byteSource) bool() bool { return s.byte()&1 == 1 }

func pick[T any](s *byteSource, from ...T) T { return from[s.intn(len(from))] }

// Value pools: mostly ordinary values, with some that ingest should never
// produce but the translator must survive.
var (
	genPorts     = []int32{80, 8080, 443, 9090, 5432, 0, 70000}
	genProtocols = []ir.Protocol{ir.ProtocolHTTP, ir.ProtocolHTTP2, ir.ProtocolGRPC, ir.ProtocolTCP, "UDP"}
	genModes     = []ir.MTLSMode{ir.MTLSDisabled, ir.MTLSPermissive, ir.MTLSStrict, ""}
	genVIPs      = []string{"10.96.0.1", "10.96.0.2", "fd00::1", "10.96.0.1", "bogus", "0.0.0.0", "10.96.0.3"}
	genAddrs     = []string{"10.0.0.1", "10.0.0.2", "fd00::10", "10.0.0.1", "", "nope", "10.0.0.3"}
	genPaths     = []string{"/", "/a", "/a/", "", "/a/b", "(", "/[0-9]+", "/x\ny", "//", "/items/.*"}
	genHeaders   = []string{"x-user", "X-Mixed", "", ":path", "host", ":method", "bad\nname", "cookie"}
	genValues    = []string{"v", "", "a|b", "(", "\x00", "line\nbreak", "1"}
	genRetryOn   = []string{"5xx", "connect-failure", "unavailable", "reset", "cancelled", ""}
	genStatuses  = []int{0, 99, 200, 301, 302, 303, 307, 308, 404, 500, 503, 600, 700}
	genWeights   = []uint32{0, 1, 10, 90, 100, math.MaxUint32}
	genPercents  = []float64{0, 25, 50, 100, 150, -5, math.NaN()}
	genDurations = []ir.Duration{0, ir.Duration(time.Millisecond), ir.Duration(250 * time.Millisecond), ir.Duration(time.Minute), ir.Duration(-time.Second)}
	genCodes     = []uint32{0, 404, 503, 600, 99}
	genIDs       = []string{"spiffe://cluster.local/ns/ns0/sa/a", "", "spiffe://cluster.local/ns/ns1/", "x\n"}
	genNames     = []string{"s0", "s1", "s2", "s3", "s4", "s5"}
	genNS        = []string{"ns0", "ns1", "ns2"}
	genZones     = []string{"", "a", "b"}
	genMethods   = []string{"GET", "POST", "", "PATCH"}
)

// genMesh builds a small mesh from fuzz input.
func genMesh(data []byte) *ir.Mesh {
	s := &byteSource{data: data}
	m := &ir.Mesh{ClusterDomain: pick(s, "cluster.local", "")}
	for _, ns := range genNS {
		m.Namespaces = append(m.Namespaces, &ir.Namespace{Name: ns, MTLS: pick(s, genModes...), TrustDomain: "cluster.local"})
	}
	var clusters []string
	nsvc := s.intn(6)
	for i := range nsvc {
		ns := pick(s, genNS...)
		name := genNames[i]
		host := name + "." + ns + ".svc.cluster.local"
		svc := &ir.Service{
			Source:    ir.ObjectRef{Kind: "Service", Namespace: ns, Name: name},
			Namespace: ns, Name: name, Hostname: pick(s, host, ""),
			MTLS: pick(s, genModes...),
		}
		for range s.intn(3) {
			svc.VIPs = append(svc.VIPs, pick(s, genVIPs...))
		}
		if s.bool() {
			svc.Identities = []string{pick(s, genIDs...)}
		}
		switch s.intn(5) {
		case 0:
			svc.LoadBalancer = ir.LoadBalancer{Policy: ir.LBRoundRobin}
		case 1:
			svc.LoadBalancer = ir.LoadBalancer{Policy: ir.LBRingHash, HashOn: &ir.HashOn{Header: pick(s, genHeaders...)}}
		case 2:
			svc.LoadBalancer = ir.LoadBalancer{Policy: ir.LBRingHash, HashOn: &ir.HashOn{Cookie: pick(s, "session", ""), CookieTTL: pick(s, genDurations...)}}
		case 3:
			svc.LoadBalancer = ir.LoadBalancer{Policy: ir.LBRingHash, HashOn: &ir.HashOn{SourceIP: s.bool()}}
		}
		for range 1 + s.intn(3) {
			port := pick(s, genPorts...)
			p := &ir.Port{Port: port, Protocol: pick(s, genProtocols...), Cluster: pick(s, ir.ClusterName(host, port), "")}
			clusters = append(clusters, ir.ClusterName(host, port))
			for range s.intn(4) {
				p.Endpoints = append(p.Endpoints, ir.Endpoint{
					Address: pick(s, genAddrs...), Port: pick(s, genPorts...),
					Health: pick(s, ir.HealthHealthy, ir.HealthDraining), Zone: pick(s, genZones...),
				})
			}
			if s.bool() {
				p.CircuitBreaker = genBreaker(s)
			}
			if s.bool() {
				p.RetryBudget = &ir.RetryBudget{Percent: pick(s, genPercents...), MinRetryConcurrency: uint32(s.byte())}
			}
			svc.Ports = append(svc.Ports, p)
		}
		m.Services = append(m.Services, svc)
	}
	clusters = append(clusters, "outbound|1||nowhere")
	for _, svc := range m.Services {
		for _, p := range svc.Ports {
			for range s.intn(4) {
				p.Routes = append(p.Routes, genRoute(s, clusters))
			}
			if s.bool() {
				cr := &ir.ConsumerRoutes{Namespace: pick(s, genNS...)}
				for range 1 + s.intn(2) {
					cr.Routes = append(cr.Routes, genRoute(s, clusters))
				}
				p.ConsumerRoutes = append(p.ConsumerRoutes, cr)
			}
		}
	}
	for i := range 1 + s.intn(3) {
		g := &ir.ProxyGroup{
			Key: fmt.Sprintf("g%d", i), Namespace: pick(s, genNS...), ServiceAccount: "sa",
			Identity: pick(s, genIDs...), MTLS: pick(s, genModes...),
		}
		for range s.intn(3) {
			in := &ir.InboundPort{Port: pick(s, genPorts...), Protocol: pick(s, genProtocols...)}
			for range s.intn(3) {
				in.AccessPolicies = append(in.AccessPolicies, genPolicy(s))
			}
			g.Inbound = append(g.Inbound, in)
		}
		m.ProxyGroups = append(m.ProxyGroups, g)
	}
	return m
}

func genBreaker(s *byteSource) *ir.CircuitBreaker {
	u := func() *uint32 {
		if s.bool() {
			return nil
		}
		v := uint32(s.byte()) * 1000
		return &v
	}
	cb := &ir.CircuitBreaker{MaxConnections: u(), MaxPendingRequests: u(), MaxRequests: u(), MaxRetries: u()}
	if s.bool() {
		od := &ir.OutlierDetection{
			Consecutive5xx: u(), ConsecutiveGateway: u(),
			Interval: pick(s, genDurations...), BaseEjectionTime: pick(s, genDurations...),
			MaxEjectionPercent: uint32(s.byte()),
		}
		if s.bool() {
			od.FailurePercentage = &ir.FailurePercentage{Threshold: uint32(s.byte()), MinimumHosts: uint32(s.byte()), RequestVolume: uint32(s.byte())}
		}
		cb.Outlier = od
	}
	return cb
}

func genRoute(s *byteSource, clusters []string) *ir.Route {
	r := &ir.Route{Name: pick(s, "r0", "r1", "default", ""), Source: ir.ObjectRef{Kind: "HTTPRoute", Namespace: "ns0", Name: "r"}}
	for range s.intn(3) {
		var m ir.Match
		if s.bool() {
			m.Path = &ir.PathMatch{Type: pick(s, ir.PathExact, ir.PathPrefix, ir.PathRegex, "Bogus"), Value: pick(s, genPaths...)}
		}
		for range s.intn(2) {
			m.Headers = append(m.Headers, ir.StringMatch{Name: pick(s, genHeaders...), Type: pick(s, ir.MatchExact, ir.MatchRegex), Value: pick(s, genValues...)})
		}
		for range s.intn(2) {
			m.QueryParams = append(m.QueryParams, ir.StringMatch{Name: pick(s, "q", "", "x y"), Type: pick(s, ir.MatchExact, ir.MatchRegex), Value: pick(s, genValues...)})
		}
		m.Method = pick(s, genMethods...)
		r.Matches = append(r.Matches, m)
	}
	switch s.intn(6) {
	case 0:
		r.Redirect = &ir.Redirect{Scheme: pick(s, "", "https", "HTTP"), Hostname: pick(s, "", "example.com"), Port: pick(s, genPorts...), StatusCode: pick(s, genStatuses...)}
		if s.bool() {
			r.Redirect.Path = genPathRewrite(s)
		}
	case 1:
		r.DirectResponse = &ir.DirectResponse{Status: pick(s, genStatuses...), Body: pick(s, "", "body")}
	default:
		for range s.intn(4) {
			r.Backends = append(r.Backends, ir.Backend{Cluster: pick(s, clusters...), Weight: pick(s, genWeights...)})
		}
	}
	if s.bool() {
		r.RequestHeaders = genHeaderModifier(s)
	}
	if s.bool() {
		r.ResponseHeaders = genHeaderModifier(s)
	}
	if s.bool() {
		r.Rewrite = &ir.Rewrite{Hostname: pick(s, "", "h.example"), Path: genPathRewrite(s)}
	}
	for range s.intn(2) {
		r.Mirrors = append(r.Mirrors, ir.Mirror{Cluster: pick(s, clusters...), Percent: pick(s, genPercents...)})
	}
	if s.bool() {
		d := pick(s, genDurations...)
		r.Timeout = &d
	}
	if s.bool() {
		r.Retry = &ir.Retry{
			Attempts: uint32(s.intn(4)), PerTryTimeout: pick(s, genDurations...),
			RetryOn:              []string{pick(s, genRetryOn...), pick(s, genRetryOn...)},
			RetriableStatusCodes: []uint32{pick(s, genCodes...)},
			BaseInterval:         pick(s, genDurations...), MaxInterval: pick(s, genDurations...),
			NonIdempotent: s.bool(),
		}
	}
	return r
}

func genPathRewrite(s *byteSource) *ir.PathRewrite {
	if s.bool() {
		return &ir.PathRewrite{ReplaceFullPath: pick(s, genPaths...)}
	}
	v := pick(s, genPaths...)
	return &ir.PathRewrite{ReplacePrefixMatch: &v}
}

func genHeaderModifier(s *byteSource) *ir.HeaderModifier {
	hm := &ir.HeaderModifier{}
	for range s.intn(3) {
		hm.Set = append(hm.Set, ir.Header{Name: pick(s, genHeaders...), Value: pick(s, genValues...)})
	}
	for range s.intn(2) {
		hm.Add = append(hm.Add, ir.Header{Name: pick(s, genHeaders...), Value: pick(s, genValues...)})
	}
	for range s.intn(2) {
		hm.Remove = append(hm.Remove, pick(s, genHeaders...))
	}
	return hm
}

func genPolicy(s *byteSource) *ir.AccessPolicy {
	ap := &ir.AccessPolicy{
		Source: ir.ObjectRef{Kind: "AccessPolicy", Namespace: "ns0", Name: pick(s, "a", "b")},
		Action: pick(s, ir.AccessAllow, ir.AccessDeny, ""),
	}
	for range s.intn(3) {
		var r ir.AccessRule
		for range s.intn(3) {
			r.Principals = append(r.Principals, pick(s, ir.Principal{Exact: "spiffe://cluster.local/ns/ns0/sa/a"}, ir.Principal{Prefix: "spiffe://cluster.local/ns/ns1/"}, ir.Principal{}))
		}
		for range s.intn(2) {
			r.Ports = append(r.Ports, uint32(pick(s, genPorts...)))
		}
		for range s.intn(2) {
			r.Methods = append(r.Methods, pick(s, genMethods...))
		}
		for range s.intn(2) {
			r.Paths = append(r.Paths, pick(s, ir.PathPattern{Exact: "/x"}, ir.PathPattern{Prefix: "/api/"}, ir.PathPattern{}))
		}
		ap.Rules = append(ap.Rules, r)
	}
	return ap
}
