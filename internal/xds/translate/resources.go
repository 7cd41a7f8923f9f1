package translate

import (
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weft-mesh/weft/internal/ir"
)

// Resources are Envoy resources by xDS type, each list sorted by name.
type Resources struct {
	Listeners []types.Resource
	Routes    []types.Resource
	Clusters  []types.Resource
	Endpoints []types.Resource
	Secrets   []types.Resource
}

// ByType returns the lists keyed by type URL, the shape
// go-control-plane's cache.NewSnapshot takes. Empty lists are left out.
func (r *Resources) ByType() map[resourcev3.Type][]types.Resource {
	out := make(map[resourcev3.Type][]types.Resource, 5)
	add := func(t resourcev3.Type, rs []types.Resource) {
		if len(rs) > 0 {
			out[t] = rs
		}
	}
	add(resourcev3.ListenerType, r.Listeners)
	add(resourcev3.RouteType, r.Routes)
	add(resourcev3.ClusterType, r.Clusters)
	add(resourcev3.EndpointType, r.Endpoints)
	add(resourcev3.SecretType, r.Secrets)
	return out
}

// Count is the number of resources of every type.
func (r *Resources) Count() int {
	return len(r.Listeners) + len(r.Routes) + len(r.Clusters) + len(r.Endpoints) + len(r.Secrets)
}

// Config is one proxy group's configuration in two layers, so that a server
// configuring many groups can share the large part instead of copying it
// per group. No resource name appears in both layers.
type Config struct {
	// Shared is the same *Resources, and holds the same messages, for every
	// group that sees the mesh the same way: the same consumer routes
	// (those of its namespace, if any) and the same reachable Services
	// (see scope.go). It holds the outbound route configurations and
	// clusters (Envoy), or the mesh-wide API listeners and clusters
	// (proxyless gRPC). It must not be modified.
	Shared *Resources
	// Own holds what belongs to this group (its listeners, inbound
	// clusters and secrets) or, for proxyless gRPC, to its namespace.
	Own *Resources
	// View names the Shared layer for a server that keeps layers across
	// rebuilds: the namespace whose consumer routes it holds (empty for
	// none), followed, when the group may reach only part of the mesh, by
	// "~" and a digest of the ports it reaches beyond what every group
	// reaches.
	View string
}

// Resources merges both layers into one set of sorted lists. It allocates
// in proportion to the whole mesh; servers that keep per-group snapshots
// may prefer to share Shared themselves.
func (c *Config) Resources() *Resources {
	return &Resources{
		Listeners: mergeSorted(c.Shared.Listeners, c.Own.Listeners),
		Routes:    mergeSorted(c.Shared.Routes, c.Own.Routes),
		Clusters:  mergeSorted(c.Shared.Clusters, c.Own.Clusters),
		Endpoints: mergeSorted(c.Shared.Endpoints, c.Own.Endpoints),
		Secrets:   mergeSorted(c.Shared.Secrets, c.Own.Secrets),
	}
}

// Problem is something in the model that the translator could not express
// and left out or replaced. Ingest is meant to reject such input first, so
// a Problem usually points at a gap there; Source names the object a user
// would fix.
type Problem struct {
	Source ir.ObjectRef `json:"source"`
	// Reason is CamelCase, for a condition.
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// Problem reasons.
const (
	ReasonUnknownBackend       = "UnknownBackend"
	ReasonInvalidValue         = "InvalidValue"
	ReasonInvalidRegex         = "InvalidRegex"
	ReasonDuplicateDestination = "DuplicateDestination"
	ReasonUnsupportedHeader    = "UnsupportedHeader"
)
