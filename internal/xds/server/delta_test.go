package server_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/weft-mesh/weft/internal/xds/server"
	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

// startServer runs an insecure xDS server on loopback that lets every node
// in except those named "intruder.*".
func startServer(t testing.TB) (*server.Server, *grpc.ClientConn) {
	t.Helper()
	return startServerWith(t, server.Options{})
}

func startServerWith(t testing.TB, opts server.Options) (*server.Server, *grpc.ClientConn) {
	t.Helper()
	opts.Address, opts.Insecure = "127.0.0.1:0", true
	opts.Authorizer = server.AuthorizerFunc(func(node string, _ server.Peer) error {
		if pod, _, _ := server.NodeIDParts(node); pod == "intruder" {
			return errors.New("not this one")
		}
		return nil
	})
	s, err := server.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Start(ctx); err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return s, conn
}

// serve starts a server with newMesh(n) published.
func serve(t *testing.T, n int) (*server.Server, *grpc.ClientConn, *mesh) {
	t.Helper()
	s, conn := startServer(t)
	m := newMesh(n)
	m.publish(t, s)
	return s, conn, m
}

// dial opens an Envoy-like delta stream for node.
func dial(t *testing.T, conn *grpc.ClientConn, node string, subs map[string][]string) *xdstest.Client {
	t.Helper()
	c, err := xdstest.DialDelta(t.Context(), conn, node, subs)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func cluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}}
}

func cla(name string) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{ClusterName: name}
}

// route is a route configuration whose content is told apart by weight.
func route(name string, weight uint32) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
		Name: name, Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
				WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
					{Name: "a", Weight: wrapperspb.UInt32(weight)}, {Name: "b", Weight: wrapperspb.UInt32(100 - weight)},
				}},
			}}},
		}},
	}}}
}

// mesh is a view layer with routes r0..rN-1, an endpoints layer and two
// own layers; node a.ns uses group/a and node b.ns group/b.
type mesh struct {
	routes  []types.Resource
	content map[string]server.LayerResources
	nodes   map[string][]string
}

func newMesh(n int) *mesh {
	m := &mesh{}
	for i := range n {
		m.routes = append(m.routes, route(fmt.Sprintf("r%d", i), 50))
	}
	m.content = map[string]server.LayerResources{
		"view/":     {xdstest.RouteType: m.routes, xdstest.ClusterType: {cluster("c1"), cluster("c2")}},
		"endpoints": {xdstest.EndpointType: {cla("c1"), cla("c2")}},
		"group/a":   {xdstest.ClusterType: {cluster("inbound-a")}},
		"group/b":   {xdstest.ClusterType: {cluster("inbound-b")}},
	}
	m.nodes = map[string][]string{"a.ns": {"view/", "endpoints", "group/a"}, "b.ns": {"view/", "endpoints", "group/b"}}
	return m
}

// setRoute replaces route i with a new message of the given weight.
func (m *mesh) setRoute(i int, weight uint32) {
	m.routes = slices.Clone(m.routes)
	m.routes[i] = route(fmt.Sprintf("r%d", i), weight)
	m.content["view/"][xdstest.RouteType] = m.routes
}

func (m *mesh) publish(t *testing.T, s *server.Server) []string {
	t.Helper()
	changed, err := s.Publish(m.content, m.nodes, nil)
	if err != nil {
		t.Fatal(err)
	}
	return changed
}

var allTypes = map[string][]string{xdstest.ClusterType: nil, xdstest.EndpointType: nil, xdstest.ListenerType: nil, xdstest.RouteType: nil, xdstest.SecretType: nil}

func waitFor(t *testing.T, c *xdstest.Client, what string, cond func(*xdstest.Client) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := c.WaitFor(ctx, cond); err != nil {
		t.Fatalf("%s: %v (clusters %v, routes %v)", what, err, c.Names(xdstest.ClusterType), c.Names(xdstest.RouteType))
	}
}

