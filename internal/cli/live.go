package cli

import (
	"fmt"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/weft-mesh/weft/internal/debugapi"
	"github.com/weft-mesh/weft/internal/xds/translate"
)

// FromProxyConfig reads the live configuration the proxy status API
// returns into the form render prints, so a live proxy and a rendered one
// read the same.
func FromProxyConfig(cfg *debugapi.ProxyConfig) (*Rendered, error) {
	r := &Rendered{Node: cfg.Node, Proxyless: cfg.Kind == debugapi.KindProxyless, Resources: &translate.Resources{}}
	for typ, byName := range cfg.Resources {
		var into *[]types.Resource
		var newMsg func() types.Resource
		switch typ {
		case "Listener":
			into, newMsg = &r.Resources.Listeners, func() types.Resource { return &listenerv3.Listener{} }
		case "RouteConfiguration":
			into, newMsg = &r.Resources.Routes, func() types.Resource { return &routev3.RouteConfiguration{} }
		case "Cluster":
			into, newMsg = &r.Resources.Clusters, func() types.Resource { return &clusterv3.Cluster{} }
		case "ClusterLoadAssignment":
			into, newMsg = &r.Resources.Endpoints, func() types.Resource { return &endpointv3.ClusterLoadAssignment{} }
		case "Secret":
			into, newMsg = &r.Resources.Secrets, func() types.Resource { return &tlsv3.Secret{} }
		default:
			return nil, fmt.Errorf("proxy %s: unknown resource type %s", cfg.Node, typ)
		}
		names := make([]string, 0, len(byName))
		for n := range byName {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			msg := newMsg()
			// The controller may be newer than this plugin: fields it does
			// not know are not a reason to show nothing.
			if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(byName[n], msg); err != nil {
				return nil, fmt.Errorf("proxy %s: %s %s: %w", cfg.Node, typ, n, err)
			}
			*into = append(*into, msg)
		}
	}
	return r, nil
}
