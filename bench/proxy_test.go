package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

const (
	listenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	clusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	endpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	routeType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
)

func dialPlain(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
}

// proxy is a simulated Envoy on delta ADS: it subscribes to every
// listener and cluster, to the route configurations its listeners name
// and to the endpoints of its clusters (as Envoy does), and acknowledges
// every response at once. bytes counts what it received.
type proxy struct {
	node string
	// stream is the open stream; only its goroutine replaces it.
	stream discoverygrpc.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	board  *board
	bytes  atomic.Int64

	// routes and eds are what it subscribed to; only its goroutine reads
	// them.
	routes map[string]bool
	eds    map[string]bool
}

func startProxy(ctx context.Context, conn *grpc.ClientConn, node string, md *structpb.Struct, b *board) (*proxy, error) {
	p := &proxy{node: node, board: b, routes: map[string]bool{}, eds: map[string]bool{}}
	if err := p.open(ctx, conn, md); err != nil {
		return nil, err
	}
	go p.run(ctx, conn, md)
	return p, nil
}

// open starts a stream and subscribes to every cluster and listener.
func (p *proxy) open(ctx context.Context, conn *grpc.ClientConn, md *structpb.Struct) error {
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	p.stream = st
	first := &discoverygrpc.DeltaDiscoveryRequest{Node: &corev3.Node{Id: p.node, Metadata: md}, TypeUrl: clusterType}
	if err := st.Send(first); err != nil {
		return err
	}
	return st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: listenerType})
}

func (p *proxy) run(ctx context.Context, conn *grpc.ClientConn, md *structpb.Struct) {
	answered := false
	backoff := 100 * time.Millisecond
	for {
		resp, err := p.stream.Recv()
		if err != nil {
			// A server that refuses new streams under load (istiod's
			// request limit) is asked again, as Envoy does, until it
			// has answered once.
			if !answered && status.Code(err) == codes.ResourceExhausted {
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 5*time.Second)
				if err := p.open(ctx, conn, md); err != nil {
					p.board.fail(fmt.Errorf("%s: reconnecting: %w", p.node, err))
					return
				}
				continue
			}
			if !errors.Is(err, context.Canceled) && status.Code(err) != codes.Canceled {
				p.board.fail(fmt.Errorf("%s: stream ended: %w", p.node, err))
			}
			return
		}
		answered = true
		p.bytes.Add(int64(proto.Size(resp)))
		var subscribe []string
		var subType string
		switch resp.GetTypeUrl() {
		case listenerType:
			subType = routeType
			for _, r := range resp.GetResources() {
				var l listenerv3.Listener
				if err := r.GetResource().UnmarshalTo(&l); err != nil {
					p.board.fail(fmt.Errorf("%s: listener %s: %w", p.node, r.GetName(), err))
					return
				}
				for _, name := range rdsNames(&l) {
					if !p.routes[name] {
						p.routes[name] = true
						subscribe = append(subscribe, name)
					}
				}
			}
		case clusterType:
			subType = endpointType
			for _, r := range resp.GetResources() {
				var c clusterv3.Cluster
				if err := r.GetResource().UnmarshalTo(&c); err != nil {
					p.board.fail(fmt.Errorf("%s: cluster %s: %w", p.node, r.GetName(), err))
					return
				}
				if c.GetType() != clusterv3.Cluster_EDS {
					continue
				}
				name := c.GetEdsClusterConfig().GetServiceName()
				if name == "" {
					name = c.GetName()
				}
				if !p.eds[name] {
					p.eds[name] = true
					subscribe = append(subscribe, name)
				}
			}
		}
		if err := p.stream.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
			return
		}
		if len(subscribe) > 0 {
			slices.Sort(subscribe)
			if err := p.stream.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: subType, ResourceNamesSubscribe: subscribe}); err != nil {
				return
			}
		}
		if resp.GetTypeUrl() == routeType {
			for _, r := range resp.GetResources() {
				p.board.record(p.node, r.GetName())
			}
		}
	}
}

// rdsNames are the route configurations an HTTP connection manager of the
// listener asks for over RDS.
func rdsNames(l *listenerv3.Listener) []string {
	var out []string
	chains := slices.Clone(l.GetFilterChains())
	if d := l.GetDefaultFilterChain(); d != nil {
		chains = append(chains, d)
	}
	for _, fc := range chains {
		for _, f := range fc.GetFilters() {
			tc := f.GetTypedConfig()
			if tc == nil || !strings.HasSuffix(tc.GetTypeUrl(), "HttpConnectionManager") {
				continue
			}
			var hcm hcmv3.HttpConnectionManager
			if err := tc.UnmarshalTo(&hcm); err != nil {
				continue
			}
			if n := hcm.GetRds().GetRouteConfigName(); n != "" {
				out = append(out, n)
			}
		}
	}
	return out
}

// board follows one awaited route configuration: which proxies
// acknowledged a version of it since the board was pointed at it.
type board struct {
	target string

	mu    sync.Mutex
	want  int
	acked map[string]bool
	last  time.Time
	err   error
	done  chan struct{}
}

func newBoard(target string) *board {
	return &board{target: target, acked: map[string]bool{}, done: make(chan struct{})}
}

func (b *board) await(count int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.want, b.acked, b.done = count, map[string]bool{}, make(chan struct{})
	if b.err != nil {
		close(b.done)
	}
}

func (b *board) record(node, name string) {
	if name != b.target {
		return
	}
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil || b.acked[node] || len(b.acked) >= b.want {
		return
	}
	b.acked[node] = true
	if len(b.acked) == b.want {
		b.last = now
		close(b.done)
	}
}

func (b *board) fail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil {
		b.err = err
		select {
		case <-b.done:
		default:
			close(b.done)
		}
	}
}

func (b *board) wait(ctx context.Context, timeout time.Duration) (time.Time, error) {
	b.mu.Lock()
	done := b.done
	b.mu.Unlock()
	select {
	case <-done:
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.last, b.err
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	case <-time.After(timeout):
		b.mu.Lock()
		defer b.mu.Unlock()
		return time.Time{}, fmt.Errorf("only %d of %d proxies acknowledged route configuration %q", len(b.acked), b.want, b.target)
	}
}

// cpuSeconds is the user and system CPU time of a process so far.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields count from after ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unreadable /proc stat")
	}
	f := strings.Fields(s[i+1:])
	// utime and stime are fields 14 and 15 of stat, 12 and 13 here.
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	// Linux reports clock ticks of 1/100 s (USER_HZ).
	return (ut + st) / 100, nil
}

// peakRSSMiB is a process's peak resident set size (VmHWM).
func peakRSSMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				return 0, err
			}
			return kb / 1024, nil
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// nearestRank is the p-th percentile of samples in milliseconds: of n
// sorted samples, the ceil(p*n)-th.
func nearestRank(samples []time.Duration, p float64) float64 {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(samples))
	i := max(int(math.Ceil(p*float64(len(s))))-1, 0)
	return float64(s[i].Microseconds()) / 1000
}

func spread(samples []time.Duration) string {
	return fmt.Sprintf("min %.1f, p50 %.1f, p90 %.1f, p99 %.1f, max %.1f ms",
		nearestRank(samples, 0), nearestRank(samples, 0.5), nearestRank(samples, 0.9), nearestRank(samples, 0.99), nearestRank(samples, 1))
}
