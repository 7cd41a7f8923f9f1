package server

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Envoy proxies are configured from layers: named sets of resources that
// many proxies share. A proxy's configuration is the union of its layers
// (for example its namespace's outbound view, the mesh's endpoints and its
// own inbound side), so the server keeps each shared resource once rather
// than once per proxy, and a change to one resource of a shared layer costs
// each proxy one small delta, not a comparison of everything it holds.
//
// Every change of a layer's resources of one type makes a revision. A
// revision is immutable; the layer keeps a short log of the names each
// revision changed, so a stream that holds revision n learns what to send
// from the log instead of comparing whole sets. A stream too far behind the
// log compares the revision it holds with the current one.

// layerTypes are the resource types served from layers, in the order a
// push sends them: clusters before the endpoints they use and listeners
// before the routes they name, so a proxy never waits for a reference.
var layerTypes = [...]string{
	resourcev3.ClusterType,
	resourcev3.EndpointType,
	resourcev3.ListenerType,
	resourcev3.RouteType,
	resourcev3.SecretType,
}

const numLayerTypes = len(layerTypes)

// allTypes has the bit of every layer type set (see Publish).
const allTypes = uint8(1<<numLayerTypes - 1)

// logLen is how many revisions of a layer's type a stream may lag behind
// and still catch up from the log.
const logLen = 32

func layerTypeIndex(typeURL string) int {
	for i, t := range layerTypes {
		if t == typeURL {
			return i
		}
	}
	return -1
}

// entry is one resource as served: its digest version and its wire form,
// marshalled once and shared by every stream.
type entry struct {
	version string
	res     types.Resource
	wire    *discoverygrpc.Resource
}

// revision is an immutable set of resources of one type: its names,
// versions and wire forms never change. Publish may swap its messages for
// new ones with the same bytes (under the write lock), so that the next
// rebuild, which hands over those same messages, marshals nothing.
type revision struct {
	n     uint64
	items map[string]*entry
}

// change records the names revision n added, changed or removed.
type change struct {
	n     uint64
	names []string
}

type layerType struct {
	cur *revision
	log []change
}

// since returns the names changed after revision n, or false when the log
// no longer reaches back to n.
func (lt *layerType) since(n uint64) ([]change, bool) {
	for i, c := range lt.log {
		if c.n == n {
			return lt.log[i+1:], true
		}
	}
	return nil, false
}

// layer is one named set of resources of every type.
type layer struct {
	key   string
	types [numLayerTypes]layerType
}

// LayerResources are a layer's resources by type URL.
type LayerResources map[string][]types.Resource

// layers is the layered configuration of every Envoy node.
type layers struct {
	// publishMu serialises Publish; mu guards the maps below and the
	// revisions of every layer.
	publishMu sync.Mutex
	mu        sync.RWMutex
	next      uint64
	byKey     map[string]*layer
	nodes     map[string][]*layer
	streams   map[string]map[*deltaStream]struct{}
	// proxyless are the nodes served state of the world (proxyless gRPC
	// clients); sotw holds their open watches and subscriptions, guarded
	// by sotw.mu (taken under mu, never the other way round).
	proxyless map[string]bool
	sotw      sotwWatches
}

func newLayers() *layers {
	return &layers{
		byKey: map[string]*layer{}, nodes: map[string][]*layer{}, streams: map[string]map[*deltaStream]struct{}{},
		proxyless: map[string]bool{}, sotw: sotwWatches{watches: map[string]map[*sotwWatch]struct{}{}, subs: map[string]*[numLayerTypes]*sotwSub{}},
	}
}