// eventually polls the server for cond: acknowledgements change the
// server's state without a response the client could wait for.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return cond(), nil
	})
	if err != nil {
		t.Fatalf("%s: timed out", what)
	}
}

func sorted(names []string) []string { slices.Sort(names); return names }

func weightOf(c *xdstest.Client, name string) uint32 {
	rc, _ := c.Resource(xdstest.RouteType, name).(*routev3.RouteConfiguration)
	return rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetWeightedClusters().GetClusters()[0].GetWeight().GetValue()
}

func TestDeltaServesEachNodeItsLayers(t *testing.T) {
	s, conn, _ := serve(t, 3)
	a := dial(t, conn, "a.ns", allTypes)
	b := dial(t, conn, "b.ns", allTypes)
	waitFor(t, a, "a's clusters", func(c *xdstest.Client) bool { return len(c.Names(xdstest.ClusterType)) == 3 })
	waitFor(t, b, "b's clusters", func(c *xdstest.Client) bool { return len(c.Names(xdstest.ClusterType)) == 3 })
	if got := sorted(a.Names(xdstest.ClusterType)); !slices.Equal(got, []string{"c1", "c2", "inbound-a"}) {
		t.Errorf("a has clusters %v", got)
	}
	if got := sorted(b.Names(xdstest.ClusterType)); !slices.Equal(got, []string{"c1", "c2", "inbound-b"}) {
		t.Errorf("b has clusters %v", got)
	}
	waitFor(t, a, "a's routes", func(c *xdstest.Client) bool { return len(c.Names(xdstest.RouteType)) == 3 })
	eventually(t, "a up to date", func() bool { return s.UpToDate("a.ns") })
	if s.UpToDate("c.ns") {
		t.Error("a node without a stream is up to date")
	}
	cfg, ok := s.Config("a.ns")
	if !ok || len(cfg[xdstest.ClusterType]) != 3 || len(cfg[xdstest.RouteType]) != 3 {
		t.Errorf("Config(a.ns) = %v, %v", cfg, ok)
	}
}

func TestDeltaPushesOnlyWhatChanged(t *testing.T) {
	s, conn, m := serve(t, 50)
	a := rawStream(t, conn, "a.ns")
	first := a.recvAll(t, 3)
	if n := len(first[xdstest.RouteType].GetResources()); n != 50 {
		t.Fatalf("first route response has %d routes, want 50", n)
	}
	a.ackAll(t, first)

	// The same content in new messages is no change.
	m.routes = slices.Clone(m.routes)
	for i := range m.routes {
		m.routes[i] = route(fmt.Sprintf("r%d", i), 50)
	}
	m.content["view/"][xdstest.RouteType] = m.routes
	if changed := m.publish(t, s); len(changed) != 0 {
		t.Errorf("equal content reported as a change for %v", changed)
	}
	m.setRoute(7, 90)
	if changed := m.publish(t, s); !slices.Equal(changed, []string{"a.ns", "b.ns"}) {
		t.Errorf("changed nodes = %v, want both", changed)
	}
	resp := a.recv(t)
	if resp.GetTypeUrl() != xdstest.RouteType || len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != "r7" {
		t.Fatalf("after one route change got %s with %v", resp.GetTypeUrl(), names(resp))
	}
	a.ack(t, resp, nil)
	a.expectNothing(t)
}

