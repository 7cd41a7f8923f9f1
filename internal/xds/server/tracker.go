package server

import (
	"maps"
	"slices"
	"sync"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
)

// Nack is a response a proxy rejected.
type Nack struct {
	TypeURL string
	Version string
	Message string
	// Resources are the names of the resources in the rejected response,
	// sorted: what the proxy refused to take.
	Resources []string
	At        time.Time
}

// NodeStatus is what the server knows about one proxy.
type NodeStatus struct {
	// Streams is the number of open streams for the node.
	Streams int
	// Acked is the last version acknowledged, by type URL.
	Acked map[string]string
	// Sent is the last version sent, by type URL.
	Sent map[string]string
	// Nack is the last rejection, cleared when the type is acknowledged again.
	Nack *Nack
	// Subscribed are the types the node has asked for.
	Subscribed map[string]bool
	// AckedAt is when the node last acknowledged a response.
	AckedAt time.Time
	// ConnectedAt is when the node's current stream (the latest one, when
	// it has several) sent its first request.
	ConnectedAt time.Time
	// Agent is the proxy's user agent and version, as its node says.
	Agent string
	// Identity is the SPIFFE ID the latest stream authenticated with
	// (empty on an insecure server).
	Identity string
}

type streamInfo struct {
	node   string
	peer   Peer
	nonces map[string]sentResponse // by response nonce
}

// sentResponse is a response awaiting its ACK or NACK. The message is kept
// (it is small: its resources are shared) so that a NACK can name exactly
// the resources it rejected; names are read only then.
type sentResponse struct {
	version string
	msg     proto.Message
}

// resourceNames lists the names of the resources in a response: a delta
// response names them; a state-of-the-world one holds them as Any, which
// are decoded for it.
func resourceNames(msg proto.Message) []string {
	var out []string
	switch r := msg.(type) {
	case *discoverygrpc.DeltaDiscoveryResponse:
		for _, res := range r.GetResources() {
			out = append(out, res.GetName())
		}
	case *discoverygrpc.DiscoveryResponse:
		for _, a := range r.GetResources() {
			m, err := a.UnmarshalNew()
			if err != nil {
				continue
			}
			if name := cachev3.GetResourceName(m); name != "" {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// tracker keeps per-stream and per-node state.
type tracker struct {
	mu      sync.Mutex
	streams map[int64]*streamInfo
	nodes   map[string]*NodeStatus
	// changed is closed at the next ACK, NACK or disconnect once armed
	// (handed out by Changed).
	changed chan struct{}
	armed   bool
	now     func() time.Time
}

func newTracker() *tracker {
	return &tracker{streams: map[int64]*streamInfo{}, nodes: map[string]*NodeStatus{}, changed: make(chan struct{}), now: time.Now}
}

func (t *tracker) node(id string) *NodeStatus {
	n := t.nodes[id]
	if n == nil {
		n = &NodeStatus{Acked: map[string]string{}, Sent: map[string]string{}, Subscribed: map[string]bool{}}
		t.nodes[id] = n
	}
	return n
}

// notify wakes everything waiting for a change; the caller holds mu.
func (t *tracker) notify() {
	// Only a channel someone was handed needs closing.
	if t.armed {
		close(t.changed)
		t.changed, t.armed = make(chan struct{}), false
	}
}

// Changed returns a channel closed at the next ACK, NACK or disconnect.
func (t *tracker) Changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.armed = true
	return t.changed
}

func (t *tracker) snapshot() map[string]NodeStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]NodeStatus, len(t.nodes))
	for id, n := range t.nodes {
		c := *n
		c.Acked = maps.Clone(n.Acked)
		c.Sent = maps.Clone(n.Sent)
		c.Subscribed = maps.Clone(n.Subscribed)
		if n.Nack != nil {
			nk := *n.Nack
			c.Nack = &nk
		}
		out[id] = c
	}
	return out
}

func (t *tracker) connectedNodes() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for id, n := range t.nodes {
		if n.Streams > 0 {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}
