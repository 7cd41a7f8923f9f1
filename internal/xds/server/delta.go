package server

import (
	"errors"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Delta ADS for Envoy, served from layers (see layers.go). Per stream and
// type the server keeps the subscription and, for each of the node's
// layers, the revision the stream was last sent; at most one response per
// type is unacknowledged. A NACK leaves the rejected revision in place, so
// it is not sent again until the configuration changes.

// deltaStreamIDs count down from -1, apart from go-control-plane's
// state-of-the-world stream IDs, which count up; the tracker holds both.
var deltaStreamIDs atomic.Int64

type deltaStream struct {
	s    *Server
	id   int64
	send func(*discoverygrpc.DeltaDiscoveryResponse) error
	wake chan struct{}
	// slotWake says the stream was woken for a free slot.
	slotWake atomic.Bool
	// closed is set, under layers.mu, when the stream ends, so that a
	// first request handled late does not register it.
	closed bool

	// mu guards what follows; it is taken after layers.mu.
	mu    sync.Mutex
	node  string
	nonce int64
	subs  [numLayerTypes]*deltaSub
}

// deltaSub is a stream's subscription to one type.
type deltaSub struct {
	wildcard bool
	names    map[string]struct{}
	// fresh are names subscribed to since the last response.
	fresh []string
	// initial are the versions the proxy said it holds when it opened the
	// stream, until the first response.
	initial map[string]string
	// knownLayers are the layers the stream was last sent, and knownRevs
	// the revision of each.
	knownLayers []*layer
	knownRevs   []*revision
	// saved is scratch space for push, to restore knownRevs.
	saved    []*revision
	synced   bool
	inflight string
	nacked   bool
	// slot is held while a large response is unacknowledged.
	slot *slotHold
}

func (d *deltaSub) wants(name string) bool {
	if d.wildcard {
		return true
	}
	_, ok := d.names[name]
	return ok
}

func (st *deltaStream) poke() {
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// serveDelta runs one delta ADS stream.
func (s *Server) serveDelta(stream discoverygrpc.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	ctx := stream.Context()
	st := &deltaStream{s: s, id: deltaStreamIDs.Add(-1), send: stream.Send, wake: make(chan struct{}, 1)}
	cb := &callbacks{s: s}
	if err := cb.open(ctx, st.id); err != nil {
		return err
	}
	defer func() {
		s.layers.mu.Lock()
		st.closed = true
		if m := s.layers.streams[st.node]; m != nil {
			delete(m, st)
			if len(m) == 0 {
				delete(s.layers.streams, st.node)
			}
		}
		s.layers.mu.Unlock()
		st.releaseAll()
		cb.closed(st.id)
	}()

	// Requests are handled as they arrive, on their own goroutine; the
	// stream's goroutine below only pushes, when a request or a Publish
	// left something to send.
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err == nil {
				err = st.handle(cb, req)
			}
			if err != nil {
				recvErr <- err
				return
			}
			if st.pending() {
				st.poke()
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return nil
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-st.wake:
		}
		if err := st.push(); err != nil {
			return err
		}
	}
}

// pending says whether a push would send something: some subscription
// awaits no ACK and lacks the current revision of a layer.
func (st *deltaStream) pending() bool {
	l := st.s.layers
	l.mu.RLock()
	defer l.mu.RUnlock()
	st.mu.Lock()
	defer st.mu.Unlock()
	comp, ok := l.nodes[st.node]
	if !ok {
		return false
	}
	for ti, sub := range st.subs {
		if sub != nil && sub.inflight == "" && !sub.current(ti, comp) {
			return true
		}
	}
	return false
}

// handle applies one request: authentication on the first, then ACK or
// NACK and subscription changes.
func (st *deltaStream) handle(cb *callbacks, req *discoverygrpc.DeltaDiscoveryRequest) error {
	typ := req.GetTypeUrl()
	if typ == "" {
		return status.Error(codes.InvalidArgument, "xds: a delta ADS request must carry a type URL")
	}
	var nackErr error
	if req.GetErrorDetail() != nil {
		nackErr = errors.New(req.GetErrorDetail().GetMessage())
	}
	st.mu.Lock()
	node := st.node
	st.mu.Unlock()
	reqNode := req.GetNode()
	if node != "" && reqNode.GetId() == "" {
		reqNode = &corev3.Node{Id: node}
	}
	if err := cb.request(st.id, reqNode, typ, "", req.GetResponseNonce(), nackErr); err != nil {
		return err
	}
	if node == "" {
		if proxyless := st.s.isProxyless(reqNode); proxyless {
			return status.Error(codes.FailedPrecondition, "xds: proxyless gRPC clients are served over state-of-the-world ADS")
		}
		st.s.layers.mu.Lock()
		if st.closed {
			// The stream ended while its first request was handled.
			st.s.layers.mu.Unlock()
			return status.Error(codes.Canceled, "xds: stream closed")
		}
		m := st.s.layers.streams[reqNode.GetId()]
		if m == nil {
			m = map[*deltaStream]struct{}{}
			st.s.layers.streams[reqNode.GetId()] = m
		}
		m[st] = struct{}{}
		st.s.layers.mu.Unlock()
		st.mu.Lock()
		st.node = reqNode.GetId()
		st.mu.Unlock()
	}

	ti := layerTypeIndex(typ)
	if ti < 0 {
		// Nothing of this type is served; the proxy's initial fetch for
		// it times out, as with any type a server does not know.
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	sub := st.subs[ti]
	if sub == nil {
		sub = &deltaSub{names: map[string]struct{}{}, initial: req.GetInitialResourceVersions()}
		// A first request that names nothing is a wildcard subscription
		// (the legacy form Envoy still sends for clusters and listeners).
		sub.wildcard = len(req.GetResourceNamesSubscribe()) == 0
		if sub.initial == nil {
			sub.initial = map[string]string{}
		}
		st.subs[ti] = sub
	}
	if n := req.GetResponseNonce(); n != "" && n == sub.inflight {
		sub.inflight = ""
		sub.nacked = nackErr != nil
		if sub.slot != nil {
			sub.slot.release()
			sub.slot = nil
		}
	}
	for _, name := range req.GetResourceNamesSubscribe() {
		if name == "*" {
			if !sub.wildcard {
				sub.wildcard = true
				// Send everything again rather than work out what the
				// named subscription already brought.
				sub.knownLayers, sub.knownRevs = nil, nil
			}
			continue
		}
		if _, ok := sub.names[name]; !ok {
			sub.names[name] = struct{}{}
			if !sub.wildcard {
				sub.fresh = append(sub.fresh, name)
			}
		}
	}
	for _, name := range req.GetResourceNamesUnsubscribe() {
		if name == "*" {
			sub.wildcard = false
			continue
		}
		delete(sub.names, name)
	}
	return nil
}

// push sends, type by type, what changed for the stream since its last
// response of that type, where no response is awaiting its ACK.
func (st *deltaStream) push() error {
	l := st.s.layers
	l.mu.RLock()
	st.mu.Lock()
	comp, configured := l.nodes[st.node]
	var out []*discoverygrpc.DeltaDiscoveryResponse
	took := false
	if configured {
		for ti := range layerTypes {
			sub := st.subs[ti]
			if sub == nil || sub.inflight != "" || sub.current(ti, comp) {
				continue
			}
			// diff records what it sends; keep what to restore if the
			// response must wait for a slot.
			sub.saved = append(sub.saved[:0], sub.knownRevs...)
			saved := *sub
			resp := st.diff(ti, sub, comp)
			if resp == nil {
				continue
			}
			if size := responseSize(resp); size > largeResponse || (!saved.synced && size > firstResponse) {
				if !st.s.slots.take(st) {
					// Wait for a slot; later types wait too, so that
					// a proxy never gets what the held type names
					// before it.
					revs := sub.knownRevs[:0]
					*sub = saved
					sub.knownRevs = append(revs, saved.saved...)
					break
				}
				sub.slot = st.s.slots.hold()
				took = true
			}
			st.nonce++
			resp.Nonce = strconv.FormatInt(st.nonce, 10)
			sub.inflight = resp.Nonce
			out = append(out, resp)
		}
	}
	st.mu.Unlock()
	l.mu.RUnlock()
	if st.slotWake.Swap(false) && !took {
		// Woken for a slot it no longer needs: wake the next in line.
		st.s.slots.wakeNext()
	}
	cb := callbacks{s: st.s}
	for _, resp := range out {
		cb.response(st.id, resp.GetTypeUrl(), resp.GetSystemVersionInfo(), resp.GetNonce(), resp)
		if err := st.send(resp); err != nil {
			return err
		}
	}
	return nil
}

// responseSize is about the size of a response on the wire: the bytes of
// its resources and names, without walking every message as proto.Size
// does.
func responseSize(resp *discoverygrpc.DeltaDiscoveryResponse) int {
	n := len(resp.GetTypeUrl()) + len(resp.GetSystemVersionInfo())
	for _, r := range resp.GetResources() {
		n += len(r.GetName()) + len(r.GetVersion()) + len(r.GetResource().GetTypeUrl()) + len(r.GetResource().GetValue()) + 16
	}
	for _, name := range resp.GetRemovedResources() {
		n += len(name) + 2
	}
	return n
}

// releaseAll gives back the slots the stream holds; it is closing.
func (st *deltaStream) releaseAll() {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, sub := range st.subs {
		if sub != nil && sub.slot != nil {
			sub.slot.release()
			sub.slot = nil
		}
	}
	st.s.slots.forget(st)
}

// diff computes the response that brings a subscription up to the node's
// layers, and records them as sent; nil when there is nothing to send.
// The caller holds layers.mu (read) and st.mu.
func (st *deltaStream) diff(ti int, sub *deltaSub, comp []*layer) *discoverygrpc.DeltaDiscoveryResponse {
	if sub.current(ti, comp) {
		return nil
	}
	// names are the candidates to send or remove; a name may come twice.
	var names []string
	consider := func(name string) {
		if sub.wants(name) {
			names = append(names, name)
		}
	}
	first := !sub.synced
	if first {
		// First response: compare with what the proxy says it holds.
		for _, ly := range comp {
			if cur := ly.types[ti].cur; cur != nil {
				for name, e := range cur.items {
					if sub.wants(name) && sub.initial[name] != e.version {
						names = append(names, name)
					}
				}
			}
		}
		for name := range sub.initial {
			if lookup(comp, ti, name) == nil {
				names = append(names, name)
			}
		}
		sub.initial = nil
	} else {
		for _, ly := range comp {
			lt := &ly.types[ti]
			cur := lt.cur
			if cur == nil {
				continue
			}
			old, had := sub.knownRev(ly)
			switch {
			case !had || old == nil:
				for name := range cur.items {
					consider(name)
				}
			case old == cur:
			default:
				if changes, ok := lt.since(old.n); ok {
					for _, c := range changes {
						for _, name := range c.names {
							consider(name)
						}
					}
					continue
				}
				for name, e := range cur.items {
					if o := old.items[name]; o == nil || o.version != e.version {
						consider(name)
					}
				}
				for name := range old.items {
					if _, ok := cur.items[name]; !ok {
						consider(name)
					}
				}
			}
		}
		// Layers the node no longer has.
		for i, ly := range sub.knownLayers {
			old := sub.knownRevs[i]
			if old == nil || slices.Contains(comp, ly) {
				continue
			}
			for name := range old.items {
				consider(name)
			}
		}
		for _, name := range sub.fresh {
			if lookup(comp, ti, name) != nil {
				names = append(names, name)
			}
		}
	}
	sub.fresh = nil
	sub.synced = true
	sub.knownLayers = comp
	if cap(sub.knownRevs) < len(comp) {
		sub.knownRevs = make([]*revision, len(comp))
	}
	sub.knownRevs = sub.knownRevs[:len(comp)]
	for i, ly := range comp {
		sub.knownRevs[i] = ly.types[ti].cur
	}
	// The first answer to a wildcard subscription goes out even when
	// empty: the proxy waits for it before it starts serving.
	if len(names) == 0 && (!first || !sub.wildcard) {
		return nil
	}
	slices.Sort(names)
	names = slices.Compact(names)
	resp := &discoverygrpc.DeltaDiscoveryResponse{
		TypeUrl:           layerTypes[ti],
		SystemVersionInfo: compositionVersion(comp, ti),
		Resources:         make([]*discoverygrpc.Resource, 0, len(names)),
	}
	for _, name := range names {
		if e := lookup(comp, ti, name); e != nil {
			resp.Resources = append(resp.Resources, e.wire)
		} else {
			resp.RemovedResources = append(resp.RemovedResources, name)
		}
	}
	return resp
}

// current says whether the subscription was sent the current revision of
// every layer and has nothing new to send.
func (d *deltaSub) current(ti int, comp []*layer) bool {
	if !d.synced || len(d.fresh) > 0 || len(d.knownLayers) != len(comp) {
		return false
	}
	for i, ly := range comp {
		if d.knownLayers[i] != ly || d.knownRevs[i] != ly.types[ti].cur {
			return false
		}
	}
	return true
}

// knownRev is the revision of a layer the subscription was sent.
func (d *deltaSub) knownRev(ly *layer) (*revision, bool) {
	for i, k := range d.knownLayers {
		if k == ly {
			return d.knownRevs[i], true
		}
	}
	return nil, false
}

// upToDate says whether the stream holds, and has acknowledged, the
// current revision of every layer of every type it subscribes to. The
// caller holds layers.mu.
func (st *deltaStream) upToDate(comp []*layer) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	for ti, sub := range st.subs {
		if sub == nil {
			continue
		}
		if sub.inflight != "" || sub.nacked || !sub.current(ti, comp) {
			return false
		}
	}
	return true
}
