package xdstest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// DialDelta opens a delta ADS stream on conn for node and subscribes to
// the given types (wildcard unless names are given for that type). Like
// Envoy, it subscribes by name to the route and endpoint names that
// listeners and clusters refer to as they arrive, and unsubscribes from
// those no longer named.
func DialDelta(ctx context.Context, conn grpc.ClientConnInterface, node string, subs map[string][]string) (*Client, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("opening delta ADS stream: %w", err)
	}
	c := &Client{
		Node: node, dstream: stream, cancel: cancel,
		resources: map[string]map[string]proto.Message{}, versions: map[string]string{},
		responses: map[string]int{}, reject: map[string]string{}, updated: make(chan struct{}),
		nonces: map[string]string{}, names: map[string][]string{},
	}
	first := true
	for typ, names := range subs {
		c.names[typ] = names
		req := &discoverygrpc.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: names}
		if first {
			req.Node = &corev3.Node{Id: node, UserAgentName: "envoy"}
			first = false
		}
		if err := c.sendDelta(req); err != nil {
			if errors.Is(err, io.EOF) {
				// The server ended the stream; the loop receives why.
				break
			}
			cancel()
			return nil, fmt.Errorf("subscribing to %s: %w", typ, err)
		}
	}
	go c.deltaLoop()
	return c, nil
}

func (c *Client) sendDelta(r *discoverygrpc.DeltaDiscoveryRequest) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if err := c.dstream.Send(r); err != nil {
		return fmt.Errorf("sending %s: %w", r.GetTypeUrl(), err)
	}
	return nil
}

func (c *Client) deltaLoop() {
	for {
		resp, err := c.dstream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("stream closed by the server")
			}
			c.fail(err)
			return
		}
		typ := resp.GetTypeUrl()
		c.mu.Lock()
		c.responses[typ]++
		msg, nack := c.reject[typ]
		req := &discoverygrpc.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: resp.GetNonce()}
		var follow *discoverygrpc.DeltaDiscoveryRequest
		if nack {
			delete(c.reject, typ)
			req.ErrorDetail = &statuspb.Status{Code: 3, Message: msg}
		} else {
			got := maps.Clone(c.resources[typ])
			if got == nil {
				got = map[string]proto.Message{}
			}
			for _, r := range resp.GetResources() {
				m, _, err := unpack(r.GetResource())
				if err == nil {
					got[r.GetName()] = m
				}
			}
			for _, name := range resp.GetRemovedResources() {
				delete(got, name)
			}
			c.resources[typ] = got
			c.versions[typ] = resp.GetSystemVersionInfo()
			if next, want, changed := c.wantLocked(typ); changed {
				follow = &discoverygrpc.DeltaDiscoveryRequest{TypeUrl: next}
				have := map[string]bool{}
				for _, n := range c.names[next] {
					have[n] = true
				}
				for _, n := range want {
					if !have[n] {
						follow.ResourceNamesSubscribe = append(follow.ResourceNamesSubscribe, n)
					}
					delete(have, n)
				}
				for n := range have {
					follow.ResourceNamesUnsubscribe = append(follow.ResourceNamesUnsubscribe, n)
				}
				c.names[next] = want
			}
		}
		c.nonces[typ] = resp.GetNonce()
		hold := c.hold
		if hold {
			c.heldDelta = append(c.heldDelta, req)
		}
		c.notify()
		c.mu.Unlock()
		if follow != nil {
			if err := c.sendDelta(follow); err != nil {
				c.fail(err)
				return
			}
		}
		if hold {
			continue
		}
		if err := c.sendDelta(req); err != nil {
			c.fail(err)
			return
		}
	}
}
