package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"

	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	xdsconfig "github.com/envoyproxy/go-control-plane/pkg/server/config"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Peer is the authenticated identity on an xDS stream.
type Peer struct {
	// SpiffeID is the URI SAN of the client certificate; empty on an
	// insecure server.
	SpiffeID string
	// Insecure is true when the server runs without TLS (local development
	// only): there is no identity to check.
	Insecure bool
}

// Authorizer decides whether a peer may receive the configuration of a node.
type Authorizer interface {
	Authorize(nodeID string, p Peer) error
}

// AuthorizerFunc adapts a function to Authorizer.
type AuthorizerFunc func(nodeID string, p Peer) error

// Authorize calls f.
func (f AuthorizerFunc) Authorize(nodeID string, p Peer) error { return f(nodeID, p) }

// Options configure a Server.
type Options struct {
	// Address to listen on, e.g. ":15010".
	Address string
	// TLS is the server's TLS configuration; it must require and verify
	// client certificates. Nil serves plaintext, which Insecure must allow.
	TLS *tls.Config
	// Insecure allows serving without TLS, for local development.
	Insecure bool
	// Authorizer checks every stream's node against its peer; required.
	Authorizer Authorizer
	// MaxMessageBytes bounds a single xDS message; default 64 MiB.
	MaxMessageBytes int
	// LargePushes bounds how many large responses (a stream's first of a
	// type over 64 KiB, parts of a proxy's whole-mesh configuration, and
	// any over 1 MiB) may wait for their ACK at once; default 32.
	LargePushes int
	// Metrics, if nil, are created unregistered.
	Metrics *Metrics
	Log     logr.Logger
}

// Server is an authenticated ADS server. Every proxy is served from layers
// shared between proxies (see Publish): Envoy proxies over delta ADS,
// proxyless gRPC clients, which speak state of the world and ask for
// resources by name, over state-of-the-world ADS (see CreateWatch).
type Server struct {
	opts   Options
	layers *layers

	tracker  *tracker
	metrics  *Metrics
	log      logr.Logger
	lis      net.Listener
	stopping chan struct{}
	slots    *pushSlots
}

// New creates a Server. Call Start (or run it as a manager Runnable) to serve.
func New(opts Options) (*Server, error) {
	if opts.Authorizer == nil {
		return nil, errors.New("xds server: an Authorizer is required")
	}
	if opts.TLS == nil && !opts.Insecure {
		return nil, errors.New("xds server: TLS is required unless Insecure is set")
	}
	if opts.TLS != nil && opts.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, errors.New("xds server: TLS must require and verify client certificates")
	}
	if opts.MaxMessageBytes == 0 {
		opts.MaxMessageBytes = 64 << 20
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.LargePushes <= 0 {
		opts.LargePushes = 32
	}
	s := &Server{slots: newPushSlots(opts.LargePushes), opts: opts, tracker: newTracker(), metrics: opts.Metrics, log: opts.Log, layers: newLayers(), stopping: make(chan struct{})}
	return s, nil
}

// Listen binds the server's address; Start calls it when not done yet.
func (s *Server) Listen() (net.Addr, error) {
	if s.lis != nil {
		return s.lis.Addr(), nil
	}
	lis, err := net.Listen("tcp", s.opts.Address)
	if err != nil {
		return nil, fmt.Errorf("xds server: listening on %s: %w", s.opts.Address, err)
	}
	s.lis = lis
	return lis.Addr(), nil
}

// NeedLeaderElection is false: every replica serves xDS.
func (s *Server) NeedLeaderElection() bool { return false }

