package server

import (
	"fmt"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
)

// responseSize decides which responses need a large-push slot, so it must
// stay close to the real size on the wire.
func TestResponseSizeIsCloseToTheWireSize(t *testing.T) {
	for _, n := range []int{1, 10, 1000} {
		resp := &discoverygrpc.DeltaDiscoveryResponse{TypeUrl: layerTypes[3], SystemVersionInfo: "12.3.abc", RemovedResources: []string{"gone-a", "gone-b"}}
		for i := range n {
			name := fmt.Sprintf("svc-%d.shop.svc.cluster.local:8080", i)
			e, err := newEntry(name, &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{Name: name, Domains: []string{name, "*"}}}})
			if err != nil {
				t.Fatal(err)
			}
			resp.Resources = append(resp.Resources, e.wire)
		}
		got, want := responseSize(resp), proto.Size(resp)
		if got < want*9/10 || got > want*11/10 {
			t.Errorf("%d resources: responseSize = %d, proto.Size = %d", n, got, want)
		}
	}
}

// A rebuild that hands over new messages with the same bytes pushes
// nothing, and the layer takes the new messages: the next rebuild, which
// hands over those same messages again, marshals nothing. Before, the
// layer kept the old messages, so every later rebuild marshalled the new
// ones again (a fifth of the mesh's clusters at each change in the
// proxyless propagation benchmark).
func TestEqualMessagesAreAdoptedWithoutANewRevision(t *testing.T) {
	s := &Server{layers: newLayers()}
	rc := func() *routev3.RouteConfiguration { return &routev3.RouteConfiguration{Name: "r"} }
	first := rc()
	nodes := map[string][]string{"a.ns": {"v"}}
	if _, err := s.Publish(map[string]LayerResources{"v": {layerTypes[3]: {first}}}, nodes, nil); err != nil {
		t.Fatal(err)
	}
	lt := &s.layers.byKey["v"].types[3]
	rev, n := lt.cur, lt.cur.n
	second := rc()
	changed, err := s.Publish(map[string]LayerResources{"v": {layerTypes[3]: {second}}}, nodes, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 0 {
		t.Errorf("equal bytes changed nodes %v", changed)
	}
	if lt.cur != rev || lt.cur.n != n {
		t.Errorf("equal bytes made a new revision (%d, was %d): streams holding it would count as behind", lt.cur.n, n)
	}
	if got := lt.cur.items["r"].res; got != second {
		t.Errorf("the layer kept the old message; the next rebuild would marshal the new one again")
	}
}

// A watch's answer never blocks the caller (Publish, or the stream's own
// goroutine that drains the channel), even with no room in the channel;
// it is delivered once there is room, or dropped when the watch is
// cancelled.
func TestSotwAnswerNeverBlocks(t *testing.T) {
	l := newLayers()
	out := make(chan cachev3.Response) // no room at all
	w := &sotwWatch{l: l, node: "g.ns", out: out, done: make(chan struct{})}
	resp := &cachev3.PassthroughResponse{}
	w.send(resp)
	select {
	case got := <-out:
		if got != resp {
			t.Errorf("delivered %v, want the answer", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the answer was never delivered once there was room")
	}
	w2 := &sotwWatch{l: l, node: "g.ns", out: out, done: make(chan struct{})}
	w2.send(resp)
	w2.cancel()
	w2.cancel() // go-control-plane may cancel more than once
}
