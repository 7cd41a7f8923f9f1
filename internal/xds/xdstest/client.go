package xdstest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Client is an ADS client for one node, state of the world (Dial, as
// proxyless gRPC speaks) or delta (DialProxy and DialDelta, as Envoy does).
type Client struct {
	Node string

	stream  discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	dstream discoverygrpc.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	cancel  context.CancelFunc

	mu        sync.Mutex
	resources map[string]map[string]proto.Message // type -> name -> resource
	versions  map[string]string
	responses map[string]int
	// reject, when set for a type, makes the client NACK its next response.
	reject map[string]string
	// held, while hold is set, are the answers not yet sent, by type: a
	// proxy that is slow to apply its configuration.
	hold      bool
	held      map[string]*discoverygrpc.DiscoveryRequest
	heldDelta []*discoverygrpc.DeltaDiscoveryRequest
	nonces    map[string]string
	names     map[string][]string
	err       error
	updated   chan struct{}
	sendMu    sync.Mutex
}

// DialProxy opens a delta ADS stream that behaves like Envoy: it subscribes
// to every listener and cluster, then to the route configurations its
// listeners name and the endpoints its clusters name.
func DialProxy(ctx context.Context, conn grpc.ClientConnInterface, node string) (*Client, error) {
	return DialDelta(ctx, conn, node, map[string][]string{ClusterType: nil, ListenerType: nil})
}

// Dial opens an ADS stream on conn for node and subscribes to the given
// types (wildcard unless names are given for that type). Route and
// endpoint names that listeners and clusters refer to are subscribed to as
// they arrive, as Envoy does.
func Dial(ctx context.Context, conn grpc.ClientConnInterface, node string, subs map[string][]string) (*Client, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("opening ADS stream: %w", err)
	}
	c := &Client{
		Node: node, stream: stream, cancel: cancel,
		resources: map[string]map[string]proto.Message{}, versions: map[string]string{},
		responses: map[string]int{}, reject: map[string]string{}, updated: make(chan struct{}),
		nonces: map[string]string{}, names: map[string][]string{},
	}
	for typ, names := range subs {
		c.names[typ] = names
		if err := c.send(&discoverygrpc.DiscoveryRequest{Node: &corev3.Node{Id: node, UserAgentName: "weft-xdstest"}, TypeUrl: typ, ResourceNames: names}); err != nil {
			if errors.Is(err, io.EOF) {
				// The server ended the stream; the loop receives why.
				break
			}
			cancel()
			return nil, fmt.Errorf("subscribing to %s: %w", typ, err)
		}
	}
	go c.loop()
	return c, nil
}

// Close ends the stream.
func (c *Client) Close() { c.cancel() }

// RejectNext makes the client NACK the next response of a type with msg.
func (c *Client) RejectNext(typ, msg string) {
	c.mu.Lock()
	c.reject[typ] = msg
	c.mu.Unlock()
}

// Hold makes the client keep its answers (ACKs and NACKs) to itself until
// Release, as a proxy still applying its configuration does; it keeps
// receiving.
func (c *Client) Hold() {
	c.mu.Lock()
	c.hold = true
	c.mu.Unlock()
}

// Release sends the latest held answer of each type and answers at once
// again.
func (c *Client) Release() error {
	c.mu.Lock()
	c.hold = false
	held, heldDelta := c.held, c.heldDelta
	c.held, c.heldDelta = nil, nil
	c.mu.Unlock()
	for _, r := range held {
		if err := c.send(r); err != nil {
			return err
		}
	}
	for _, r := range heldDelta {
		if err := c.sendDelta(r); err != nil {
			return err
		}
	}
	return nil
}

func (c *Client) send(r *discoverygrpc.DiscoveryRequest) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if err := c.stream.Send(r); err != nil {
		return fmt.Errorf("sending %s: %w", r.GetTypeUrl(), err)
	}
	return nil
}

func (c *Client) fail(err error) {
	c.mu.Lock()
	c.err = err
	c.notify()
	c.mu.Unlock()
}

// followLocked subscribes to the routes and endpoints that the listeners
// and clusters just received refer to; the caller holds mu.
func (c *Client) followLocked(typ string) []*discoverygrpc.DiscoveryRequest {
	next, want, changed := c.wantLocked(typ)
	if !changed {
		return nil
	}
	c.names[next] = want
	return []*discoverygrpc.DiscoveryRequest{{
		Node: &corev3.Node{Id: c.Node}, TypeUrl: next, ResourceNames: want,
		VersionInfo: c.versions[next], ResponseNonce: c.nonces[next],
	}}
}

// wantLocked lists the route or endpoint names the listeners or clusters
// held refer to, and whether that differs from the current subscription.
func (c *Client) wantLocked(typ string) (next string, want []string, changed bool) {
	switch typ {
	case ListenerType:
		next = RouteType
		for _, m := range c.resources[typ] {
			want = append(want, routeNames(m)...)
		}
	case ClusterType:
		next = EndpointType
		for _, m := range c.resources[typ] {
			if cl, ok := m.(*clusterv3.Cluster); ok && cl.GetType() == clusterv3.Cluster_EDS {
				want = append(want, cmp.Or(cl.GetEdsClusterConfig().GetServiceName(), cl.GetName()))
			}
		}
	default:
		return "", nil, false
	}
	slices.Sort(want)
	want = slices.Compact(want)
	return next, want, !slices.Equal(want, c.names[next])
}

