package translate

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weft-mesh/weft/internal/inject"
	"github.com/weft-mesh/weft/internal/ir"
)

// inboundListener is a group's inbound listener.
func inboundListener(t *testing.T, c *Config) *listenerv3.Listener {
	t.Helper()
	for _, l := range c.Own.Listeners {
		if resourceName(l) == InboundListener {
			return l.(*listenerv3.Listener)
		}
	}
	t.Fatal("no inbound listener")
	return nil
}

// inboundHCM is the HTTP connection manager of a group's inbound port.
func inboundHCM(t *testing.T, c *Config, port int32) *hcmv3.HttpConnectionManager {
	t.Helper()
	for _, fc := range inboundListener(t, c).GetFilterChains() {
		if fc.GetFilterChainMatch().GetDestinationPort().GetValue() != uint32(port) {
			continue
		}
		for _, f := range fc.GetFilters() {
			hcm := &hcmv3.HttpConnectionManager{}
			if f.GetTypedConfig().UnmarshalTo(hcm) == nil {
				return hcm
			}
		}
	}
	t.Fatalf("no inbound HTTP connection manager for port %d", port)
	return nil
}

// inboundRoutes is the route configuration of a group's inbound port, as
// its proxy gets it: over RDS, named by the port's connection manager.
func inboundRoutes(t *testing.T, c *Config, port int32) *routev3.RouteConfiguration {
	t.Helper()
	rds := inboundHCM(t, c, port).GetRds().GetRouteConfigName()
	for _, r := range c.Own.Routes {
		if rds != "" && resourceName(r) == rds {
			return r.(*routev3.RouteConfiguration)
		}
	}
	t.Fatalf("no inbound route configuration for port %d (RDS name %q)", port, rds)
	return nil
}

// statsOf says which destination_service an inbound virtual host's
// statistics carry: Envoy names them vhost.<virtual host>.vcluster.<virtual
// cluster>.<stat>, and the injected bootstrap's tag regex (Envoy cuts the
// first group and takes the second as the value) extracts the Service.
func statsOf(t *testing.T, vh *routev3.VirtualHost) (service string, counted bool) {
	t.Helper()
	re := regexp.MustCompile(inject.DestinationServiceTagRegex)
	if len(vh.GetVirtualClusters()) == 0 {
		// Envoy emits no virtual cluster statistics for the host; its
		// requests still count in the inbound cluster's.
		return "", false
	}
	// Envoy refuses a virtual cluster without headers ("virtual clusters
	// must define 'headers'"); the one header every request has is its
	// method.
	vcs := vh.GetVirtualClusters()
	if len(vcs) != 1 || len(vcs[0].GetHeaders()) != 1 || vcs[0].GetHeaders()[0].GetName() != ":method" || !vcs[0].GetHeaders()[0].GetPresentMatch() || vcs[0].GetHeaders()[0].GetInvertMatch() {
		t.Fatalf("virtual host %s: want one virtual cluster matching every request, have %v", vh.GetName(), vcs)
	}
	// Envoy's default tag extraction reads one dot-free token as the
	// virtual host and the virtual cluster (vhost.$.**, vhost.*.vcluster.$.**).
	if strings.Contains(vh.GetName(), ".") || strings.Contains(vh.GetVirtualClusters()[0].GetName(), ".") {
		t.Fatalf("virtual host %s: names with dots break Envoy's tag extraction", vh.GetName())
	}
	for _, stat := range []string{"upstream_rq_2xx", "upstream_rq_503", "upstream_rq_time"} {
		m := re.FindStringSubmatch("vhost." + vh.GetName() + ".vcluster." + vh.GetVirtualClusters()[0].GetName() + "." + stat)
		if m == nil {
			t.Fatalf("virtual host %s: its %s carries no %s", vh.GetName(), stat, inject.StatsTagDestinationService)
		}
		if m[1] != m[2]+"." {
			t.Fatalf("the tag regex must cut the virtual host's token, as Envoy's envoy_virtual_host does: cuts %q", m[1])
		}
		service = m[2]
	}
	return service, true
}

