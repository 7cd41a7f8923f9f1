package publish

import (
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/ir"
	"github.com/weft-mesh/weft/internal/xds/server"
	"github.com/weft-mesh/weft/internal/xds/translate"
)

// rdsListener is a listener whose one chain takes its routes from RDS.
func rdsListener(t *testing.T, name, route string) *listenerv3.Listener {
	t.Helper()
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{StatPrefix: name, RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: route}}})
	if err != nil {
		t.Fatal(err)
	}
	return &listenerv3.Listener{Name: name, FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
		Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
	}}}}}
}

func newLayerBuilder() *layerBuilder {
	return &layerBuilder{content: map[string]server.LayerResources{}, eds: map[string]bool{}, viewRoutes: map[string]map[string]bool{}, grpcRoutes: map[*translate.Resources]map[string]bool{}, nextRefs: map[cachetypes.Resource][]string{}}
}

// TestLayersMustBeConsistent checks that a group whose listeners name a
// route configuration its layers lack is refused, as a snapshot that fails
// Consistent would be, and that one with every route is accepted.
func TestLayersMustBeConsistent(t *testing.T) {
	shared := &translate.Resources{Routes: []cachetypes.Resource{&routev3.RouteConfiguration{Name: "svc:80"}}}
	g := &ir.ProxyGroup{Key: "ns/sa/1"}
	good := &translate.Config{Shared: shared, Own: &translate.Resources{Listeners: []cachetypes.Resource{
		rdsListener(t, translate.OutboundListener, "svc:80"), rdsListener(t, translate.InboundListener, "own:80"),
	}, Routes: []cachetypes.Resource{&routev3.RouteConfiguration{Name: "own:80"}}}}
	lb := newLayerBuilder()
	keys, err := lb.add(g, good)
	if err != nil {
		t.Fatalf("a consistent group was refused: %v", err)
	}
	if len(keys) != 3 || len(lb.content[keys[0]][resourcev3.ListenerType]) != 1 || len(lb.content[keys[2]][resourcev3.ListenerType]) != 1 {
		t.Errorf("layers %v: want the outbound listener in the view and the inbound one in the group's own", lb.content)
	}

	bad := &translate.Config{Shared: shared, Own: &translate.Resources{Listeners: []cachetypes.Resource{
		rdsListener(t, translate.OutboundListener, "svc:80"), rdsListener(t, translate.InboundListener, "gone:80"),
	}}}
	if _, err := newLayerBuilder().add(g, bad); err == nil || !strings.Contains(err.Error(), `"gone:80"`) {
		t.Errorf("a listener naming a missing route configuration: err = %v", err)
	}
	badView := &translate.Config{Shared: shared, Own: &translate.Resources{Listeners: []cachetypes.Resource{rdsListener(t, translate.OutboundListener, "other:80")}}}
	if _, err := newLayerBuilder().add(g, badView); err == nil || !strings.Contains(err.Error(), `"other:80"`) {
		t.Errorf("an outbound listener naming a missing route configuration: err = %v", err)
	}
}

// A proxyless configuration goes through the same check: an API listener
// naming a route configuration that is not there would leave the gRPC
// client waiting for it forever.
func TestProxylessConfigurationsMustBeConsistent(t *testing.T) {
	shared := &translate.Resources{
		Listeners: []cachetypes.Resource{rdsListener(t, "checkout.shop:80", "checkout:80")},
		Routes:    []cachetypes.Resource{&routev3.RouteConfiguration{Name: "checkout:80"}},
	}
	lb := newLayerBuilder()
	good := &translate.Config{Shared: shared, Own: &translate.Resources{Listeners: []cachetypes.Resource{rdsListener(t, "checkout", "checkout:80")}}}
	g := &ir.ProxyGroup{Key: "shop/sa/1", Namespace: "shop"}
	if _, err := lb.addGRPC(g, good, nil); err != nil {
		t.Fatalf("a consistent proxyless configuration was refused: %v", err)
	}
	own := &translate.Config{Shared: shared, Own: &translate.Resources{Listeners: []cachetypes.Resource{rdsListener(t, "web", "web:80")}}}
	if _, err := newLayerBuilder().addGRPC(g, own, nil); err == nil || !strings.Contains(err.Error(), `"web:80"`) {
		t.Errorf("a short-name listener naming a missing route configuration: err = %v", err)
	}
	badShared := &translate.Resources{Listeners: []cachetypes.Resource{rdsListener(t, "cart.shop:80", "cart:80")}}
	if _, err := newLayerBuilder().addGRPC(g, &translate.Config{Shared: badShared, Own: &translate.Resources{}}, nil); err == nil || !strings.Contains(err.Error(), `"cart:80"`) {
		t.Errorf("a shared API listener naming a missing route configuration: err = %v", err)
	}
}