// routeNames lists the RDS route configurations a listener's HTTP
// connection managers use.
func routeNames(m proto.Message) []string {
	l, ok := m.(*listenerv3.Listener)
	if !ok {
		return nil
	}
	var out []string
	hcm := func(tc *anypb.Any) {
		var h hcmv3.HttpConnectionManager
		if tc.MessageIs(&h) && tc.UnmarshalTo(&h) == nil && h.GetRds() != nil {
			out = append(out, h.GetRds().GetRouteConfigName())
		}
	}
	chains := slices.Clone(l.GetFilterChains())
	if l.GetDefaultFilterChain() != nil {
		chains = append(chains, l.GetDefaultFilterChain())
	}
	for _, fc := range chains {
		for _, f := range fc.GetFilters() {
			hcm(f.GetTypedConfig())
		}
	}
	if al := l.GetApiListener().GetApiListener(); al != nil {
		hcm(al)
	}
	return out
}

func (c *Client) loop() {
	for {
		resp, err := c.stream.Recv()
		if err != nil {
			c.mu.Lock()
			if errors.Is(err, io.EOF) {
				err = errors.New("stream closed by the server")
			}
			c.err = err
			c.notify()
			c.mu.Unlock()
			return
		}
		typ := resp.GetTypeUrl()
		c.mu.Lock()
		c.responses[typ]++
		msg, nack := c.reject[typ]
		// A state of the world request always carries the whole
		// subscription: an ACK without names would unsubscribe a type
		// asked for by name (or make go-control-plane answer with every
		// resource of the type).
		req := &discoverygrpc.DiscoveryRequest{Node: &corev3.Node{Id: c.Node}, TypeUrl: typ, ResponseNonce: resp.GetNonce(), ResourceNames: c.names[typ]}
		if nack {
			delete(c.reject, typ)
			req.VersionInfo = c.versions[typ]
			req.ErrorDetail = &statuspb.Status{Code: 3, Message: msg}
		} else {
			got := map[string]proto.Message{}
			for _, a := range resp.GetResources() {
				m, name, err := unpack(a)
				if err == nil {
					got[name] = m
				}
			}
			c.resources[typ] = got
			c.versions[typ] = resp.GetVersionInfo()
			req.VersionInfo = resp.GetVersionInfo()
		}
		c.nonces[typ] = resp.GetNonce()
		var follow []*discoverygrpc.DiscoveryRequest
		if !nack {
			follow = c.followLocked(typ)
		}
		hold := c.hold
		if hold {
			if c.held == nil {
				c.held = map[string]*discoverygrpc.DiscoveryRequest{}
			}
			c.held[typ] = req
		}
		c.notify()
		c.mu.Unlock()
		for _, f := range follow {
			if err := c.send(f); err != nil {
				c.fail(err)
				return
			}
		}
		if hold {
			continue
		}
		if err := c.send(req); err != nil {
			c.mu.Lock()
			c.err = err
			c.notify()
			c.mu.Unlock()
			return
		}
	}
}

// notify wakes waiters; the caller holds mu.
func (c *Client) notify() {
	close(c.updated)
	c.updated = make(chan struct{})
}

// Err is the stream's error once it has ended.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Responses counts the responses received of a type.
func (c *Client) Responses(typ string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.responses[typ]
}

// Version is the last accepted version of a type.
func (c *Client) Version(typ string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.versions[typ]
}

// Resource returns the last accepted resource of a type by name.
func (c *Client) Resource(typ, name string) proto.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resources[typ][name]
}

// Names lists the resources of a type the client holds.
func (c *Client) Names(typ string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for n := range c.resources[typ] {
		out = append(out, n)
	}
	return out
}

// WaitFor waits until cond holds (checked after every response) or ctx ends.
func (c *Client) WaitFor(ctx context.Context, cond func(*Client) bool) error {
	for {
		c.mu.Lock()
		ch := c.updated
		err := c.err
		c.mu.Unlock()
		if cond(c) {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for node %s: %w", c.Node, ctx.Err())
		case <-ch:
		}
	}
}

func unpack(a *anypb.Any) (proto.Message, string, error) {
	m, err := a.UnmarshalNew()
	if err != nil {
		return nil, "", fmt.Errorf("unpacking %s: %w", a.GetTypeUrl(), err)
	}
	return m, resourceName(m), nil
}

func resourceName(m proto.Message) string {
	type named interface{ GetName() string }
	type clusterNamed interface{ GetClusterName() string }
	switch v := m.(type) {
	case clusterNamed:
		return v.GetClusterName()
	case named:
		return v.GetName()
	}
	return ""
}

// Types are the xDS type URLs, for convenience.
var (
	ListenerType = resourcev3.ListenerType
	RouteType    = resourcev3.RouteType
	ClusterType  = resourcev3.ClusterType
	EndpointType = resourcev3.EndpointType
	SecretType   = resourcev3.SecretType
)
