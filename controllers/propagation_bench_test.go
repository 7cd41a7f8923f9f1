package controllers_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

// BenchmarkPropagation measures the time from the API write of a
// TrafficSplit weight change to the acknowledgement of the new route by
// every proxy, with the controller in-process against a real API server
// and simulated proxies on delta ADS streams that acknowledge every
// response. Run it with a fixed count, e.g. -benchtime=20x.
//
// The simulated proxies share one HTTP/2 connection, which keeps what the
// benchmark measures to the controller's own work. The sub-benchmark with
// connections=2000 gives every proxy its own connection, as real proxies
// have; on one machine the 2000 client connections then run on the
// controller's cores too.
func BenchmarkPropagation(b *testing.B) {
	for _, size := range []struct{ services, proxies, conns int }{{100, 200, 1}, {1000, 2000, 1}, {1000, 2000, 2000}} {
		name := fmt.Sprintf("services=%d,proxies=%d", size.services, size.proxies)
		if size.conns > 1 {
			name += fmt.Sprintf(",connections=%d", size.conns)
		}
		b.Run(name, func(b *testing.B) {
			benchPropagation(b, size.services, size.proxies, size.conns)
		})
	}
}

func benchPropagation(b *testing.B, services, proxies, conns int) {
	h := startHarness(b, harnessOptions{insecure: true})
	ctx := b.Context()
	cfgClient := h.c
	h.create(b, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench", Labels: map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}}})

	// Services, each with proxies/services pods behind it; one in five
	// services is the apex of a TrafficSplit onto itself and the next one.
	perService := proxies / services
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range services {
		g.Go(func() error {
			var pods []*corev1.Pod
			for j := range perService {
				n := i*perService + j
				ip := fmt.Sprintf("10.%d.%d.%d", 100+n/65536, (n/256)%256, n%256)
				p, err := h.tryPod(gctx, "bench", fmt.Sprintf("p%d", n), fmt.Sprintf("sa%d", i), ip, map[string]string{"app": fmt.Sprintf("s%d", i)})
				if err != nil {
					return err
				}
				pods = append(pods, p)
			}
			return h.tryService(gctx, "bench", fmt.Sprintf("s%d", i), "", map[string]string{"app": fmt.Sprintf("s%d", i)}, pods...)
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	var splits []*meshv1alpha1.TrafficSplit
	for i := 0; i+1 < services; i += 5 {
		ts := &meshv1alpha1.TrafficSplit{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("ts%d", i)},
			Spec: meshv1alpha1.TrafficSplitSpec{Service: fmt.Sprintf("s%d", i), Backends: []meshv1alpha1.TrafficSplitBackend{
				{Service: fmt.Sprintf("s%d", i), Weight: 90}, {Service: fmt.Sprintf("s%d", i+1), Weight: 10},
			}},
		}
		h.create(b, ts)
		splits = append(splits, ts)
	}

	// Simulated proxies spread over conns connections. With a connection
	// each, client buffers are small: they live in the process whose heap
	// is measured, and a real proxy's buffers are not the controller's.
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256 << 20))}
	if conns > 1 {
		opts = append(opts, grpc.WithReadBufferSize(4<<10), grpc.WithWriteBufferSize(4<<10))
	}
	var clients []*grpc.ClientConn
	for range conns {
		conn, err := grpc.NewClient(h.xdsAddr, opts...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = conn.Close() })
		clients = append(clients, conn)
	}
	// Wait until every proxy holds the route of the first split.
	route := func(ts *meshv1alpha1.TrafficSplit) string {
		return ts.Spec.Service + ".bench.svc.cluster.local:80"
	}
	acks := newAckBoard()
	acks.await(route(splits[0]), proxies)
	for n := range proxies {
		if err := startDeltaProxy(ctx, clients[n%conns], fmt.Sprintf("p%d.bench", n), acks); err != nil {
			b.Fatal(err)
		}
	}
	if err := acks.waitAll(ctx, 10*time.Minute); err != nil {
		b.Fatal(err)
	}

	var lat []time.Duration
	// WEFT_BENCH_CPUPROFILE profiles the measured changes only, not the
	// setup.
	defer xdstest.ProfileCPU(b)()
	// WEFT_BENCH_MEMPROFILE also writes, to <path>.base, the heap profile
	// as the measured changes begin, so that
	// "go tool pprof -sample_index=alloc_space -diff_base <path>.base <path>"
	// shows what the changes allocated.
	if path := os.Getenv("WEFT_BENCH_MEMPROFILE"); path != "" {
		// A heap profile is as of the last collection.
		runtime.GC()
		writeHeapProfile(b, path+".base")
	}
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := range b.N {
		ts := splits[i%len(splits)]
		var cur meshv1alpha1.TrafficSplit
		if err := cfgClient.Get(ctx, client.ObjectKeyFromObject(ts), &cur); err != nil {
			b.Fatal(err)
		}
		orig := cur.DeepCopy()
		cur.Spec.Backends[0].Weight, cur.Spec.Backends[1].Weight = int32(50+i%40), int32(50-i%40)
		acks.await(route(ts), proxies)
		start := time.Now()
		// A merge patch of the spec, as kubectl or a canary controller
		// would send; it does not race the status writer.
		if err := cfgClient.Patch(ctx, &cur, client.MergeFrom(orig)); err != nil {
			b.Fatal(err)
		}
		if err := acks.waitAll(ctx, 2*time.Minute); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	// Two collections: the first moves gRPC's pooled send buffers to the
	// pool's victim cache, the second frees them, leaving what is live.
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	// WEFT_BENCH_MEMPROFILE writes the heap that heap-MiB reports.
	if path := os.Getenv("WEFT_BENCH_MEMPROFILE"); path != "" {
		writeHeapProfile(b, path)
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
	// What the process (controller, API client and simulated proxies
	// together) allocated per change.
	b.ReportMetric(float64(ms.TotalAlloc-before.TotalAlloc)/float64(b.N)/(1<<20), "alloc-MiB/change")
}

func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}