// Publish replaces the layered configuration: the content of every layer,
// and for every node the keys of its layers. Nodes in proxyless are
// proxyless gRPC clients, served state of the world by name (see
// CreateWatch); the others are Envoy proxies, served delta. Layers and
// nodes left out are forgotten; a proxy still connected for a forgotten
// node keeps what it has. A resource whose message is the one published
// before is not marshalled again; one whose bytes did not change keeps its
// version, so only real changes are pushed. Publish returns the nodes
// whose configuration changed, sorted.
func (s *Server) Publish(content map[string]LayerResources, nodes map[string][]string, proxyless map[string]bool) ([]string, error) {
	l := s.layers
	l.publishMu.Lock()
	defer l.publishMu.Unlock()

	// Build the new revisions without holding mu: only Publish writes them.
	l.mu.RLock()
	old, oldNodes := l.byKey, l.nodes
	next := l.next
	l.mu.RUnlock()
	type update struct {
		lt  *layerType
		rev *revision
		chg []string
		// keep replaces the messages of rev, the current revision, by
		// messages with the same bytes: its content does not change.
		keep map[string]*entry
	}
	var updates []update
	byKey := make(map[string]*layer, len(content))
	// changed are the types each layer changed, a bit per type index.
	changed := map[*layer]uint8{}
	// grew are the layers that gained a resource name: only they can make
	// two layers of a node share one.
	grew := map[*layer]bool{}
	for key, res := range content {
		ly := old[key]
		if ly == nil {
			ly = &layer{key: key}
			changed[ly], grew[ly] = allTypes, true
		}
		byKey[key] = ly
		for typ := range res {
			if layerTypeIndex(typ) < 0 {
				return nil, fmt.Errorf("layer %s: type %s is not served", key, typ)
			}
		}
		for i, typ := range layerTypes {
			lt := &ly.types[i]
			items, names, added, err := diffRevision(lt.cur, res[typ])
			if err != nil {
				return nil, fmt.Errorf("layer %s: %w", key, err)
			}
			if lt.cur != nil && len(names) == 0 {
				if items != nil {
					// New messages with the same bytes: the revision
					// keeps its number and what streams hold, and takes
					// the new messages, so that the next rebuild, which
					// hands over the same ones again, marshals nothing.
					updates = append(updates, update{lt: lt, rev: lt.cur, keep: items})
				}
				continue
			}
			next++
			updates = append(updates, update{lt: lt, rev: &revision{n: next, items: items}, chg: names})
			changed[ly] |= 1 << i
			if added {
				grew[ly] = true
			}
		}
	}
	revs := make(map[*layerType]*revision, len(updates))
	for _, u := range updates {
		revs[u.lt] = u.rev
	}
	items := func(ly *layer, ti int) map[string]*entry {
		lt := &ly.types[ti]
		if r := revs[lt]; r != nil {
			return r.items
		}
		if lt.cur != nil {
			return lt.cur.items
		}
		return nil
	}
	newNodes := make(map[string][]*layer, len(nodes))
	checked := map[[2]*layer]bool{}
	for node, keys := range nodes {
		comp := make([]*layer, 0, len(keys))
		for _, k := range keys {
			ly := byKey[k]
			if ly == nil {
				return nil, fmt.Errorf("node %s: layer %q is not published", node, k)
			}
			comp = append(comp, ly)
		}
		// A resource name means one resource: no two layers of a node
		// may both have it. Each pair of layers is checked once, and a
		// node whose layers are the ones it had, none with a new name,
		// was checked before.
		if prev, had := oldNodes[node]; had && slices.Equal(prev, comp) && !slices.ContainsFunc(comp, func(ly *layer) bool { return grew[ly] }) {
			newNodes[node] = prev
			continue
		}
		for i, a := range comp {
			for _, b := range comp[i+1:] {
				if a == b {
					return nil, fmt.Errorf("node %s: layer %q is named twice", node, a.key)
				}
				if checked[[2]*layer{a, b}] {
					continue
				}
				checked[[2]*layer{a, b}] = true
				for ti, typ := range layerTypes {
					x, y := items(a, ti), items(b, ti)
					if len(x) > len(y) {
						x, y = y, x
					}
					for name := range x {
						if _, dup := y[name]; dup {
							return nil, fmt.Errorf("node %s: %s %q is in both layer %q and layer %q", node, typ, name, a.key, b.key)
						}
					}
				}
			}
		}
		newNodes[node] = comp
	}

	// Endpoint changes are told apart per stream: a proxy subscribes to
	// the endpoints of its own clusters by name, and one that wants none
	// of the changed names is not woken (see skipEndpoints).
	epChanged := map[*layer]epChange{}
	for _, ly := range byKey {
		lt := &ly.types[edsIndex]
		if changed[ly]&(1<<edsIndex) == 0 || lt.cur == nil {
			continue
		}
		for _, u := range updates {
			if u.lt == lt && u.keep == nil {
				epChanged[ly] = epChange{from: lt.cur, names: u.chg}
			}
		}
	}

	l.mu.Lock()
	for _, u := range updates {
		if u.keep != nil {
			u.rev.items = u.keep
			continue
		}
		u.lt.cur = u.rev
		if len(u.lt.log) == logLen {
			u.lt.log = slices.Delete(u.lt.log, 0, 1)
		}
		u.lt.log = append(u.lt.log, change{n: u.rev.n, names: u.chg})
	}
	l.next = next
	var out []string
	var wake []*deltaStream
	var fire []*sotwWatch
	l.sotw.mu.Lock()
	for node, comp := range newNodes {
		prev, had := l.nodes[node]
		mask := allTypes
		if had && slices.Equal(prev, comp) && l.proxyless[node] == proxyless[node] {
			mask = 0
			for _, ly := range comp {
				mask |= changed[ly]
			}
			if mask == 0 {
				continue
			}
			if mask == 1<<edsIndex && !proxyless[node] && len(l.streams[node]) > 0 {
				// Only endpoints changed: wake the streams that want
				// one of them, and count the node as changed only if
				// one does.
				woke := false
				for st := range l.streams[node] {
					if !st.skipEndpoints(comp, epChanged) {
						wake = append(wake, st)
						woke = true
					}
				}
				if woke {
					out = append(out, node)
				}
				continue
			}
		}
		out = append(out, node)
		for st := range l.streams[node] {
			wake = append(wake, st)
		}
		for w := range l.sotw.watches[node] {
			// A watch of a type no layer of the node changed has
			// nothing new to answer.
			if mask&(1<<w.ti) != 0 {
				fire = append(fire, w)
			}
		}
	}
	l.sotw.mu.Unlock()
	l.byKey, l.nodes = byKey, newNodes
	l.proxyless = make(map[string]bool, len(proxyless))
	for node, p := range proxyless {
		if _, ok := newNodes[node]; ok && p {
			l.proxyless[node] = true
		}
	}
	l.mu.Unlock()
	for _, st := range wake {
		st.poke()
	}
	for _, w := range fire {
		w.fire()
	}
	slices.Sort(out)
	return out, nil
}