func TestDeltaRemovalsAndMoves(t *testing.T) {
	s, conn, m := serve(t, 2)
	a := dial(t, conn, "a.ns", allTypes)
	waitFor(t, a, "initial", func(c *xdstest.Client) bool { return len(c.Names(xdstest.RouteType)) == 2 })

	// A route goes away.
	m.routes = m.routes[:1]
	m.content["view/"][xdstest.RouteType] = m.routes
	m.publish(t, s)
	waitFor(t, a, "r1 removed", func(c *xdstest.Client) bool { return slices.Equal(c.Names(xdstest.RouteType), []string{"r0"}) })

	// The node moves to group b: inbound-a goes, inbound-b comes.
	m.nodes["a.ns"] = []string{"view/", "endpoints", "group/b"}
	m.publish(t, s)
	waitFor(t, a, "moved to group b", func(c *xdstest.Client) bool {
		return slices.Equal(sorted(c.Names(xdstest.ClusterType)), []string{"c1", "c2", "inbound-b"})
	})

	// A node whose pod is gone keeps what it has.
	delete(m.nodes, "a.ns")
	m.publish(t, s)
	time.Sleep(200 * time.Millisecond)
	if got := len(a.Names(xdstest.ClusterType)); got != 3 || a.Err() != nil {
		t.Errorf("a forgotten node's proxy has %d clusters, err %v", got, a.Err())
	}
}

func TestDeltaNackIsNotResent(t *testing.T) {
	s, conn, m := serve(t, 2)
	a := dial(t, conn, "a.ns", allTypes)
	eventually(t, "up to date", func() bool { return s.UpToDate("a.ns") })

	a.RejectNext(xdstest.RouteType, "r0: bad weights")
	before := a.Responses(xdstest.RouteType)
	m.setRoute(0, 10)
	m.publish(t, s)
	eventually(t, "NACK recorded", func() bool { return s.Nacks()["a.ns"].Message == "r0: bad weights" })
	// The NACK names exactly the resources of the rejected response (only
	// r0 changed), not whatever its message happens to mention.
	if got := s.Nacks()["a.ns"].Resources; !slices.Equal(got, []string{"r0"}) {
		t.Errorf("the NACK names resources %v, want [r0]", got)
	}
	time.Sleep(300 * time.Millisecond)
	if n := a.Responses(xdstest.RouteType) - before; n != 1 {
		t.Errorf("%d route responses after the change, want the one rejected", n)
	}
	if s.UpToDate("a.ns") {
		t.Error("a node that rejected its configuration is up to date")
	}
	m.setRoute(0, 20)
	m.publish(t, s)
	waitFor(t, a, "next change applied", func(c *xdstest.Client) bool { return weightOf(c, "r0") == 20 })
	eventually(t, "up to date again", func() bool { return s.UpToDate("a.ns") })
	if _, ok := s.Nacks()["a.ns"]; ok {
		t.Error("the NACK is still recorded after an accepted version")
	}
}

func TestDeltaReconnectSendsOnlyWhatDiffers(t *testing.T) {
	s, conn, m := serve(t, 3)
	a := rawStream(t, conn, "a.ns")
	first := a.recvAll(t, 3)
	a.ackAll(t, first)
	versions := map[string]string{}
	for _, r := range first[xdstest.RouteType].GetResources() {
		versions[r.GetName()] = r.GetVersion()
	}
	a.close()

	// While the proxy is away r1 changes; it also claims a route that no
	// longer exists.
	m.setRoute(1, 70)
	m.publish(t, s)
	versions["gone"] = "v1"
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "a.ns"}, TypeUrl: xdstest.RouteType, InitialResourceVersions: versions}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := names(resp); !slices.Equal(got, []string{"r1"}) || !slices.Equal(resp.GetRemovedResources(), []string{"gone"}) {
		t.Errorf("reconnect got %v removed %v, want r1 and gone", got, resp.GetRemovedResources())
	}
}

