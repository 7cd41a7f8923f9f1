package translate

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/weft-mesh/weft/internal/ir"
)

// reached translates group key of mesh and returns the Services whose
// outbound clusters it was sent, and whether its outbound listener
// matches each of their addresses.
func reached(t *testing.T, mesh *ir.Mesh, key string) []string {
	t.Helper()
	p, err := Prepare(mesh, Options{DisableAccessLog: true})
	if err != nil {
		t.Fatal(err)
	}
	var g *ir.ProxyGroup
	for _, pg := range mesh.ProxyGroups {
		if pg.Key == key {
			g = pg
		}
	}
	c, err := p.ForGroup(g)
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, withEndpoints(c, mesh))
	var out []string
	for _, cl := range c.Shared.Clusters {
		name := resourceName(cl)
		if host, ok := strings.CutPrefix(name, "outbound|80||"); ok {
			out = append(out, strings.TrimSuffix(host, ".svc.cluster.local"))
		}
	}
	var outbound *listenerv3.Listener
	for _, l := range c.Own.Listeners {
		if resourceName(l) == OutboundListener {
			outbound = l.(*listenerv3.Listener)
		}
	}
	for _, svc := range mesh.Services {
		vip := netip.MustParseAddr(svc.VIPs[0])
		matched := slices.ContainsFunc(outbound.GetFilterChains(), func(fc *listenerv3.FilterChain) bool {
			return slices.ContainsFunc(fc.GetFilterChainMatch().GetPrefixRanges(), func(r *corev3.CidrRange) bool {
				pfx, err := netip.ParsePrefix(r.GetAddressPrefix() + "/" + strconv.Itoa(int(r.GetPrefixLen().GetValue())))
				return err == nil && pfx.Contains(vip)
			})
		})
		sent := slices.Contains(out, svc.Name+"."+svc.Namespace)
		if matched != sent {
			t.Errorf("group %s: %s cluster sent %v, but its address matched by the outbound listener %v", key, svc.Key(), sent, matched)
		}
	}
	return out
}

func TestScopeFollowsAccessPoliciesAndExports(t *testing.T) {
	c := loadCase(t, "testdata/scope-allowed.in.yaml")
	m := &c.Mesh
	// A second port on payments: what a Service's policy allows holds
	// for each of its ports.
	for _, s := range m.Services {
		if s.Name == "payments" {
			s.Ports = append(s.Ports, &ir.Port{Name: "tcp", Port: 9000, Protocol: ir.ProtocolTCP, Cluster: "outbound|9000||payments.shop.svc.cluster.local", Endpoints: []ir.Endpoint{{Address: "10.0.0.23", Port: 9000, Health: ir.HealthHealthy}}})
		}
	}
	for _, tc := range []struct {
		group string
		want  []string
	}{
		// cart lets frontend in, and its split brings cart-canary.
		{"web/frontend/0001", []string{"cart-canary.shop", "cart.shop", "search.web"}},
		{"web/reports/0001", []string{"search.web"}},
		// Namespace shop may reach cart-canary and payments (by prefix)
		// and catalog (exported to shop), not cart.
		{"shop/payments/0001", []string{"cart-canary.shop", "catalog.shop", "payments.shop", "search.web"}},
	} {
		if got := reached(t, m, tc.group); !slices.Equal(got, tc.want) {
			t.Errorf("group %s reaches %v, want %v", tc.group, got, tc.want)
		}
	}

	// cart's policy gains reports: cart, and the canary behind it, reach
	// reports.
	for _, g := range m.ProxyGroups {
		if g.Key == "shop/cart/0001" {
			rule := &g.Inbound[0].AccessPolicies[0].Rules[0]
			rule.Principals = append(rule.Principals, ir.Principal{Exact: "spiffe://cluster.local/ns/web/sa/reports"})
		}
	}
	if got, want := reached(t, m, "web/reports/0001"), []string{"cart-canary.shop", "cart.shop", "search.web"}; !slices.Equal(got, want) {
		t.Errorf("after the policy change reports reaches %v, want %v", got, want)
	}

	// catalog exported nowhere; payments served by no meshed proxy (its
	// policy enforced by nobody) is reachable by all.
	for _, s := range m.Services {
		if s.Name == "catalog" {
			s.ExportTo = []string{ir.ExportNowhere}
		}
	}
	m.ProxyGroups = slices.DeleteFunc(m.ProxyGroups, func(g *ir.ProxyGroup) bool { return g.Key == "shop/payments/0001" })
	m.ProxyGroups = append(m.ProxyGroups, &ir.ProxyGroup{Key: "shop/admin/0001", Namespace: "shop", ServiceAccount: "admin", Identity: "spiffe://cluster.local/ns/shop/sa/admin", MTLS: ir.MTLSStrict})
	if got, want := reached(t, m, "shop/admin/0001"), []string{"cart-canary.shop", "payments.shop", "search.web"}; !slices.Equal(got, want) {
		t.Errorf("admin reaches %v, want %v", got, want)
	}
}

// TestNoScopeWithoutRestrictions: a mesh without Allow policies or
// exports is translated as before scoping: one view, every Service.
func TestNoScopeWithoutRestrictions(t *testing.T) {
	c := loadCase(t, "testdata/basic-http.in.yaml")
	p, err := Prepare(&c.Mesh, c.Options)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range c.Mesh.ProxyGroups {
		cfg, err := p.ForGroup(g)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.View != "" || cfg.Shared != p.base.shared {
			t.Errorf("group %s has view %q, want the mesh-wide one", g.Key, cfg.View)
		}
	}
}