// edsIndex is the index of endpoints in layerTypes.
var edsIndex = layerTypeIndex(resourcev3.EndpointType)

// maxSkipNames bounds the endpoint names skipEndpoints compares with a
// stream's subscription; a larger change wakes every stream.
const maxSkipNames = 256

// epChange is a layer's endpoint change in one Publish: the revision it
// replaced and the names it added, changed or removed.
type epChange struct {
	from  *revision
	names []string
}

// skipEndpoints moves the stream's endpoint subscription to the current
// revision of the layers in changed without sending anything, when it was
// sent the revision each replaced and subscribes to none of the changed
// names by name, and reports whether it did. The caller holds layers.mu
// for writing, with the new revisions in place.
func (st *deltaStream) skipEndpoints(comp []*layer, changed map[*layer]epChange) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	sub := st.subs[edsIndex]
	if sub == nil {
		return true
	}
	if sub.wildcard || !sub.synced || len(sub.fresh) > 0 || sub.inflight != "" || sub.nacked || !slices.Equal(sub.knownLayers, comp) {
		return false
	}
	n := 0
	for i, ly := range comp {
		c, ok := changed[ly]
		if !ok {
			if sub.knownRevs[i] != ly.types[edsIndex].cur {
				return false
			}
			continue
		}
		if sub.knownRevs[i] != c.from {
			return false
		}
		n += len(c.names)
		if n > maxSkipNames {
			return false
		}
		for _, name := range c.names {
			if _, ok := sub.names[name]; ok {
				return false
			}
		}
	}
	for i, ly := range comp {
		sub.knownRevs[i] = ly.types[edsIndex].cur
	}
	return true
}

