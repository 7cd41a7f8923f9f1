package server

import (
	"fmt"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
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