// ackBoard records which proxies acknowledged one awaited resource since
// the board was pointed at it: the benchmark's own bookkeeping stays a
// few thousand entries, out of the heap it reports, and wakes the waiter
// once, when the last proxy has acknowledged, rather than on every ACK.
type ackBoard struct {
	mu     sync.Mutex
	target string
	want   int
	acked  map[string]bool
	done   chan struct{}
}

func newAckBoard() *ackBoard {
	return &ackBoard{acked: map[string]bool{}, done: make(chan struct{})}
}

// await points the board at resource, to be acknowledged by count
// proxies, and forgets earlier acknowledgements.
func (a *ackBoard) await(resource string, count int) {
	a.mu.Lock()
	a.target, a.want, a.acked, a.done = resource, count, map[string]bool{}, make(chan struct{})
	a.mu.Unlock()
}

func (a *ackBoard) record(node string, names []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.acked) >= a.want || !slices.Contains(names, a.target) {
		return
	}
	a.acked[node] = true
	if len(a.acked) == a.want {
		close(a.done)
	}
}

// waitAll waits until every awaited proxy acknowledged the resource.
func (a *ackBoard) waitAll(ctx context.Context, timeout time.Duration) error {
	a.mu.Lock()
	done := a.done
	a.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(timeout):
		a.mu.Lock()
		defer a.mu.Unlock()
		return fmt.Errorf("only %d of %d proxies acknowledged %s", len(a.acked), a.want, a.target)
	}
}

// startDeltaProxy opens a delta ADS stream that subscribes to everything
// and acknowledges every response, like a proxy that applies configuration
// instantly. It reads of each response only what an ACK needs (type,
// nonce, resource names), so that the simulated proxies, which share the
// controller's cores, spend little of them.
func startDeltaProxy(ctx context.Context, conn *grpc.ClientConn, node string, acks *ackBoard) error {
	desc := &grpc.StreamDesc{StreamName: "DeltaAggregatedResources", ServerStreams: true, ClientStreams: true}
	stream, err := conn.NewStream(ctx, desc, discoverygrpc.AggregatedDiscoveryService_DeltaAggregatedResources_FullMethodName, grpc.ForceCodecV2(ackCodec{}))
	if err != nil {
		return fmt.Errorf("opening delta stream: %w", err)
	}
	for _, typ := range []string{xdstest.ClusterType, xdstest.EndpointType, xdstest.ListenerType, xdstest.RouteType, xdstest.SecretType} {
		if err := stream.SendMsg(&discoverygrpc.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: typ, ResourceNamesSubscribe: []string{"*"}}); err != nil {
			return fmt.Errorf("subscribing: %w", err)
		}
	}
	go func() {
		for {
			var resp deltaHeader
			if err := stream.RecvMsg(&resp); err != nil {
				return
			}
			if err := stream.SendMsg(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resp.typeURL, ResponseNonce: resp.nonce}); err != nil {
				return
			}
			acks.record(node, resp.names)
		}
	}()
	return nil
}

// deltaHeader is what a simulated proxy reads of a delta response: its
// type, its nonce and, for route configurations (the only type the
// benchmark awaits), the names of its resources.
type deltaHeader struct {
	typeURL, nonce string
	names          []string
}

// ackCodec marshals requests as protobuf and reads responses into a
// deltaHeader.
type ackCodec struct{}

func (ackCodec) Name() string { return "proto" }

func (ackCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("ackCodec: cannot marshal %T", v)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (ackCodec) Unmarshal(data mem.BufferSlice, v any) error {
	h, ok := v.(*deltaHeader)
	if !ok {
		return fmt.Errorf("ackCodec: cannot unmarshal into %T", v)
	}
	var buf []byte
	if len(data) == 1 {
		buf = data[0].ReadOnlyData()
	} else {
		buf = data.Materialize()
	}
	// DeltaDiscoveryResponse: resources = 2 (Resource.name = 3),
	// type_url = 4, nonce = 5. Resources come before the type URL.
	var resources [][]byte
	for b := buf; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch num {
		case 2:
			resources = append(resources, v)
		case 4:
			h.typeURL = string(v)
		case 5:
			h.nonce = string(v)
		}
	}
	if h.typeURL != xdstest.RouteType {
		return nil
	}
	for _, r := range resources {
		for len(r) > 0 {
			num, typ, n := protowire.ConsumeTag(r)
			if n < 0 {
				return protowire.ParseError(n)
			}
			r = r[n:]
			n = protowire.ConsumeFieldValue(num, typ, r)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if num == 3 && typ == protowire.BytesType {
				name, _ := protowire.ConsumeBytes(r)
				h.names = append(h.names, string(name))
			}
			r = r[n:]
		}
	}
	return nil
}
