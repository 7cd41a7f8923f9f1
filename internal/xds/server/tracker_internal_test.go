package server

import (
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// A state-of-the-world response holds its resources as Any; a NACK of it
// must name them just as a delta NACK does.
func TestResourceNamesOfAStateOfTheWorldResponse(t *testing.T) {
	resp := &discoverygrpc.DiscoveryResponse{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"}
	for _, name := range []string{"outbound|8080||host", "outbound|80||host"} {
		a, err := anypb.New(&clusterv3.Cluster{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		resp.Resources = append(resp.Resources, a)
	}
	if got := resourceNames(resp); !slices.Equal(got, []string{"outbound|8080||host", "outbound|80||host"}) {
		t.Errorf("names = %v", got)
	}
	delta := &discoverygrpc.DeltaDiscoveryResponse{Resources: []*discoverygrpc.Resource{{Name: "b"}, {Name: "a"}}, RemovedResources: []string{"gone"}}
	if got := resourceNames(delta); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("delta names = %v, want the resources sent (not the removed ones)", got)
	}
}