// Start serves until ctx ends, then stops gracefully: open streams are
// closed and proxies keep their last configuration until they reconnect.
func (s *Server) Start(ctx context.Context) error {
	if _, err := s.Listen(); err != nil {
		return err
	}
	creds := insecure.NewCredentials()
	if s.opts.TLS != nil {
		creds = credentials.NewTLS(s.opts.TLS)
	}
	gs := grpc.NewServer(
		grpc.Creds(creds),
		grpc.MaxRecvMsgSize(s.opts.MaxMessageBytes),
		grpc.MaxSendMsgSize(s.opts.MaxMessageBytes),
		grpc.MaxConcurrentStreams(1<<20),
		// Thousands of proxies each hold a connection that is idle between
		// pushes, and their requests (subscriptions and ACKs) are small:
		// a small read buffer per connection (gRPC already returns write
		// buffers to a pool after each flush).
		grpc.ReadBufferSize(8<<10),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	// Only proxyless gRPC clients speak state of the world, and they never
	// mean a request without names as "everything": grpc-go sends one when
	// a channel stops using the last resource of a type.
	xs := serverv3.NewServer(ctx, &dispatchCache{s: s}, &callbacks{s: s},
		xdsconfig.DeactivateLegacyWildcard(),
		func(o *xdsconfig.Opts) { o.Logger = cacheLogger{s.log.WithName("sotw")} })
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, ads{Server: xs, s: s})
	endpointservice.RegisterEndpointDiscoveryServiceServer(gs, xs)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, xs)
	routeservice.RegisterRouteDiscoveryServiceServer(gs, xs)
	listenerservice.RegisterListenerDiscoveryServiceServer(gs, xs)
	secretservice.RegisterSecretDiscoveryServiceServer(gs, xs)

	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(s.lis) }()
	s.log.Info("serving xDS", "address", s.lis.Addr().String(), "tls", s.opts.TLS != nil)
	select {
	case <-ctx.Done():
		close(s.stopping)
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			gs.Stop()
		}
		return nil
	case err := <-errc:
		return fmt.Errorf("xds server: %w", err)
	}
}

// ads serves state-of-the-world ADS with go-control-plane and delta ADS
// from the layers.
type ads struct {
	serverv3.Server
	s *Server
}

func (a ads) DeltaAggregatedResources(st discoverygrpc.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return a.s.serveDelta(st)
}

// Config returns a node's current resources by type URL.
func (s *Server) Config(nodeID string) (map[string][]types.Resource, bool) {
	return s.LayeredConfig(nodeID)
}

// isProxyless says whether a node is a proxyless gRPC client: it is
// published as one, or, before that, its user agent says so.
func (s *Server) isProxyless(node *corev3.Node) bool {
	return s.Proxyless(node.GetId()) || strings.HasPrefix(strings.ToLower(node.GetUserAgentName()), "grpc")
}

// Nodes returns what the server knows of every proxy it has seen.
func (s *Server) Nodes() map[string]NodeStatus { return s.tracker.snapshot() }

// Nacks returns the last rejection of every node that has one.
func (s *Server) Nacks() map[string]Nack {
	s.tracker.mu.Lock()
	defer s.tracker.mu.Unlock()
	out := map[string]Nack{}
	for id, n := range s.tracker.nodes {
		if n.Nack != nil {
			out[id] = *n.Nack
		}
	}
	return out
}

// LastAck is when a node last acknowledged a response (zero if never).
func (s *Server) LastAck(nodeID string) time.Time {
	s.tracker.mu.Lock()
	defer s.tracker.mu.Unlock()
	if n := s.tracker.nodes[nodeID]; n != nil {
		return n.AckedAt
	}
	return time.Time{}
}

// ConnectedNodes lists the proxies with an open stream.
func (s *Server) ConnectedNodes() []string { return s.tracker.connectedNodes() }

// Changed returns a channel closed at the next ACK, NACK or disconnect.
func (s *Server) Changed() <-chan struct{} { return s.tracker.Changed() }

// UpToDate says whether a node has acknowledged the current version of every
// resource type it subscribes to: for an Envoy proxy, every open stream of
// the node holds and has acknowledged the current revision of each of its
// layers, with no rejection outstanding; for a proxyless client, it
// acknowledged the current answer to each of its subscriptions.
func (s *Server) UpToDate(nodeID string) bool {
	l := s.layers
	l.mu.RLock()
	defer l.mu.RUnlock()
	comp, layered := l.nodes[nodeID]
	if !layered {
		return false
	}
	if l.proxyless[nodeID] {
		return s.sotwUpToDate(nodeID, comp)
	}
	streams := l.streams[nodeID]
	if len(streams) == 0 {
		return false
	}
	for st := range streams {
		if !st.upToDate(comp) {
			return false
		}
	}
	return true
}

// peerOf reads the SPIFFE ID from a stream's client certificate.
func (s *Server) peerOf(ctx context.Context) (Peer, error) {
	if s.opts.TLS == nil {
		return Peer{Insecure: true}, nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Peer{}, errors.New("no peer on the stream")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return Peer{}, errors.New("no client certificate")
	}
	for _, u := range ti.State.PeerCertificates[0].URIs {
		if u.Scheme == "spiffe" {
			return Peer{SpiffeID: u.String()}, nil
		}
	}
	return Peer{}, errors.New("client certificate has no SPIFFE ID")
}