// diffRevision indexes a layer type's new resources against its current
// revision and lists the names that were added, changed or removed; added
// says whether any name is new. items is nil when res holds the very
// messages of the current revision.
func diffRevision(cur *revision, res []types.Resource) (items map[string]*entry, names []string, added bool, err error) {
	if cur != nil && len(cur.items) == len(res) && !slices.ContainsFunc(res, func(r types.Resource) bool {
		e := cur.items[cachev3.GetResourceName(r)]
		return e == nil || e.res != r
	}) {
		// The very same messages: nothing to index or marshal.
		return nil, nil, false, nil
	}
	items = make(map[string]*entry, len(res))
	for _, r := range res {
		name := cachev3.GetResourceName(r)
		if name == "" {
			return nil, nil, false, fmt.Errorf("a %T has no name", r)
		}
		if _, dup := items[name]; dup {
			return nil, nil, false, fmt.Errorf("resource %q appears twice", name)
		}
		var prev *entry
		if cur != nil {
			prev = cur.items[name]
		}
		if prev == nil {
			added = true
		}
		if prev != nil && prev.res == r {
			items[name] = prev
			continue
		}
		e, err := newEntry(name, r)
		if err != nil {
			return nil, nil, false, err
		}
		if prev != nil && prev.version == e.version {
			// Same bytes in a new message: keep what streams hold.
			e.wire = prev.wire
		} else {
			names = append(names, name)
		}
		items[name] = e
	}
	if cur != nil {
		for name := range cur.items {
			if _, ok := items[name]; !ok {
				names = append(names, name)
			}
		}
	}
	return items, names, added, nil
}

var deterministic = proto.MarshalOptions{Deterministic: true}

func newEntry(name string, r types.Resource) (*entry, error) {
	b, err := deterministic.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("marshalling %q: %w", name, err)
	}
	d := fnv.New64a()
	_, _ = d.Write(b)
	v := strconv.FormatUint(d.Sum64(), 36)
	return &entry{version: v, res: r, wire: &discoverygrpc.Resource{
		Name: name, Version: v,
		Resource: &anypb.Any{TypeUrl: "type.googleapis.com/" + string(r.ProtoReflect().Descriptor().FullName()), Value: b},
	}}, nil
}

// lookup finds a resource in a node's layers.
func lookup(comp []*layer, ti int, name string) *entry {
	for _, ly := range comp {
		if cur := ly.types[ti].cur; cur != nil {
			if e := cur.items[name]; e != nil {
				return e
			}
		}
	}
	return nil
}

// compositionVersion names what a node's layers hold of one type.
func compositionVersion(comp []*layer, ti int) string {
	var b strings.Builder
	for i, ly := range comp {
		if i > 0 {
			b.WriteByte('.')
		}
		if cur := ly.types[ti].cur; cur != nil {
			b.WriteString(strconv.FormatUint(cur.n, 36))
		}
	}
	return b.String()
}

// LayeredConfig returns the resources a node's layers hold, by type URL.
func (s *Server) LayeredConfig(node string) (map[string][]types.Resource, bool) {
	l := s.layers
	l.mu.RLock()
	defer l.mu.RUnlock()
	comp, ok := l.nodes[node]
	if !ok {
		return nil, false
	}
	out := map[string][]types.Resource{}
	for ti, typ := range layerTypes {
		for _, ly := range comp {
			if cur := ly.types[ti].cur; cur != nil {
				for _, e := range cur.items {
					out[typ] = append(out[typ], e.res)
				}
			}
		}
	}
	return out, true
}

// Proxyless says whether a node is published as a proxyless gRPC client.
func (s *Server) Proxyless(node string) bool {
	s.layers.mu.RLock()
	defer s.layers.mu.RUnlock()
	return s.layers.proxyless[node]
}