func TestDeltaCatchesUpBeyondTheLog(t *testing.T) {
	s, conn, m := serve(t, 5)
	a := rawStream(t, conn, "a.ns")
	first := a.recvAll(t, 3)
	a.ackAll(t, first)

	// One change goes out and is left unacknowledged; meanwhile far more
	// revisions pass than the log keeps, and a route goes away.
	m.setRoute(0, 1)
	m.publish(t, s)
	pending := a.recv(t)
	for w := range uint32(40) {
		m.setRoute(2, w)
		m.publish(t, s)
	}
	m.routes = m.routes[:4]
	m.content["view/"][xdstest.RouteType] = m.routes
	m.publish(t, s)
	a.ack(t, pending, nil)
	resp := a.recv(t)
	if got := names(resp); !slices.Equal(got, []string{"r2"}) || !slices.Equal(resp.GetRemovedResources(), []string{"r4"}) {
		t.Errorf("catching up sent %v removed %v, want r2 and r4", got, resp.GetRemovedResources())
	}
	a.ack(t, resp, nil)
	a.expectNothing(t)
}

func TestDeltaNamedSubscriptions(t *testing.T) {
	s, conn, m := serve(t, 3)
	a := dial(t, conn, "a.ns", map[string][]string{xdstest.RouteType: {"r1", "missing"}})
	waitFor(t, a, "r1", func(c *xdstest.Client) bool { return len(c.Names(xdstest.RouteType)) == 1 })
	if got := a.Names(xdstest.RouteType); !slices.Equal(got, []string{"r1"}) {
		t.Fatalf("named subscription got %v", got)
	}
	before := a.Responses(xdstest.RouteType)
	m.setRoute(2, 5)
	m.publish(t, s)
	eventually(t, "up to date without a push", func() bool { return s.UpToDate("a.ns") })
	if n := a.Responses(xdstest.RouteType); n != before {
		t.Errorf("a change to an unsubscribed route was pushed (%d responses)", n-before)
	}
	m.setRoute(1, 5)
	m.publish(t, s)
	waitFor(t, a, "r1 changed", func(c *xdstest.Client) bool { return weightOf(c, "r1") == 5 })
}

func TestDeltaRefusals(t *testing.T) {
	s, conn, m := serve(t, 1)
	ctx := t.Context()

	t.Run("unauthorized node", func(t *testing.T) {
		c, err := xdstest.DialDelta(ctx, conn, "intruder.ns", allTypes)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, c, "refusal", func(c *xdstest.Client) bool { return c.Err() != nil })
		if code := status.Code(errors.Unwrap(c.Err())); code != codes.PermissionDenied && status.Code(c.Err()) != codes.PermissionDenied {
			t.Errorf("err = %v, want PermissionDenied", c.Err())
		}
	})
	t.Run("Envoy over state of the world", func(t *testing.T) {
		c, err := xdstest.Dial(ctx, conn, "a.ns", map[string][]string{xdstest.ClusterType: nil})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, c, "refusal", func(c *xdstest.Client) bool { return c.Err() != nil })
		if c.Responses(xdstest.ClusterType) != 0 {
			t.Error("an Envoy node got configuration over state of the world")
		}
	})
	t.Run("proxyless gRPC over delta", func(t *testing.T) {
		st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "g.ns", UserAgentName: "gRPC Go"}, TypeUrl: xdstest.ListenerType}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("err = %v, want FailedPrecondition", err)
		}
	})
	t.Run("a layer that does not exist", func(t *testing.T) {
		if _, err := s.Publish(m.content, map[string][]string{"a.ns": {"view/", "nope"}}, nil); err == nil {
			t.Error("Publish accepted a node with an unknown layer")
		}
		if _, err := s.Publish(map[string]server.LayerResources{"x": {xdstest.RouteType: {route("r", 1), route("r", 2)}}}, nil, nil); err == nil {
			t.Error("Publish accepted a layer with a name twice")
		}
		both := map[string]server.LayerResources{"x": {xdstest.RouteType: {route("r", 1)}}, "y": {xdstest.RouteType: {route("r", 2)}}}
		if _, err := s.Publish(both, map[string][]string{"a.ns": {"x", "y"}}, nil); err == nil {
			t.Error("Publish accepted a node whose layers both have a resource")
		}
		// What failed changed nothing: a.ns still has its configuration.
		if cfg, ok := s.Config("a.ns"); !ok || len(cfg[xdstest.RouteType]) != 1 || cachev3.GetResourceName(cfg[xdstest.RouteType][0]) != "r0" {
			t.Errorf("after refused publishes a.ns has %v", cfg)
		}
	})
	t.Run("a layer of a published node gains a name another has", func(t *testing.T) {
		// a.ns keeps its layers; group/a now also holds view/'s c1.
		grown := maps.Clone(m.content)
		grown["group/a"] = server.LayerResources{xdstest.ClusterType: {cluster("inbound-a"), cluster("c1")}}
		if _, err := s.Publish(grown, m.nodes, nil); err == nil {
			t.Error("Publish accepted a node whose layers both have cluster c1")
		}
		if _, err := s.Publish(m.content, m.nodes, nil); err != nil {
			t.Errorf("the mesh as it was: %v", err)
		}
	})
}

