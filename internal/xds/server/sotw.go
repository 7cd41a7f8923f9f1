package server

import (
	"context"
	"errors"
	"strconv"
	"sync"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Proxyless gRPC clients speak state of the world and ask for resources by
// name: a channel dialling xds:///shop-api:8080 subscribes to that one
// listener, then to the clusters and endpoints it routes to. They are
// served from the same layers as Envoy proxies. go-control-plane runs the
// protocol (nonces, ACKs, the ordering of one stream) and asks for a watch
// per request; a watch answers from the node's layers with the subscribed
// resources that exist, once their versions differ from what the client
// acknowledged. A change of a resource the client did not ask for does not
// push it anything.

// sotwSub is what a node subscribes to of one type.
type sotwSub struct {
	names    map[string]struct{}
	wildcard bool
	// revs and version cache the answer's version for the revisions of
	// the node's layers it was worked out from (guarded by sotwWatches.mu).
	revs    [maxLayersPerNode]*revision
	version string
}

// maxLayersPerNode bounds the layers whose revisions a cached version
// remembers; a node with more is not cached.
const maxLayersPerNode = 4

// cachedVersion is the version of the answer to sub, worked out again only
// when a layer of the node has a new revision of the type.
func (sub *sotwSub) cachedVersion(comp []*layer, ti int) string {
	if len(comp) > maxLayersPerNode {
		v, _ := sotwResponse(comp, ti, sub, false)
		return v
	}
	var revs [maxLayersPerNode]*revision
	for i, ly := range comp {
		revs[i] = ly.types[ti].cur
	}
	if sub.version == "" || revs != sub.revs {
		sub.version, _ = sotwResponse(comp, ti, sub, false)
		sub.revs = revs
	}
	return sub.version
}

func (sub *sotwSub) none() bool { return !sub.wildcard && len(sub.names) == 0 }

// sotwWatches are the open watches of every proxyless node, and each node's
// current subscription per type (for UpToDate).
type sotwWatches struct {
	mu      sync.Mutex
	watches map[string]map[*sotwWatch]struct{}
	subs    map[string]*[numLayerTypes]*sotwSub
}

// sotwWatch is one open request of a stream: it answers at most once.
type sotwWatch struct {
	l     *layers
	node  string
	ti    int
	req   *cachev3.Request
	sub   sotwSub
	known string
	out   chan cachev3.Response
	// done is closed when the watch is cancelled.
	done chan struct{}
	once sync.Once
}

// sotwResponse is the answer to sub from a node's layers: its version
// digests the subscribed names and the versions of those that exist, so it
// changes exactly when the answer does. Callers hold l.mu.
func sotwResponse(comp []*layer, ti int, sub *sotwSub, collect bool) (string, []*entry) {
	var found []*entry
	var sum uint64
	digest := func(name, version string) {
		// FNV-1a of name, a zero byte and version, without allocating:
		// this runs for every subscription at every status check.
		const offset, prime = 14695981039346656037, 1099511628211
		h := uint64(offset)
		for i := range len(name) {
			h = (h ^ uint64(name[i])) * prime
		}
		h *= prime
		for i := range len(version) {
			h = (h ^ uint64(version[i])) * prime
		}
		// A sum does not depend on the order of the names.
		sum += h
	}
	if sub.wildcard {
		for _, ly := range comp {
			if cur := ly.types[ti].cur; cur != nil {
				for name, e := range cur.items {
					digest(name, e.version)
					if collect {
						found = append(found, e)
					}
				}
			}
		}
	} else {
		for name := range sub.names {
			e := lookup(comp, ti, name)
			if e == nil {
				digest(name, "")
				continue
			}
			digest(name, e.version)
			if collect {
				found = append(found, e)
			}
		}
	}
	return "s" + strconv.FormatUint(sum, 36), found
}

func newSotwResponse(req *cachev3.Request, version string, found []*entry) cachev3.Response {
	out := &discoverygrpc.DiscoveryResponse{VersionInfo: version, TypeUrl: req.GetTypeUrl()}
	returned := make(map[string]string, len(found))
	for _, e := range found {
		out.Resources = append(out.Resources, e.wire.GetResource())
		returned[e.wire.GetName()] = version
	}
	return &cachev3.PassthroughResponse{Request: req, DiscoveryResponse: out, ReturnedResources: returned}
}

// answer works out the watch's response, or nil while the client holds
// the current version. The caller holds l.mu.
func (w *sotwWatch) answer() cachev3.Response {
	l := w.l
	comp, ok := l.nodes[w.node]
	if !ok || !l.proxyless[w.node] {
		// Not published (yet), or published as an Envoy proxy, which is
		// served delta: wait.
		return nil
	}
	if w.sub.none() {
		// A client that stops using the last resource of a type asks for
		// no names: it wants nothing, and an empty answer would only be
		// one more response to acknowledge.
		return nil
	}
	version, found := sotwResponse(comp, w.ti, &w.sub, true)
	if version == w.known {
		return nil
	}
	return newSotwResponse(w.req, version, found)
}

// fire answers the watch if the node's configuration now differs from
// what the client holds. A watch answers once; go-control-plane opens the
// next one with the client's next request.
func (w *sotwWatch) fire() {
	l := w.l
	l.mu.RLock()
	l.sotw.mu.Lock()
	if _, open := l.sotw.watches[w.node][w]; !open {
		l.sotw.mu.Unlock()
		l.mu.RUnlock()
		return
	}
	resp := w.answer()
	if resp != nil {
		l.sotw.remove(w)
	}
	l.sotw.mu.Unlock()
	l.mu.RUnlock()
	if resp != nil {
		w.send(resp)
	}
}

// send hands the answer to the stream. The stream's channel has room for
// a response of every type and a type has one open watch at a time, so
// this does not wait; should the channel ever be full, a goroutine waits
// for room or for the watch to be cancelled (the stream took a newer
// request of the type, or ended), so that neither Publish nor the
// stream's own goroutine, which drains the channel, can block on it.
func (w *sotwWatch) send(resp cachev3.Response) {
	select {
	case w.out <- resp:
	default:
		go func() {
			select {
			case w.out <- resp:
			case <-w.done:
			}
		}()
	}
}

// cancel is what go-control-plane calls when it replaces or drops the
// watch.
func (w *sotwWatch) cancel() {
	w.once.Do(func() { close(w.done) })
	w.l.sotw.mu.Lock()
	w.l.sotw.remove(w)
	w.l.sotw.mu.Unlock()
}

func (sw *sotwWatches) remove(w *sotwWatch) {
	if m := sw.watches[w.node]; m != nil {
		delete(m, w)
		if len(m) == 0 {
			delete(sw.watches, w.node)
		}
	}
}

// forget drops a node's subscriptions once its last stream has closed.
func (l *layers) forgetSotw(node string) {
	l.sotw.mu.Lock()
	delete(l.sotw.subs, node)
	l.sotw.mu.Unlock()
}

// sotwUpToDate says whether a proxyless node acknowledged the current
// answer to each of its subscriptions. The caller holds l.mu.
func (s *Server) sotwUpToDate(node string, comp []*layer) bool {
	l := s.layers
	l.sotw.mu.Lock()
	subs := l.sotw.subs[node]
	var want [numLayerTypes]string
	subscribed := false
	if subs != nil {
		for ti, sub := range subs {
			if sub != nil {
				want[ti] = sub.cachedVersion(comp, ti)
				subscribed = true
			}
		}
	}
	l.sotw.mu.Unlock()
	if !subscribed {
		return false
	}
	s.tracker.mu.Lock()
	defer s.tracker.mu.Unlock()
	n := s.tracker.nodes[node]
	if n == nil {
		return false
	}
	for ti, v := range want {
		if v != "" && n.Acked[layerTypes[ti]] != v {
			return false
		}
	}
	return true
}

// dispatchCache serves the state-of-the-world watches of proxyless gRPC
// clients from their layers, and stops a NACK from bouncing: a NACK
// carries the last good version, so answering every request whose version
// differs from the current one would send the rejected version back at
// once, forever. After a NACK of the current version, the watch waits for
// the next change instead. Envoy proxies are served delta ADS, not here.
type dispatchCache struct{ s *Server }

func (c *dispatchCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	node := req.GetNode().GetId()
	l := c.s.layers
	l.mu.RLock()
	if _, published := l.nodes[node]; published && !l.proxyless[node] {
		l.mu.RUnlock()
		return nil, status.Error(codes.FailedPrecondition, "xds: Envoy proxies are served over delta ADS (the injected bootstrap uses it); state of the world is for proxyless gRPC clients")
	}
	ti := layerTypeIndex(req.GetTypeUrl())
	if ti < 0 {
		// Nothing of this type is served; the client's wait for it times
		// out, as with any type a server does not know.
		l.mu.RUnlock()
		return func() {}, nil
	}
	w := &sotwWatch{l: l, node: node, ti: ti, req: req, known: req.GetVersionInfo(), out: out, done: make(chan struct{})}
	w.sub.wildcard = sub.IsWildcard()
	w.sub.names = make(map[string]struct{}, len(sub.SubscribedResources()))
	for name := range sub.SubscribedResources() {
		w.sub.names[name] = struct{}{}
	}
	if req.GetErrorDetail() != nil {
		if comp, ok := l.nodes[node]; ok {
			current, _ := sotwResponse(comp, ti, &w.sub, false)
			if rejected, ok := c.rejectedVersion(req); ok && rejected == current {
				w.known = current
			}
		}
	}
	l.sotw.mu.Lock()
	subs := l.sotw.subs[node]
	if subs == nil {
		subs = &[numLayerTypes]*sotwSub{}
		l.sotw.subs[node] = subs
	}
	subs[ti] = &w.sub
	if w.sub.none() {
		subs[ti] = nil
	}
	resp := w.answer()
	if resp == nil {
		m := l.sotw.watches[node]
		if m == nil {
			m = map[*sotwWatch]struct{}{}
			l.sotw.watches[node] = m
		}
		m[w] = struct{}{}
	}
	l.sotw.mu.Unlock()
	l.mu.RUnlock()
	if resp != nil {
		w.send(resp)
	}
	return w.cancel, nil
}

func (c *dispatchCache) CreateDeltaWatch(*cachev3.DeltaRequest, cachev3.Subscription, chan cachev3.DeltaResponse) (func(), error) {
	return nil, status.Error(codes.Unimplemented, "xds: delta is served on the aggregated (ADS) stream only")
}

func (c *dispatchCache) Fetch(context.Context, *cachev3.Request) (cachev3.Response, error) {
	return nil, errors.New("xds: fetch is not served")
}

// rejectedVersion is the version of the response the NACK answers; the
// callbacks saw the request first and recorded it.
func (c *dispatchCache) rejectedVersion(req *cachev3.Request) (string, bool) {
	t := c.s.tracker
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.nodes[req.GetNode().GetId()]
	if n == nil || n.Nack == nil || n.Nack.TypeURL != req.GetTypeUrl() {
		return "", false
	}
	return n.Nack.Version, true
}
