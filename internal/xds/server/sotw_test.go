package server_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/weft-mesh/weft/internal/xds/server"
	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

// serveProxyless publishes newMesh(n) with g.ns as a proxyless gRPC client
// on group/a's layers, beside the Envoy nodes.
func serveProxyless(t *testing.T, n int) (*server.Server, *xdstest.Client, *mesh, func()) {
	t.Helper()
	s, conn := startServer(t)
	m := newMesh(n)
	m.nodes["g.ns"] = m.nodes["a.ns"]
	publish := func() {
		t.Helper()
		if _, err := s.Publish(m.content, m.nodes, map[string]bool{"g.ns": true}); err != nil {
			t.Fatal(err)
		}
	}
	publish()
	c, err := xdstest.Dial(t.Context(), conn, "g.ns", map[string][]string{
		xdstest.RouteType: {"r0"}, xdstest.ClusterType: {"c1", "missing"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, c, m, publish
}

// A proxyless client gets exactly the resources it names, from the same
// layers as the Envoy proxies, and a change to a resource it did not name
// pushes it nothing.
func TestSotwServesProxylessClientsByName(t *testing.T) {
	s, c, m, publish := serveProxyless(t, 3)
	waitFor(t, c, "the subscribed route and cluster", func(c *xdstest.Client) bool {
		return c.Resource(xdstest.RouteType, "r0") != nil && c.Resource(xdstest.ClusterType, "c1") != nil
	})
	if got := c.Names(xdstest.RouteType); !slices.Equal(got, []string{"r0"}) {
		t.Errorf("routes %v, want only the subscribed r0", got)
	}
	if got := c.Names(xdstest.ClusterType); !slices.Equal(got, []string{"c1"}) {
		t.Errorf("clusters %v, want only c1 (missing does not exist, c2 and inbound-a were not asked for)", got)
	}
	eventually(t, "up to date", func() bool { return s.UpToDate("g.ns") })

	routes := c.Responses(xdstest.RouteType)
	m.setRoute(1, 10)
	publish()
	m.setRoute(0, 30)
	publish()
	waitFor(t, c, "the new weight of r0", func(c *xdstest.Client) bool { return weightOf(c, "r0") == 30 })
	if n := c.Responses(xdstest.RouteType) - routes; n != 1 {
		t.Errorf("%d route responses for a change of r1 (not subscribed) and one of r0, want 1", n)
	}
	eventually(t, "up to date after the change", func() bool { return s.UpToDate("g.ns") })
	if cfg, ok := s.Config("g.ns"); !ok || len(cfg[xdstest.RouteType]) != 3 {
		t.Errorf("Config(g.ns) = %v, want the layers' three routes", cfg)
	}
}

// A NACK of the current answer is not answered with the same resources
// again; the next change is sent, and clears it.
func TestSotwNackIsNotResent(t *testing.T) {
	s, c, m, publish := serveProxyless(t, 1)
	eventually(t, "up to date", func() bool { return s.UpToDate("g.ns") })
	c.RejectNext(xdstest.RouteType, "r0: bad weights")
	before := c.Responses(xdstest.RouteType)
	m.setRoute(0, 10)
	publish()
	eventually(t, "NACK recorded", func() bool { return s.Nacks()["g.ns"].Message == "r0: bad weights" })
	if got := s.Nacks()["g.ns"].Resources; !slices.Equal(got, []string{"r0"}) {
		t.Errorf("the NACK names resources %v, want [r0]", got)
	}
	time.Sleep(300 * time.Millisecond)
	if n := c.Responses(xdstest.RouteType) - before; n != 1 {
		t.Errorf("%d route responses after the change, want the one rejected", n)
	}
	if s.UpToDate("g.ns") {
		t.Error("a client that rejected its configuration is up to date")
	}
	m.setRoute(0, 20)
	publish()
	waitFor(t, c, "next change applied", func(c *xdstest.Client) bool { return weightOf(c, "r0") == 20 })
	eventually(t, "up to date again", func() bool { return s.UpToDate("g.ns") })
}

// A resource that cannot be encoded fails the publish, and the proxies
// keep what they have. Its digest used to be that of no bytes, the same
// for every such resource, so a change to it was never pushed.
func TestPublishRefusesAResourceThatCannotBeEncoded(t *testing.T) {
	s, _ := startServer(t)
	m := newMesh(1)
	if _, err := s.Publish(m.content, m.nodes, nil); err != nil {
		t.Fatal(err)
	}
	bad := map[string]server.LayerResources{}
	for k, v := range m.content {
		bad[k] = v
	}
	bad["group/a"] = server.LayerResources{xdstest.ClusterType: {&clusterv3.Cluster{Name: "bad-\xff"}}}
	if _, err := s.Publish(bad, m.nodes, nil); err == nil || !strings.Contains(err.Error(), "bad-") {
		t.Fatalf("publishing a cluster whose name is not UTF-8: err = %v", err)
	}
	if cfg, _ := s.Config("a.ns"); len(cfg[xdstest.ClusterType]) != 3 {
		t.Errorf("a.ns after the refused publish has clusters %v, want its three", cfg[xdstest.ClusterType])
	}
}

// A client that reconnects holding the current version (after its stream
// broke, or the controller restarted) is sent nothing and counts as up to
// date: versions digest what the client holds.
func TestSotwReconnectWithTheCurrentVersion(t *testing.T) {
	s, c, _, _ := serveProxyless(t, 1)
	waitFor(t, c, "r0", func(c *xdstest.Client) bool { return c.Resource(xdstest.RouteType, "r0") != nil })
	eventually(t, "up to date", func() bool { return s.UpToDate("g.ns") })
	held := c.Version(xdstest.RouteType)
	c.Close()
	eventually(t, "disconnected", func() bool { return len(s.ConnectedNodes()) == 0 })

	s2, conn2 := startServer(t)
	m := newMesh(1)
	m.nodes["g.ns"] = m.nodes["a.ns"]
	if _, err := s2.Publish(m.content, m.nodes, map[string]bool{"g.ns": true}); err != nil {
		t.Fatal(err)
	}
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn2).StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: &corev3.Node{Id: "g.ns"}, TypeUrl: xdstest.RouteType, ResourceNames: []string{"r0"}, VersionInfo: held}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a restarted server counts the reconnected client up to date", func() bool { return s2.UpToDate("g.ns") })
	if n := s2.Nodes()["g.ns"].Sent[xdstest.RouteType]; n != "" {
		t.Errorf("the server sent version %s to a client that holds the current one", n)
	}
}