// TestDeltaLargePushesWaitForSlots checks that whole-mesh responses of
// proxies connecting at once do not all wait in memory together: with one
// slot, a second proxy gets its large route response only when the first
// has acknowledged its own, or gone.
// wideRoutes publishes a view of 60 route configurations with hosts
// domains each (about hosts × 2.3 KB in all), on a server with one
// large-push slot.
func wideRoutes(t *testing.T, hosts int) (*server.Server, *grpc.ClientConn, *mesh, []string) {
	t.Helper()
	s, conn := startServerWith(t, server.Options{LargePushes: 1})
	m := newMesh(0)
	var domains []string
	for i := range hosts {
		domains = append(domains, fmt.Sprintf("host-%04d.example.internal", i))
	}
	for i := range 60 {
		rc := route(fmt.Sprintf("r%d", i), 50)
		rc.VirtualHosts[0].Domains = domains
		m.routes = append(m.routes, rc)
	}
	m.content["view/"][xdstest.RouteType] = m.routes
	m.publish(t, s)
	return s, conn, m, domains
}

// waitsForSlot checks that b, which asked for the 60 wide routes while a
// holds the only slot with its unacknowledged routes, gets its two other
// types and then nothing until a acknowledges, and then its routes (which
// it acknowledges). It returns b's other responses.
func waitsForSlot(t *testing.T, a, b *raw, aRoutes *discoverygrpc.DeltaDiscoveryResponse) map[string]*discoverygrpc.DeltaDiscoveryResponse {
	t.Helper()
	got := b.recvAll(t, 2)
	if _, ok := got[xdstest.RouteType]; ok {
		t.Fatal("b got its routes while a held the only slot")
	}
	b.expectNothing(t)
	a.ack(t, aRoutes, nil)
	resp := b.recv(t)
	if resp.GetTypeUrl() != xdstest.RouteType || len(resp.GetResources()) != 60 {
		t.Fatalf("after a's ACK b got %s with %d resources", resp.GetTypeUrl(), len(resp.GetResources()))
	}
	b.ack(t, resp, nil)
	return got
}

func TestDeltaLargePushesWaitForSlots(t *testing.T) {
	_, conn, _, _ := wideRoutes(t, 1000)

	a := rawStream(t, conn, "a.ns")
	first := a.recvAll(t, 3)
	if n := len(first[xdstest.RouteType].GetResources()); n != 60 {
		t.Fatalf("a got %d routes, want 60", n)
	}
	b := rawStream(t, conn, "b.ns")
	waitsForSlot(t, a, b, first[xdstest.RouteType])

	// A proxy that leaves without acknowledging gives its slot back.
	c := rawStream(t, conn, "a.ns")
	c.recvAll(t, 3)
	d := rawStream(t, conn, "b.ns")
	d.recvAll(t, 2)
	d.expectNothing(t)
	c.close()
	if resp := d.recv(t); resp.GetTypeUrl() != xdstest.RouteType {
		t.Fatalf("after c left d got %s", resp.GetTypeUrl())
	}
}