// callbacks authenticate streams and track ACKs and NACKs.
type callbacks struct{ s *Server }

var _ serverv3.Callbacks = &callbacks{}

func (c *callbacks) open(ctx context.Context, id int64) error {
	p, err := c.s.peerOf(ctx)
	if err != nil {
		c.s.metrics.Rejected.WithLabelValues("NoIdentity").Inc()
		return status.Errorf(codes.Unauthenticated, "xds: %v", err)
	}
	t := c.s.tracker
	t.mu.Lock()
	t.streams[id] = &streamInfo{peer: p, nonces: map[string]sentResponse{}}
	t.mu.Unlock()
	return nil
}

func (c *callbacks) closed(id int64) {
	t := c.s.tracker
	t.mu.Lock()
	si := t.streams[id]
	delete(t.streams, id)
	if si == nil || si.node == "" {
		t.mu.Unlock()
		return
	}
	n := t.node(si.node)
	n.Streams--
	last := n.Streams == 0
	if last {
		c.s.metrics.ConnectedProxies.Dec()
	}
	t.notify()
	t.mu.Unlock()
	if last {
		c.s.layers.forgetSotw(si.node)
	}
}

// request authenticates the node on a stream and records ACK or NACK.
func (c *callbacks) request(id int64, node *corev3.Node, typeURL, version, nonce string, errDetail error) error {
	t := c.s.tracker
	t.mu.Lock()
	si := t.streams[id]
	if si == nil {
		t.mu.Unlock()
		return status.Error(codes.Internal, "xds: unknown stream")
	}
	if node.GetId() != "" && si.node != node.GetId() {
		if si.node != "" {
			t.mu.Unlock()
			c.s.metrics.Rejected.WithLabelValues("NodeChanged").Inc()
			return status.Errorf(codes.PermissionDenied, "xds: node ID changed on the stream from %q to %q", si.node, node.GetId())
		}
		peer := si.peer
		t.mu.Unlock()
		if err := c.s.opts.Authorizer.Authorize(node.GetId(), peer); err != nil {
			c.s.metrics.Rejected.WithLabelValues("NotAuthorized").Inc()
			c.s.log.Info("refused xDS stream", "node", node.GetId(), "peer", peer.SpiffeID, "reason", err.Error())
			return status.Errorf(codes.PermissionDenied, "xds: %v", err)
		}
		t.mu.Lock()
		si.node = node.GetId()
		n := t.node(si.node)
		n.Streams++
		n.ConnectedAt, n.Agent, n.Identity = t.now(), agent(node), peer.SpiffeID
		if n.Streams == 1 {
			c.s.metrics.ConnectedProxies.Inc()
		}
	}
	if si.node == "" {
		t.mu.Unlock()
		return status.Error(codes.InvalidArgument, "xds: the first request must carry a node ID")
	}
	defer t.mu.Unlock()
	t.node(si.node).Subscribed[typeURL] = true
	if nonce == "" {
		if version != "" && errDetail == nil {
			// A state-of-the-world client on a new stream (after a
			// reconnect, or a restart of the server) says which version it
			// holds. Versions digest content, so when it is the current
			// one nothing is sent, and the client is up to date as it is.
			t.node(si.node).Acked[typeURL] = version
			t.notify()
		}
		return nil
	}
	sent, known := si.nonces[nonce]
	delete(si.nonces, nonce)
	n := t.node(si.node)
	if errDetail != nil {
		c.s.metrics.Nacks.WithLabelValues(shortType(typeURL)).Inc()
		n.Nack = &Nack{TypeURL: typeURL, Version: sent.version, Message: errDetail.Error(), At: t.now()}
		if known {
			n.Nack.Resources = resourceNames(sent.msg)
		}
		c.s.log.Info("proxy rejected configuration", "node", si.node, "type", shortType(typeURL), "version", sent.version, "resources", len(n.Nack.Resources), "error", errDetail.Error())
		t.notify()
		return nil
	}
	if known {
		version = sent.version
	}
	n.Acked[typeURL] = version
	n.AckedAt = t.now()
	if n.Nack != nil && n.Nack.TypeURL == typeURL && n.Nack.Version != version {
		n.Nack = nil
	}
	t.notify()
	return nil
}