// TestInboundStatsNameTheAddressedService: a canary's pod serves requests
// addressed to its own Service and to the apex its callers' split goes
// through; each is counted under the Service the caller addressed, and
// anything else (a pod IP) only in the inbound cluster.
func TestInboundStatsNameTheAddressedService(t *testing.T) {
	mesh := &loadCase(t, "testdata/scope-allowed.in.yaml").Mesh
	group := func(key string) *ir.ProxyGroup { return proxyGroup(t, mesh, key) }
	// served maps each Service name an inbound port counts to the hosts
	// it answers for.
	served := func(rc *routev3.RouteConfiguration) map[string][]string {
		out := map[string][]string{}
		catchAll := 0
		last := rc.GetVirtualHosts()[len(rc.GetVirtualHosts())-1]
		for _, vh := range rc.GetVirtualHosts() {
			// Counting changes nothing about where a request goes.
			if len(vh.GetRoutes()) != len(last.GetRoutes()) || !proto.Equal(vh.GetRoutes()[0], last.GetRoutes()[0]) {
				t.Errorf("virtual host %s routes %v, the catch-all %v", vh.GetName(), vh.GetRoutes(), last.GetRoutes())
			}
			svc, counted := statsOf(t, vh)
			if !counted {
				if !slices.Equal(vh.GetDomains(), []string{"*"}) {
					t.Errorf("virtual host %s answers %v without counting its requests", vh.GetName(), vh.GetDomains())
				}
				catchAll++
				continue
			}
			if svc != vh.GetName() {
				t.Errorf("virtual host %s counts as %s", vh.GetName(), svc)
			}
			out[svc] = vh.GetDomains()
		}
		if catchAll != 1 {
			t.Errorf("want one catch-all virtual host, have %d", catchAll)
		}
		return out
	}
	keys := func(m map[string][]string) []string {
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		return ks
	}

	memo := NewMemo()
	p, err := memo.Prepare(mesh, Options{DisableAccessLog: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := memo.ForGroup(p, group("shop/cart-canary/0001"))
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, withEndpoints(c, mesh))
	got := served(inboundRoutes(t, c, 8080))
	if want := []string{"cart", "cart-canary"}; !slices.Equal(keys(got), want) {
		t.Fatalf("cart-canary's pods count requests for %v, want %v (its own Service and the apex of cart's split)", keys(got), want)
	}
	for _, d := range []string{"cart", "cart:80", "cart.shop", "cart.shop.svc", "cart.shop.svc.cluster.local", "cart.shop.svc.cluster.local:80", "10.96.0.20", "10.96.0.20:80"} {
		if !slices.Contains(got["cart"], d) {
			t.Errorf("a request with Host %q is not counted as cart: cart answers %v", d, got["cart"])
		}
	}
	if slices.Contains(got["cart-canary"], "cart") || !slices.Contains(got["cart-canary"], "cart-canary.shop.svc.cluster.local:80") {
		t.Errorf("cart-canary answers %v", got["cart-canary"])
	}

	// cart's own pods are not behind any other Service.
	c, err = memo.ForGroup(p, group("shop/cart/0001"))
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(served(inboundRoutes(t, c, 8080))); !slices.Equal(got, []string{"cart"}) {
		t.Errorf("cart's pods count requests for %v, want [cart]", got)
	}

	// The split ends (the canary is promoted): the same groups, unchanged,
	// now serve cart-canary only, although the group memo has them.
	for _, s := range mesh.Services {
		if s.Name == "cart" {
			s.Ports[0].Routes = []*ir.Route{{Name: "default", Source: s.Source, Backends: []ir.Backend{{Cluster: s.Ports[0].Cluster, Weight: 1, Port: 80, Service: s.Source}}}}
		}
	}
	c, err = memo.ForGroup(p, group("shop/cart-canary/0001"))
	if err != nil {
		t.Fatal(err)
	}
	before := inboundListener(t, c)
	if p, err = memo.Prepare(mesh, Options{DisableAccessLog: true}); err != nil {
		t.Fatal(err)
	}
	if c, err = memo.ForGroup(p, group("shop/cart-canary/0001")); err != nil {
		t.Fatal(err)
	}
	// Only the route configuration changed: a listener change would drain
	// the port's connections.
	if !proto.Equal(before, inboundListener(t, c)) {
		t.Error("the end of the split changed cart-canary's inbound listener")
	}
	fresh, err := Prepare(mesh, Options{DisableAccessLog: true})
	if err != nil {
		t.Fatal(err)
	}
	fc, err := fresh.ForGroup(group("shop/cart-canary/0001"))
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(inboundRoutes(t, fc, 8080), inboundRoutes(t, c, 8080)) {
		t.Error("the memo's inbound routes differ from a fresh translation's")
	}
	if got := keys(served(inboundRoutes(t, c, 8080))); !slices.Equal(got, []string{"cart-canary"}) {
		t.Errorf("after the split ended, cart-canary's pods count requests for %v, want [cart-canary]", got)
	}
}

// TestProxylessServersKeepOneVirtualHost: a gRPC server's inbound listener
// is unchanged by the per-Service hosts (grpc-go has no virtual cluster
// statistics).
func TestProxylessServersKeepOneVirtualHost(t *testing.T) {
	mesh := &loadCase(t, "testdata/scope-allowed.in.yaml").Mesh
	p, err := Prepare(mesh, Options{DisableAccessLog: true})
	if err != nil {
		t.Fatal(err)
	}
	l, err := p.GRPCServerListener(proxyGroup(t, mesh, "shop/cart-canary/0001"), "10.0.0.21", 8080)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range l.GetFilterChains()[0].GetFilters() {
		hcm := &hcmv3.HttpConnectionManager{}
		if f.GetTypedConfig().UnmarshalTo(hcm) != nil {
			continue
		}
		vhs := hcm.GetRouteConfig().GetVirtualHosts()
		if len(vhs) != 1 || !slices.Equal(vhs[0].GetDomains(), []string{"*"}) || len(vhs[0].GetVirtualClusters()) != 0 {
			t.Errorf("gRPC server listener's virtual hosts: %v", vhs)
		}
		return
	}
	t.Fatal("no HTTP connection manager on the gRPC server listener")
}

// TestInboundHostsOfSameNamedServices: two namespaces' headless Services
// of one name on one port (nothing else tells them apart) each get their
// own names, although ports without access policies share what they can.
func TestInboundHostsOfSameNamedServices(t *testing.T) {
	mesh := &loadCase(t, "testdata/scope-allowed.in.yaml").Mesh
	var shopCart *ir.Service
	for _, s := range mesh.Services {
		if s.Name == "cart" {
			shopCart = s
		}
	}
	shopCart.VIPs = nil
	webCart := *shopCart
	webCart.Namespace, webCart.Source.Namespace, webCart.Hostname = "web", "web", "cart.web.svc.cluster.local"
	webCart.Ports = []*ir.Port{{Name: "http", Port: 80, Protocol: ir.ProtocolHTTP, Cluster: "outbound|80||cart.web.svc.cluster.local"}}
	mesh.Services = append(mesh.Services, &webCart)
	shop := proxyGroup(t, mesh, "shop/cart/0001")
	shop.Inbound[0].AccessPolicies = nil
	web := *shop
	web.Key, web.Namespace, web.Members = "web/cart/0001", "web", []string{"cart-1.web"}
	web.Inbound = []*ir.InboundPort{{Port: 8080, Protocol: ir.ProtocolHTTP, Services: []ir.ObjectRef{webCart.Source}}}
	mesh.ProxyGroups = append(mesh.ProxyGroups, &web)
	p, err := Prepare(mesh, Options{DisableAccessLog: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ group, want, not string }{
		{"shop/cart/0001", "cart.shop", "cart.web"},
		{"web/cart/0001", "cart.web", "cart.shop"},
	} {
		cfg, err := p.ForGroup(proxyGroup(t, mesh, c.group))
		if err != nil {
			t.Fatal(err)
		}
		vhs := inboundRoutes(t, cfg, 8080).GetVirtualHosts()
		if len(vhs) != 2 || !slices.Contains(vhs[0].GetDomains(), c.want) || slices.Contains(vhs[0].GetDomains(), c.not) {
			t.Errorf("%s: inbound virtual hosts %v, want cart answering %s", c.group, vhs, c.want)
		}
	}
}

// TestSharedInboundPartsKeepTheirRateLimit: a port with a rate limit and
// no access policies does not lend its filters to another group's port of
// the same number, nor borrow them.
func TestSharedInboundPartsKeepTheirRateLimit(t *testing.T) {
	mesh := &loadCase(t, "testdata/scope-allowed.in.yaml").Mesh
	limited := proxyGroup(t, mesh, "shop/cart/0001")
	limited.Inbound[0].AccessPolicies = nil
	limited.Inbound[0].RateLimit = &ir.RateLimit{
		Source: ir.ObjectRef{Group: "mesh.weft.dev", Kind: "RateLimitPolicy", Namespace: "shop", Name: "cart"},
		Limit:  &ir.TokenBucket{Requests: 10, Interval: ir.Duration(time.Second), Burst: 10},
	}
	var p *Prepared
	limitedFilters := func(key string) bool {
		c, err := p.ForGroup(proxyGroup(t, mesh, key))
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(inboundHCM(t, c, 8080).GetHttpFilters(), func(hf *hcmv3.HttpFilter) bool { return hf.GetName() == localRateLimitFilterName })
	}
	// Either order: whichever is built first must not be shared with the
	// other.
	for _, order := range [][]string{{"shop/catalog/0001", "shop/cart/0001"}, {"shop/cart/0001", "shop/catalog/0001"}} {
		var err error
		p, err = Prepare(mesh, Options{DisableAccessLog: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range order {
			if got, want := limitedFilters(key), key == "shop/cart/0001"; got != want {
				t.Errorf("built in order %v: %s has a local rate limit %v, want %v", order, key, got, want)
			}
		}
	}
}