// raw is a delta stream the test drives by hand.
type raw struct {
	st     discoverygrpc.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	cancel context.CancelFunc
	resps  chan *discoverygrpc.DeltaDiscoveryResponse
}

func rawStream(t *testing.T, conn *grpc.ClientConn, node string) *raw {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := true
	for _, typ := range []string{xdstest.ClusterType, xdstest.EndpointType, xdstest.RouteType} {
		req := &discoverygrpc.DeltaDiscoveryRequest{TypeUrl: typ}
		if first {
			req.Node, first = &corev3.Node{Id: node}, false
		}
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	r := &raw{st: st, cancel: cancel, resps: make(chan *discoverygrpc.DeltaDiscoveryResponse, 64)}
	go func() {
		for {
			resp, err := st.Recv()
			if err != nil {
				close(r.resps)
				return
			}
			r.resps <- resp
		}
	}()
	return r
}

func (r *raw) close() { r.cancel() }

func (r *raw) recv(t *testing.T) *discoverygrpc.DeltaDiscoveryResponse {
	t.Helper()
	select {
	case resp, ok := <-r.resps:
		if !ok {
			t.Fatal("stream closed")
		}
		return resp
	case <-time.After(10 * time.Second):
		t.Fatal("no response")
	}
	return nil
}

// recvAll receives n responses, by type.
func (r *raw) recvAll(t *testing.T, n int) map[string]*discoverygrpc.DeltaDiscoveryResponse {
	t.Helper()
	out := map[string]*discoverygrpc.DeltaDiscoveryResponse{}
	for range n {
		resp := r.recv(t)
		out[resp.GetTypeUrl()] = resp
	}
	return out
}

func (r *raw) ack(t *testing.T, resp *discoverygrpc.DeltaDiscoveryResponse, nack *statuspb.Status) {
	t.Helper()
	if err := r.st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce(), ErrorDetail: nack}); err != nil {
		t.Fatal(err)
	}
}

func (r *raw) ackAll(t *testing.T, resps map[string]*discoverygrpc.DeltaDiscoveryResponse) {
	t.Helper()
	for _, resp := range resps {
		r.ack(t, resp, nil)
	}
}

func (r *raw) expectNothing(t *testing.T) {
	t.Helper()
	select {
	case resp := <-r.resps:
		t.Errorf("unexpected %s response with %v removed %v", resp.GetTypeUrl(), names(resp), resp.GetRemovedResources())
	case <-time.After(300 * time.Millisecond):
	}
}

func names(resp *discoverygrpc.DeltaDiscoveryResponse) []string {
	var out []string
	for _, r := range resp.GetResources() {
		out = append(out, r.GetName())
	}
	return sorted(out)
}