// agent is a node's user agent name and version, as Envoy and grpc-go send
// them.
func agent(node *corev3.Node) string {
	a := node.GetUserAgentName()
	if v := node.GetUserAgentVersion(); v != "" {
		a += "/" + v
	} else if bv := node.GetUserAgentBuildVersion().GetVersion(); bv != nil {
		a += fmt.Sprintf("/%d.%d.%d", bv.GetMajorNumber(), bv.GetMinorNumber(), bv.GetPatch())
	}
	return a
}

func (c *callbacks) response(id int64, typeURL, version, nonce string, msg proto.Message) {
	c.s.metrics.pushed(typeURL)
	t := c.s.tracker
	t.mu.Lock()
	defer t.mu.Unlock()
	si := t.streams[id]
	if si == nil {
		return
	}
	si.nonces[nonce] = sentResponse{version: version, msg: msg}
	if si.node != "" {
		t.node(si.node).Sent[typeURL] = version
	}
}

func (c *callbacks) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	return c.open(ctx, id)
}
func (c *callbacks) OnStreamClosed(id int64, _ *corev3.Node) { c.closed(id) }
func (c *callbacks) OnStreamRequest(id int64, r *discoverygrpc.DiscoveryRequest) error {
	var e error
	if r.GetErrorDetail() != nil {
		e = errors.New(r.GetErrorDetail().GetMessage())
	}
	return c.request(id, r.GetNode(), r.GetTypeUrl(), r.GetVersionInfo(), r.GetResponseNonce(), e)
}
func (c *callbacks) OnStreamResponse(_ context.Context, id int64, _ *discoverygrpc.DiscoveryRequest, r *discoverygrpc.DiscoveryResponse) {
	c.response(id, r.GetTypeUrl(), r.GetVersionInfo(), r.GetNonce(), r)
}
func (c *callbacks) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	return c.open(ctx, id)
}
func (c *callbacks) OnDeltaStreamClosed(id int64, _ *corev3.Node) { c.closed(id) }
func (c *callbacks) OnStreamDeltaRequest(id int64, r *discoverygrpc.DeltaDiscoveryRequest) error {
	var e error
	if r.GetErrorDetail() != nil {
		e = errors.New(r.GetErrorDetail().GetMessage())
	}
	return c.request(id, r.GetNode(), r.GetTypeUrl(), "", r.GetResponseNonce(), e)
}
func (c *callbacks) OnStreamDeltaResponse(id int64, _ *discoverygrpc.DeltaDiscoveryRequest, r *discoverygrpc.DeltaDiscoveryResponse) {
	c.response(id, r.GetTypeUrl(), r.GetSystemVersionInfo(), r.GetNonce(), r)
}
func (c *callbacks) OnFetchRequest(context.Context, *discoverygrpc.DiscoveryRequest) error {
	// REST fetches carry no client certificate check here: refuse them.
	return status.Error(codes.Unimplemented, "xds: use ADS over gRPC")
}
func (c *callbacks) OnFetchResponse(*discoverygrpc.DiscoveryRequest, *discoverygrpc.DiscoveryResponse) {
}

// NodeIDParts splits a node ID <pod>.<namespace>.
func NodeIDParts(id string) (pod, namespace string, ok bool) {
	i := strings.LastIndexByte(id, '.')
	if i <= 0 || i == len(id)-1 {
		return "", "", false
	}
	return id[:i], id[i+1:], true
}

// cacheLogger routes go-control-plane's logs to logr: debug at V(2), info
// at V(1). Messages are formatted only when their level is enabled: the
// server logs every request it skips.
type cacheLogger struct{ l logr.Logger }

func (c cacheLogger) Debugf(format string, args ...any) {
	if l := c.l.V(2); l.Enabled() {
		l.Info(fmt.Sprintf(format, args...))
	}
}

func (c cacheLogger) Infof(format string, args ...any) {
	if l := c.l.V(1); l.Enabled() {
		l.Info(fmt.Sprintf(format, args...))
	}
}
func (c cacheLogger) Warnf(format string, args ...any)  { c.l.Info(fmt.Sprintf(format, args...)) }
func (c cacheLogger) Errorf(format string, args ...any) { c.l.Error(nil, fmt.Sprintf(format, args...)) }
