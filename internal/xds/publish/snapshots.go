package publish

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weft-mesh/weft/internal/xds/translate"
)

// assembler turns translated configurations into snapshots. Most of a
// group's configuration is the Shared layer of its namespace's view, the
// same pointers for every group; the assembler digests and indexes each
// shared layer once per rebuild and reuses its maps, so the per-group cost
// follows the group's own resources rather than the size of the mesh.
type assembler struct {
	h         *hasher
	endpoints map[string]cachetypes.Resource
	layers    map[*translate.Resources]*layer
}

// layer is one indexed set of resources.
type layer struct {
	items  [cachetypes.UnknownType]map[string]cachetypes.ResourceWithTTL
	digest [cachetypes.UnknownType]uint64
	vmap   [cachetypes.UnknownType]map[string]string
}

func newAssembler(h *hasher, endpoints map[string]cachetypes.Resource) *assembler {
	return &assembler{h: h, endpoints: endpoints, layers: map[*translate.Resources]*layer{}}
}

var responseTypes = func() [cachetypes.UnknownType]string {
	var out [cachetypes.UnknownType]string
	for rt := cachetypes.ResponseType(0); rt < cachetypes.UnknownType; rt++ {
		out[rt], _ = cachev3.GetResponseTypeURL(rt)
	}
	return out
}()

func (a *assembler) index(res *translate.Resources) (*layer, error) {
	if l, ok := a.layers[res]; ok {
		return l, nil
	}
	l := &layer{}
	byType := res.ByType()
	byType[resourcev3.EndpointType] = append(slices.Clone(byType[resourcev3.EndpointType]), a.edsFor(byType[resourcev3.ClusterType])...)
	for rt := range cachetypes.UnknownType {
		items := byType[responseTypes[rt]]
		l.items[rt] = make(map[string]cachetypes.ResourceWithTTL, len(items))
		l.vmap[rt] = make(map[string]string, len(items))
		d := fnv.New64a()
		sortByName(items)
		for _, it := range items {
			name := cachev3.GetResourceName(it)
			hv, err := a.h.hash(it)
			if err != nil {
				return nil, err
			}
			l.items[rt][name] = cachetypes.ResourceWithTTL{Resource: it}
			l.vmap[rt][name] = strconv.FormatUint(hv, 36)
			_, _ = d.Write([]byte(name))
			_, _ = d.Write([]byte(l.vmap[rt][name]))
		}
		l.digest[rt] = d.Sum64()
	}
	a.layers[res] = l
	return l, nil
}

// edsFor returns the endpoint assignments that EDS clusters name.
func (a *assembler) edsFor(clusters []cachetypes.Resource) []cachetypes.Resource {
	var out []cachetypes.Resource
	for _, c := range clusters {
		cl, ok := c.(*clusterv3.Cluster)
		if !ok || cl.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		name := cl.GetEdsClusterConfig().GetServiceName()
		if name == "" {
			name = cl.GetName()
		}
		if e, ok := a.endpoints[name]; ok {
			out = append(out, e)
		}
	}
	return out
}

// snapshot assembles a group's snapshot from its shared and own layers.
func (a *assembler) snapshot(cfg *translate.Config) (*cachev3.Snapshot, error) {
	shared, err := a.index(cfg.Shared)
	if err != nil {
		return nil, err
	}
	own, err := a.index(cfg.Own)
	if err != nil {
		return nil, err
	}
	snap := &cachev3.Snapshot{VersionMap: make(map[string]map[string]string, cachetypes.UnknownType)}
	for rt := range cachetypes.UnknownType {
		typ := responseTypes[rt]
		var items map[string]cachetypes.ResourceWithTTL
		var vmap map[string]string
		switch {
		case len(own.items[rt]) == 0:
			items, vmap = shared.items[rt], shared.vmap[rt]
		case len(shared.items[rt]) == 0:
			items, vmap = own.items[rt], own.vmap[rt]
		default:
			n := len(shared.items[rt]) + len(own.items[rt])
			items = make(map[string]cachetypes.ResourceWithTTL, n)
			vmap = make(map[string]string, n)
			for k, v := range shared.items[rt] {
				items[k] = v
			}
			for k, v := range shared.vmap[rt] {
				vmap[k] = v
			}
			for k, v := range own.items[rt] {
				if _, dup := items[k]; dup {
					return nil, fmt.Errorf("resource %s %q is both shared and the group's own", typ, k)
				}
				items[k] = v
			}
			for k, v := range own.vmap[rt] {
				vmap[k] = v
			}
		}
		version := "empty"
		if len(items) > 0 {
			version = strconv.FormatUint(shared.digest[rt], 36) + "." + strconv.FormatUint(own.digest[rt], 36)
		}
		snap.Resources[rt] = cachev3.Resources{Version: version, Items: items}
		snap.VersionMap[typ] = vmap
	}
	return snap, nil
}

func sortByName(items []cachetypes.Resource) {
	slices.SortFunc(items, func(x, y cachetypes.Resource) int {
		return strings.Compare(cachev3.GetResourceName(x), cachev3.GetResourceName(y))
	})
}

// hasher digests resources once per rebuild even when many groups share them.
type hasher struct {
	mu   sync.Mutex
	seen map[cachetypes.Resource]uint64
}

func newHasher() *hasher { return &hasher{seen: map[cachetypes.Resource]uint64{}} }

// hash digests a resource's deterministic encoding. A resource that cannot
// be encoded is an error: its digest would otherwise be that of no bytes,
// equal for every such resource, and a change would never be pushed.
func (h *hasher) hash(r cachetypes.Resource) (uint64, error) {
	h.mu.Lock()
	v, ok := h.seen[r]
	h.mu.Unlock()
	if ok {
		return v, nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return 0, fmt.Errorf("encoding %s %q: %w", r.ProtoReflect().Descriptor().FullName(), cachev3.GetResourceName(r), err)
	}
	d := fnv.New64a()
	_, _ = d.Write(b)
	v = d.Sum64()
	h.mu.Lock()
	h.seen[r] = v
	h.mu.Unlock()
	return v, nil
}