// TestDeltaEndpointChangeReachesOnlyItsSubscribers: Envoy subscribes to
// the endpoints of its clusters by name. A change to one cluster's
// endpoints is pushed to the proxies subscribed to it, as that one
// assignment; the others are not woken, are not counted as changed, and
// stay up to date.
func TestDeltaEndpointChangeReachesOnlyItsSubscribers(t *testing.T) {
	s, conn, m := serve(t, 1)
	a := dial(t, conn, "a.ns", map[string][]string{xdstest.EndpointType: {"c1"}})
	b := dial(t, conn, "b.ns", map[string][]string{xdstest.EndpointType: {"c2"}})
	waitFor(t, a, "a's endpoints", func(c *xdstest.Client) bool { return len(c.Names(xdstest.EndpointType)) == 1 })
	waitFor(t, b, "b's endpoints", func(c *xdstest.Client) bool { return len(c.Names(xdstest.EndpointType)) == 1 })
	eventually(t, "both up to date", func() bool { return s.UpToDate("a.ns") && s.UpToDate("b.ns") })
	aBefore, bBefore := a.Responses(xdstest.EndpointType), b.Responses(xdstest.EndpointType)

	withEndpoint := func(name, addr string) *endpointv3.ClusterLoadAssignment {
		c := cla(name)
		c.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8080}}}},
		}}}}}}
		return c
	}
	m.content["endpoints"] = server.LayerResources{xdstest.EndpointType: {withEndpoint("c1", "10.0.0.1"), cla("c2")}}
	if changed := m.publish(t, s); !slices.Equal(changed, []string{"a.ns"}) {
		t.Errorf("changed nodes %v, want only a.ns", changed)
	}
	waitFor(t, a, "a's new endpoints", func(c *xdstest.Client) bool { return a.Responses(xdstest.EndpointType) > aBefore })
	eventually(t, "a up to date", func() bool { return s.UpToDate("a.ns") })
	if !s.UpToDate("b.ns") {
		t.Error("b is not up to date after a change it does not subscribe to")
	}
	if n := b.Responses(xdstest.EndpointType); n != bBefore {
		t.Errorf("b was sent %d endpoint responses for c1", n-bBefore)
	}

	// b's turn, after several changes it skipped.
	for i := range 3 {
		m.content["endpoints"] = server.LayerResources{xdstest.EndpointType: {withEndpoint("c1", fmt.Sprintf("10.0.0.%d", 2+i)), cla("c2")}}
		m.publish(t, s)
	}
	m.content["endpoints"] = server.LayerResources{xdstest.EndpointType: {withEndpoint("c1", "10.0.0.9"), withEndpoint("c2", "10.0.1.1")}}
	if changed := m.publish(t, s); !slices.Equal(changed, []string{"a.ns", "b.ns"}) {
		t.Errorf("changed nodes %v, want both", changed)
	}
	waitFor(t, b, "b's new endpoints", func(c *xdstest.Client) bool { return b.Responses(xdstest.EndpointType) > bBefore })
	if got := b.Names(xdstest.EndpointType); !slices.Equal(got, []string{"c2"}) {
		t.Errorf("b holds endpoints %v, want only c2", got)
	}
	eventually(t, "both up to date", func() bool { return s.UpToDate("a.ns") && s.UpToDate("b.ns") })
}

// TestDeltaFirstResponsesWaitForSlots: a proxy's first configuration comes
// as one response per type, each under a megabyte; those over 64 KiB
// take a slot too, so proxies connecting together do not all hold theirs
// in gRPC's buffers at once. Later pushes of the same size need none.
func TestDeltaFirstResponsesWaitForSlots(t *testing.T) {
	s, conn, m, domains := wideRoutes(t, 100)
	a := rawStream(t, conn, "a.ns")
	first := a.recvAll(t, 3)
	size := 0
	for _, r := range first[xdstest.RouteType].GetResources() {
		size += len(r.GetResource().GetValue())
	}
	if size < 64<<10 || size > 1<<20 {
		t.Fatalf("a's first routes are %d bytes; the test needs 64 KiB to 1 MiB", size)
	}
	b := rawStream(t, conn, "b.ns")
	got := waitsForSlot(t, a, b, first[xdstest.RouteType])
	a.ackAll(t, map[string]*discoverygrpc.DeltaDiscoveryResponse{xdstest.ClusterType: first[xdstest.ClusterType], xdstest.EndpointType: first[xdstest.EndpointType]})
	b.ackAll(t, got)

	// Every route changes: a push of the same size to both, neither
	// waiting for the other.
	for i := range m.routes {
		rc := route(fmt.Sprintf("r%d", i), 7)
		rc.VirtualHosts[0].Domains = domains
		m.routes[i] = rc
	}
	m.content["view/"][xdstest.RouteType] = slices.Clone(m.routes)
	m.publish(t, s)
	for _, st := range []*raw{a, b} {
		if resp := st.recv(t); resp.GetTypeUrl() != xdstest.RouteType || len(resp.GetResources()) != 60 {
			t.Fatalf("push got %s with %d resources", resp.GetTypeUrl(), len(resp.GetResources()))
		}
	}
}
