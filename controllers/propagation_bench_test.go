package controllers_test

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

const (
	// benchDebounce is weft-controller's --debounce default
	// (cmd/weft-controller/main.go): the benchmarks run the controller as
	// it is deployed, not with the tests' shorter debounce.
	benchDebounce = 20 * time.Millisecond
	// minSamples is the fewest weight changes a run measures, so that the
	// 99th percentile is not simply the slowest change: with fewer
	// iterations than this (the default -benchtime=1s makes a few), the
	// benchmark makes more changes with the timer stopped.
	minSamples = 100
	// benchSA is the one service account of every benchmark pod, and
	// benchSpiffeID its identity, which the simulated proxies present.
	benchSA       = "bench"
	benchSpiffeID = "spiffe://cluster.local/ns/bench/sa/" + benchSA
)

// BenchmarkPropagation measures what a user of a canary tool waits for
// after the API write of a TrafficSplit weight change, with the controller
// in-process against a real API server, the controller's default debounce,
// and simulated Envoy proxies on delta ADS over mTLS that acknowledge
// every response:
//
//   - ack-p50-ms, ack-p99-ms: until every proxy has acknowledged the new
//     route configuration;
//   - programmed-p50-ms, programmed-p99-ms: until the TrafficSplit's
//     Programmed condition is True at the new generation, as a watch on
//     the API server sees it (what Flagger, Argo Rollouts and Argo CD wait
//     for);
//   - heap-MiB: the in-use heap of the test process after the changes,
//     after two collections;
//   - samples: the number of changes the percentiles are over;
//   - status-writes/change, status-refused/change: TrafficSplit status
//     updates the controller sent per change, and those the API server
//     refused (conflicts, retried after 25 ms, doubling up to a second);
//   - alloc-MiB/change: what the whole process allocated per change.
//
// The log line gives min, p50, p90, p99 and max of both times.
//
// Each change waits until every TrafficSplit is Programmed again before it
// writes, as a canary tool's steps do (they are seconds to minutes apart).
// Percentiles are nearest rank: p of n sorted samples is the
// ceil(p*n)-th, so with 100 samples p99 is the second slowest, not the
// slowest. Run it with -benchtime=100x (or more); shorter runs still make
// minSamples changes, the ones beyond b.N untimed.
//
// The simulated proxies share one TLS connection, which keeps what the
// benchmark measures to the controller's own work. The sub-benchmark with
// connections=2000 gives every proxy its own connection, as real proxies
// have; on one machine the 2000 client connections then run on the
// controller's cores too.
//
// The sub-benchmarks with callers=5 are the scoped shape: pods of five
// consecutive Services share a service account, and every Service has an
// AccessPolicy that lets in only the service account of the five Services
// before it. Each proxy is then sent the five Services it may call (and
// what their routes lead to), and a split's change reaches the ten
// proxies that call its Service: the ACK times end when those ten have
// acknowledged. The proxies connect over one connection per service
// account, as the server checks each node's identity.
func BenchmarkPropagation(b *testing.B) {
	for _, size := range []struct{ services, proxies, conns, callers int }{{100, 200, 1, 0}, {1000, 2000, 1, 0}, {1000, 2000, 2000, 0}, {1000, 2000, 0, 5}, {5000, 10000, 0, 5}} {
		name := fmt.Sprintf("services=%d,proxies=%d", size.services, size.proxies)
		if size.conns > 1 {
			name += fmt.Sprintf(",connections=%d", size.conns)
		}
		if size.callers > 0 {
			name += fmt.Sprintf(",callers=%d", size.callers)
		}
		b.Run(name, func(b *testing.B) {
			r := setupPropagation(b, size.services, size.proxies, false, size.callers)
			// Wait until every proxy that may reach the first split's
			// Service holds its route.
			r.acks.await(routeOf(r.splits[0]), r.holders)
			r.startProxies(b, size.conns, nil)
			if _, err := r.acks.waitAll(b.Context(), 10*time.Minute); err != nil {
				b.Fatal(err)
			}
			// Every change rebuilds the whole mesh and is pushed to every
			// proxy, whichever split it is; they take turns.
			r.measure(b, func(i int) (*meshv1alpha1.TrafficSplit, string) {
				ts := r.splits[i%len(r.splits)]
				return ts, routeOf(ts)
			})
		})
	}
}

// startProxies connects the simulated Envoy proxies, over conns
// connections (or, in the scoped shape, one per service account), with
// eds, when set, told of their endpoint acknowledgements.
func (r *propagationRun) startProxies(b *testing.B, conns int, eds *edsBoard) {
	var connOf func(n int) *grpc.ClientConn
	if r.callers == 0 {
		all := r.dial(b, conns, benchSpiffeID)
		connOf = func(n int) *grpc.ClientConn { return all[n%len(all)] }
	} else {
		perService := r.proxies / r.services
		bySA := map[string]*grpc.ClientConn{}
		connOf = func(n int) *grpc.ClientConn {
			sa := r.saOf(n / perService)
			if bySA[sa] == nil {
				bySA[sa] = r.dial(b, 1, "spiffe://cluster.local/ns/bench/sa/"+sa)[0]
			}
			return bySA[sa]
		}
	}
	for n := range r.proxies {
		if err := startDeltaProxy(b.Context(), connOf(n), fmt.Sprintf("p%d.bench", n), r.acks, eds); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPropagationProxyless is BenchmarkPropagation for proxyless gRPC
// clients (pods annotated weft.dev/inject: grpc-agent), which speak state
// of the world ADS. Every simulated client subscribes as grpc-go's xDS
// client does for a process with two channels: LDS for the two target
// listener names, then RDS, CDS and EDS for the names those resources
// name, and it acknowledges every response with the names it holds.
//
// Each client calls the canaried Service s0 (the apex of TrafficSplit
// ts0) and the Service after its own; every change is a weight change of
// ts0, so that every client must receive it. ack-p50-ms and ack-p99-ms
// end when every client has acknowledged an API listener of s0 whose
// bytes differ from the one it held before the write. The other metrics,
// percentiles and pacing are BenchmarkPropagation's.
func BenchmarkPropagationProxyless(b *testing.B) {
	for _, size := range []struct{ services, clients int }{{100, 200}, {1000, 2000}} {
		b.Run(fmt.Sprintf("services=%d,clients=%d", size.services, size.clients), func(b *testing.B) {
			r := setupPropagation(b, size.services, size.clients, true, 0)
			conn := r.dial(b, 1, benchSpiffeID)[0]
			canary := r.splits[0]
			target := listenerOf(canary.Spec.Service)
			r.acks.await(target, size.clients)
			resources := newResourceIndex()
			perService := size.clients / size.services
			for n := range size.clients {
				next := fmt.Sprintf("s%d", (n/perService+1)%size.services)
				targets := slices.Compact(slices.Sorted(slices.Values([]string{target, listenerOf(next)})))
				if err := startGRPCClient(b.Context(), conn, fmt.Sprintf("p%d.bench", n), targets, resources, r.acks); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := r.acks.waitAll(b.Context(), 10*time.Minute); err != nil {
				b.Fatal(err)
			}
			r.measure(b, func(int) (*meshv1alpha1.TrafficSplit, string) { return canary, target })
		})
	}
}

// routeOf is the route configuration Envoy proxies receive for a split's
// Service, and listenerOf the API listener a gRPC channel to a Service
// asks for.
func routeOf(ts *meshv1alpha1.TrafficSplit) string {
	return ts.Spec.Service + ".bench.svc.cluster.local:80"
}

func listenerOf(service string) string { return service + ".bench.svc.cluster.local:80" }

// propagationRun is one benchmark's mesh, its proxies' ACKs and the
// TrafficSplits' Programmed conditions as a watch sees them.
type propagationRun struct {
	h        *harness
	splits   []*meshv1alpha1.TrafficSplit
	services int
	proxies  int
	// holders is how many proxies hold each split's route: every proxy,
	// or in the scoped shape those that may call the split's Service.
	holders int
	// callers is the scoped shape's block of Services per service
	// account (0: one service account for all).
	callers int
	acks    *ackBoard
	status  *programmedBoard
}

// saOf is the service account of the pods of Service i.
func (r *propagationRun) saOf(i int) string {
	if r.callers == 0 {
		return benchSA
	}
	return fmt.Sprintf("sa%d", i/r.callers)
}

// setupPropagation starts the controller (mTLS on xDS, the default
// debounce) and creates the mesh: services Services, each with
// proxies/services pods behind it, all of one service account; one in five
// Services is the apex of a TrafficSplit onto itself and the next one. The
// pods are Envoy sidecars, or proxyless gRPC pods when proxyless is set.
// With callers > 0, the pods of each block of callers Services have their
// own service account, and every Service an AccessPolicy that lets in the
// service account of the block before its own.
func setupPropagation(b *testing.B, services, proxies int, proxyless bool, callers int) *propagationRun {
	h := startHarness(b, harnessOptions{debounce: benchDebounce})
	ctx := b.Context()
	h.create(b,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench", Labels: map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}}},
		&meshv1alpha1.MeshIdentity{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1alpha1.MeshIdentitySpec{
			TrustDomain: "cluster.local", IssuerRef: meshv1alpha1.IssuerReference{Name: "mesh-ca"},
		}},
	)
	var annotations map[string]string
	if proxyless {
		annotations = map[string]string{meshv1alpha1.AnnotationInject: meshv1alpha1.InjectGRPCAgent}
	}
	perService := proxies / services
	r := &propagationRun{h: h, services: services, proxies: proxies, holders: proxies, callers: callers, acks: newAckBoard()}
	blocks := 0
	if callers > 0 {
		blocks = services / callers
		r.holders = callers * perService
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range services {
		g.Go(func() error {
			var pods []*corev1.Pod
			for j := range perService {
				n := i*perService + j
				ip := fmt.Sprintf("10.%d.%d.%d", 100+n/65536, (n/256)%256, n%256)
				p, err := h.tryAnnotatedPod(gctx, "bench", fmt.Sprintf("p%d", n), r.saOf(i), ip, map[string]string{"app": fmt.Sprintf("s%d", i)}, annotations)
				if err != nil {
					return err
				}
				pods = append(pods, p)
			}
			if callers > 0 {
				from := fmt.Sprintf("sa%d", (i/callers+blocks-1)%blocks)
				ap := &meshv1alpha1.AccessPolicy{
					ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("s%d", i)},
					Spec: meshv1alpha1.AccessPolicySpec{
						TargetRef: meshv1alpha1.ServiceTargetReference{Kind: "Service", Name: fmt.Sprintf("s%d", i)},
						Action:    meshv1alpha1.ActionAllow,
						Rules:     []meshv1alpha1.AccessRule{{From: []meshv1alpha1.AccessSource{{ServiceAccount: &meshv1alpha1.ServiceAccountRef{Name: from}}}}},
					},
				}
				if err := h.c.Create(gctx, ap); err != nil {
					return fmt.Errorf("creating access policy %s: %w", ap.Name, err)
				}
			}
			return h.tryService(gctx, "bench", fmt.Sprintf("s%d", i), "", map[string]string{"app": fmt.Sprintf("s%d", i)}, pods...)
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	for i := 0; i+1 < services; i += 5 {
		ts := &meshv1alpha1.TrafficSplit{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("ts%d", i)},
			Spec: meshv1alpha1.TrafficSplitSpec{Service: fmt.Sprintf("s%d", i), Backends: []meshv1alpha1.TrafficSplitBackend{
				{Service: fmt.Sprintf("s%d", i), Weight: 90}, {Service: fmt.Sprintf("s%d", i+1), Weight: 10},
			}},
		}
		h.create(b, ts)
		r.splits = append(r.splits, ts)
	}
	var err error
	if r.status, err = watchProgrammed(b, h); err != nil {
		b.Fatal(err)
	}
	return r
}

// dial opens conns connections to the xDS server with the client
// certificate of the pods' service account.
//
// The server lets a stream have a node's configuration only when the
// connection's client certificate is that pod's service-account identity
// (MeshReconciler.Authorize), and one connection presents one certificate.
// Giving every benchmark pod the same service account lets the proxies
// share one connection, as in the benchmark before TLS, so that the
// measurement stays the controller's work rather than that of thousands of
// client transports on the same two cores. The mesh keeps its shape: proxy
// groups are keyed by the Services a pod serves as well as by its service
// account, so there is still one group per Service.
//
// With more than one connection, client buffers are small: they live in
// the process whose heap is measured, and a real proxy's buffers are not
// the controller's.
func (r *propagationRun) dial(b *testing.B, conns int, spiffeID string) []*grpc.ClientConn {
	tlsCfg, err := r.h.ca.ClientTLS(spiffeID)
	if err != nil {
		b.Fatal(err)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256 << 20))}
	if conns > 1 {
		opts = append(opts, grpc.WithReadBufferSize(4<<10), grpc.WithWriteBufferSize(4<<10))
	}
	var out []*grpc.ClientConn
	for range conns {
		conn, err := grpc.NewClient(r.h.xdsAddr, opts...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = conn.Close() })
		out = append(out, conn)
	}
	return out
}

// measure makes weight changes, each of the split pick names, and reports
// the metrics described on BenchmarkPropagation. awaited is the resource
// every proxy must acknowledge for a change to have reached it.
func (r *propagationRun) measure(b *testing.B, pick func(i int) (ts *meshv1alpha1.TrafficSplit, awaited string)) {
	ctx := b.Context()
	if err := r.status.waitSettled(ctx, 10*time.Minute); err != nil {
		b.Fatal(err)
	}
	var toAck, toProgrammed []time.Duration
	change := func(i int) {
		ts, awaited := pick(i)
		var cur meshv1alpha1.TrafficSplit
		if err := r.h.c.Get(ctx, client.ObjectKeyFromObject(ts), &cur); err != nil {
			b.Fatal(err)
		}
		orig := cur.DeepCopy()
		// A weight the split does not have now, so every write is a change.
		w := cur.Spec.Backends[0].Weight%95 + 1
		cur.Spec.Backends[0].Weight, cur.Spec.Backends[1].Weight = w, 100-w
		r.acks.await(awaited, r.holders)
		start := time.Now()
		// A merge patch of the spec, as kubectl or a canary controller
		// would send; it does not race the status writer.
		if err := r.h.c.Patch(ctx, &cur, client.MergeFrom(orig)); err != nil {
			b.Fatal(err)
		}
		acked, err := r.acks.waitAll(ctx, 2*time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		programmed, err := r.status.waitProgrammed(ctx, cur.Name, cur.Generation, 2*time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		toAck = append(toAck, acked.Sub(start))
		toProgrammed = append(toProgrammed, programmed.Sub(start))
	}
	settle := func() {
		if err := r.status.waitSettled(ctx, 2*time.Minute); err != nil {
			b.Fatal(err)
		}
	}

	// WEFT_BENCH_CPUPROFILE profiles the measured changes only, not the
	// setup.
	stopProfile := xdstest.ProfileCPU(b)
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
	writesBefore, failedBefore := r.statusWrites()
	i := 0
	for b.Loop() {
		if i > 0 {
			// Waiting for the previous change's status to settle is not
			// part of this one.
			b.StopTimer()
			settle()
			b.StartTimer()
		}
		change(i)
		i++
	}
	for ; i < minSamples; i++ {
		settle()
		change(i)
	}
	stopProfile()
	writes, failed := r.statusWrites()
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
	b.ReportMetric(nearestRank(toAck, 0.50), "ack-p50-ms")
	b.ReportMetric(nearestRank(toAck, 0.99), "ack-p99-ms")
	b.ReportMetric(nearestRank(toProgrammed, 0.50), "programmed-p50-ms")
	b.ReportMetric(nearestRank(toProgrammed, 0.99), "programmed-p99-ms")
	b.ReportMetric(float64(len(toAck)), "samples")
	// Status updates of TrafficSplits the controller made per change, and
	// those the API server refused (a conflict waits a second for the
	// writer's retry).
	b.ReportMetric((writes-writesBefore)/float64(len(toAck)), "status-writes/change")
	b.ReportMetric((failed-failedBefore)/float64(len(toAck)), "status-refused/change")
	b.Logf("%d changes: write → last ACK %s; write → Programmed %s", len(toAck), spread(toAck), spread(toProgrammed))
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
	// What the process (controller, API server client and simulated
	// proxies together) allocated per change.
	b.ReportMetric(float64(ms.TotalAlloc-before.TotalAlloc)/float64(len(toAck))/(1<<20), "alloc-MiB/change")
}

// statusWrites counts the TrafficSplit status updates the controller
// wrote and those that failed.
func (r *propagationRun) statusWrites() (ok, failed float64) {
	m := r.h.mesh.Metrics.StatusWrites
	return testutil.ToFloat64(m.WithLabelValues("TrafficSplit", "ok")), testutil.ToFloat64(m.WithLabelValues("TrafficSplit", "error"))
}

// spread summarises samples for the log: min, nearest-rank p50, p90 and
// p99, max.
func spread(samples []time.Duration) string {
	s := slices.Sorted(slices.Values(samples))
	ms := func(p float64) string { return fmt.Sprintf("%.1f", nearestRank(s, p)) }
	return fmt.Sprintf("min %s, p50 %s, p90 %s, p99 %s, max %s ms", ms(0), ms(0.5), ms(0.9), ms(0.99), ms(1))
}

// nearestRank is the p-th percentile of samples in milliseconds by the
// nearest-rank method: the ceil(p*n)-th smallest of n samples.
func nearestRank(samples []time.Duration, p float64) float64 {
	s := slices.Sorted(slices.Values(samples))
	// The epsilon keeps 0.99*100, which is not exactly 99 in floating
	// point, at rank 99.
	rank := int(math.Ceil(p*float64(len(s)) - 1e-9))
	rank = min(max(rank, 1), len(s))
	return float64(s[rank-1].Microseconds()) / 1000
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

// programmedBoard follows every benchmark TrafficSplit through a watch on
// the API server, as a canary tool or GitOps controller would, and notes
// when each was first seen Programmed=True at its current generation.
type programmedBoard struct {
	mu      sync.Mutex
	splits  map[string]*splitState
	changed chan struct{}
	err     error
}

type splitState struct {
	generation int64
	// programmed is the generation the Programmed condition was last seen
	// True at (0 when it is not True at the current one), and at when that
	// was first seen.
	programmed int64
	at         time.Time
}

// watchProgrammed lists the benchmark's TrafficSplits and watches them
// until the benchmark ends, straight from the API server (not through the
// proxy the controller uses).
func watchProgrammed(b *testing.B, h *harness) (*programmedBoard, error) {
	wc, err := client.NewWithWatch(h.env.Config, client.Options{Scheme: h.env.Scheme})
	if err != nil {
		return nil, err
	}
	ctx := b.Context()
	var list meshv1alpha1.TrafficSplitList
	if err := wc.List(ctx, &list, client.InNamespace("bench")); err != nil {
		return nil, err
	}
	p := &programmedBoard{splits: map[string]*splitState{}, changed: make(chan struct{})}
	now := time.Now()
	for i := range list.Items {
		p.observe(&list.Items[i], now)
	}
	lw := &toolscache.ListWatch{WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
		return wc.Watch(ctx, &meshv1alpha1.TrafficSplitList{}, client.InNamespace("bench"), &client.ListOptions{Raw: &opts})
	}}
	// The retry watcher resumes from the last resourceVersion it saw if
	// the API server ends the watch.
	rw, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, lw)
	if err != nil {
		return nil, err
	}
	b.Cleanup(rw.Stop)
	go func() {
		for ev := range rw.ResultChan() {
			now := time.Now()
			switch ev.Type {
			case watch.Added, watch.Modified:
				if ts, ok := ev.Object.(*meshv1alpha1.TrafficSplit); ok {
					p.observe(ts, now)
				}
			case watch.Error:
				p.fail(fmt.Errorf("watching TrafficSplits: %v", ev.Object))
				return
			}
		}
	}()
	return p, nil
}

func (p *programmedBoard) observe(ts *meshv1alpha1.TrafficSplit, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.splits[ts.Name]
	if st == nil {
		st = &splitState{}
		p.splits[ts.Name] = st
	}
	st.generation = ts.Generation
	c := meta.FindStatusCondition(ts.Status.Conditions, meshv1alpha1.ConditionProgrammed)
	switch {
	case c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != ts.Generation:
		st.programmed = 0
	case st.programmed != ts.Generation:
		st.programmed, st.at = ts.Generation, at
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *programmedBoard) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err = err
	close(p.changed)
	p.changed = make(chan struct{})
}

// wait waits until cond holds, checked after every event.
func (p *programmedBoard) wait(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		p.mu.Lock()
		ok, ch, err := cond(), p.changed, p.err
		p.mu.Unlock()
		switch {
		case ok:
			return nil
		case err != nil:
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		}
	}
}

// waitProgrammed returns when the split was first seen Programmed=True at
// generation gen.
func (p *programmedBoard) waitProgrammed(ctx context.Context, name string, gen int64, timeout time.Duration) (time.Time, error) {
	var at time.Time
	err := p.wait(ctx, timeout, fmt.Sprintf("TrafficSplit %s Programmed at generation %d", name, gen), func() bool {
		st := p.splits[name]
		if st == nil || st.programmed != gen {
			return false
		}
		at = st.at
		return true
	})
	return at, err
}

// waitSettled waits until every split is Programmed=True at its
// generation: the status of the last change is written, and the controller
// has nothing left to write.
func (p *programmedBoard) waitSettled(ctx context.Context, timeout time.Duration) error {
	return p.wait(ctx, timeout, "every TrafficSplit Programmed", func() bool {
		for _, st := range p.splits {
			if st.programmed != st.generation {
				return false
			}
		}
		return true
	})
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
	last   time.Time
	err    error
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
	if a.err != nil {
		close(a.done)
	}
	a.mu.Unlock()
}

// record notes that node acknowledged a response with the named
// resources, as it sent the ACK.
func (a *ackBoard) record(node string, names []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil || len(a.acked) >= a.want || !slices.Contains(names, a.target) {
		return
	}
	a.acked[node] = true
	if len(a.acked) == a.want {
		a.last = time.Now()
		close(a.done)
	}
}

// fail ends waiting with err: a simulated client failed.
func (a *ackBoard) fail(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err == nil {
		a.err = err
	}
	select {
	case <-a.done:
	default:
		close(a.done)
	}
}

// waitAll waits until every awaited proxy acknowledged the resource and
// returns when the last one did.
func (a *ackBoard) waitAll(ctx context.Context, timeout time.Duration) (time.Time, error) {
	a.mu.Lock()
	done := a.done
	a.mu.Unlock()
	select {
	case <-done:
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.last, a.err
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	case <-time.After(timeout):
		a.mu.Lock()
		defer a.mu.Unlock()
		return time.Time{}, fmt.Errorf("only %d of %d proxies acknowledged %s", len(a.acked), a.want, a.target)
	}
}

// startDeltaProxy opens a delta ADS stream and acknowledges every
// response, like a proxy that applies configuration instantly. Like
// Envoy, it subscribes to every listener, cluster and secret, and to the
// endpoints of the clusters it was sent, by name. It reads of each
// response only what an ACK needs (type, nonce, resource names), so that
// the simulated proxies, which share the controller's cores, spend little
// of them.
func startDeltaProxy(ctx context.Context, conn *grpc.ClientConn, node string, acks *ackBoard, eds *edsBoard) error {
	desc := &grpc.StreamDesc{StreamName: "DeltaAggregatedResources", ServerStreams: true, ClientStreams: true}
	stream, err := conn.NewStream(ctx, desc, discoverygrpc.AggregatedDiscoveryService_DeltaAggregatedResources_FullMethodName, grpc.ForceCodecV2(ackCodec{}))
	if err != nil {
		return fmt.Errorf("opening delta stream: %w", err)
	}
	for _, typ := range []string{xdstest.ClusterType, xdstest.ListenerType, xdstest.RouteType, xdstest.SecretType} {
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
			if resp.typeURL == xdstest.EndpointType {
				if eds != nil {
					eds.record(node, resp.names)
				}
				continue
			}
			if resp.typeURL == xdstest.ClusterType && len(resp.names) > 0 {
				// Subscribing to a cluster that has no endpoints (the
				// passthrough) is harmless: nothing comes.
				if err := stream.SendMsg(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: xdstest.EndpointType, ResourceNamesSubscribe: resp.names}); err != nil {
					return
				}
				continue
			}
			acks.record(node, resp.names)
		}
	}()
	return nil
}

// deltaHeader is what a simulated proxy reads of a delta response: its
// type, its nonce and, for route configurations and endpoints (the types
// the benchmarks await) and clusters (whose endpoints it subscribes to),
// the names of its resources.
type deltaHeader struct {
	typeURL, nonce string
	names          []string
}

// sotwResponse is what a simulated gRPC client reads of a state of the
// world response: its type, version, nonce and the bytes of each resource.
type sotwResponse struct {
	typeURL, version, nonce string
	resources               [][]byte
}

// ackCodec marshals requests as protobuf and reads responses into a
// deltaHeader or a sotwResponse.
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
	var buf []byte
	if len(data) == 1 {
		buf = data[0].ReadOnlyData()
	} else {
		buf = data.Materialize()
	}
	switch h := v.(type) {
	case *deltaHeader:
		return h.unmarshal(buf)
	case *sotwResponse:
		return h.unmarshal(buf)
	}
	return fmt.Errorf("ackCodec: cannot unmarshal into %T", v)
}

// bytesFields calls f with every length-delimited field of a message.
func bytesFields(b []byte, f func(num protowire.Number, v []byte)) error {
	for len(b) > 0 {
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
		f(num, v)
	}
	return nil
}

func (h *deltaHeader) unmarshal(buf []byte) error {
	// DeltaDiscoveryResponse: resources = 2 (Resource.name = 3),
	// type_url = 4, nonce = 5. Resources come before the type URL.
	var resources [][]byte
	err := bytesFields(buf, func(num protowire.Number, v []byte) {
		switch num {
		case 2:
			resources = append(resources, v)
		case 4:
			h.typeURL = string(v)
		case 5:
			h.nonce = string(v)
		}
	})
	if err != nil || h.typeURL == xdstest.ListenerType || h.typeURL == xdstest.SecretType {
		return err
	}
	for _, r := range resources {
		if err := bytesFields(r, func(num protowire.Number, v []byte) {
			if num == 3 {
				h.names = append(h.names, string(v))
			}
		}); err != nil {
			return err
		}
	}
	return nil
}

func (h *sotwResponse) unmarshal(buf []byte) error {
	// DiscoveryResponse: version_info = 1, resources = 2 (Any.value = 2),
	// type_url = 4, nonce = 5.
	return bytesFields(buf, func(num protowire.Number, v []byte) {
		switch num {
		case 1:
			h.version = string(v)
		case 2:
			var value []byte
			_ = bytesFields(v, func(num protowire.Number, v []byte) {
				if num == 2 {
					value = v
				}
			})
			// gRPC reuses data once Unmarshal returns.
			h.resources = append(h.resources, slices.Clone(value))
		case 4:
			h.typeURL = string(v)
		case 5:
			h.nonce = string(v)
		}
	})
}

// resourceInfo is what a gRPC client needs of a resource: its name and
// the names it refers to, by the type they are fetched with.
type resourceInfo struct {
	name string
	refs map[string][]string
}

// resourceIndex decodes each distinct resource once for all simulated
// clients (they receive the same bytes), so that 2000 of them do not spend
// the controller's cores decoding the same listener.
type resourceIndex struct {
	mu    sync.Mutex
	infos map[string]map[string]*resourceInfo // type URL -> bytes -> info
}

func newResourceIndex() *resourceIndex {
	return &resourceIndex{infos: map[string]map[string]*resourceInfo{}}
}

func (x *resourceIndex) info(typeURL string, b []byte) (*resourceInfo, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if in, ok := x.infos[typeURL][string(b)]; ok {
		return in, nil
	}
	in, err := decodeResource(typeURL, b)
	if err != nil {
		return nil, err
	}
	if x.infos[typeURL] == nil {
		x.infos[typeURL] = map[string]*resourceInfo{}
	}
	x.infos[typeURL][string(b)] = in
	return in, nil
}

// decodeResource reads what grpc-go's xDS client follows: a listener's
// route configuration (RDS) or the clusters of its inline routes, a route
// configuration's clusters, a cluster's EDS service name.
func decodeResource(typeURL string, b []byte) (*resourceInfo, error) {
	in := &resourceInfo{refs: map[string][]string{}}
	clustersOf := func(rc *routev3.RouteConfiguration) {
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				a := rt.GetRoute()
				if c := a.GetCluster(); c != "" {
					in.refs[xdstest.ClusterType] = append(in.refs[xdstest.ClusterType], c)
				}
				for _, wc := range a.GetWeightedClusters().GetClusters() {
					in.refs[xdstest.ClusterType] = append(in.refs[xdstest.ClusterType], wc.GetName())
				}
			}
		}
	}
	switch typeURL {
	case xdstest.ListenerType:
		var l listenerv3.Listener
		if err := proto.Unmarshal(b, &l); err != nil {
			return nil, err
		}
		in.name = l.GetName()
		var hcm hcmv3.HttpConnectionManager
		if a := l.GetApiListener().GetApiListener(); a != nil {
			if err := a.UnmarshalTo(&hcm); err != nil {
				return nil, err
			}
		}
		if rds := hcm.GetRds().GetRouteConfigName(); rds != "" {
			in.refs[xdstest.RouteType] = []string{rds}
		}
		clustersOf(hcm.GetRouteConfig())
	case xdstest.RouteType:
		var rc routev3.RouteConfiguration
		if err := proto.Unmarshal(b, &rc); err != nil {
			return nil, err
		}
		in.name = rc.GetName()
		clustersOf(&rc)
	case xdstest.ClusterType:
		var c clusterv3.Cluster
		if err := proto.Unmarshal(b, &c); err != nil {
			return nil, err
		}
		in.name = c.GetName()
		if c.GetType() == clusterv3.Cluster_EDS {
			in.refs[xdstest.EndpointType] = []string{cmp.Or(c.GetEdsClusterConfig().GetServiceName(), c.GetName())}
		}
	case xdstest.EndpointType:
		var e endpointv3.ClusterLoadAssignment
		if err := proto.Unmarshal(b, &e); err != nil {
			return nil, err
		}
		in.name = e.GetClusterName()
	default:
		return nil, fmt.Errorf("unexpected resource type %s", typeURL)
	}
	return in, nil
}

// grpcClient is one simulated proxyless gRPC process on a state of the
// world ADS stream.
type grpcClient struct {
	node      string
	stream    grpc.ClientStream
	index     *resourceIndex
	acks      *ackBoard
	subs      map[string][]string
	held      map[string]map[string]*resourceInfo
	versions  map[string]string
	nonces    map[string]string
	firstSent bool
}

// grpcTypes are the types a gRPC client fetches, each named by the one
// before it (a listener also names clusters directly when its routes are
// inline).
var grpcTypes = []string{xdstest.ListenerType, xdstest.RouteType, xdstest.ClusterType, xdstest.EndpointType}

// startGRPCClient subscribes as grpc-go's xDS client does for channels to
// targets: listeners by name, then what they name. Every request carries
// the full list of names of its type, as state of the world requires; the
// node is sent on the first request only. It reads responses with
// ackCodec and resourceIndex, and records on acks the listeners whose
// bytes changed, as it acknowledges them.
func startGRPCClient(ctx context.Context, conn *grpc.ClientConn, node string, targets []string, index *resourceIndex, acks *ackBoard) error {
	desc := &grpc.StreamDesc{StreamName: "StreamAggregatedResources", ServerStreams: true, ClientStreams: true}
	stream, err := conn.NewStream(ctx, desc, discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResources_FullMethodName, grpc.ForceCodecV2(ackCodec{}))
	if err != nil {
		return fmt.Errorf("opening ADS stream: %w", err)
	}
	c := &grpcClient{
		node: node, stream: stream, index: index, acks: acks,
		subs: map[string][]string{}, held: map[string]map[string]*resourceInfo{},
		versions: map[string]string{}, nonces: map[string]string{},
	}
	if err := c.subscribe(xdstest.ListenerType, targets); err != nil {
		return err
	}
	go func() {
		for {
			var resp sotwResponse
			if err := stream.RecvMsg(&resp); err != nil {
				return
			}
			if err := c.handle(&resp); err != nil {
				if ctx.Err() == nil {
					acks.fail(fmt.Errorf("gRPC client %s: %w", node, err))
				}
				return
			}
		}
	}()
	return nil
}

func (c *grpcClient) send(typeURL string) error {
	req := &discoverygrpc.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: c.subs[typeURL], VersionInfo: c.versions[typeURL], ResponseNonce: c.nonces[typeURL]}
	if !c.firstSent {
		req.Node = &corev3.Node{Id: c.node, UserAgentName: "gRPC Go", UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: "1.85.0"}}
		c.firstSent = true
	}
	if err := c.stream.SendMsg(req); err != nil {
		return fmt.Errorf("sending %s: %w", typeURL, err)
	}
	return nil
}

func (c *grpcClient) subscribe(typeURL string, names []string) error {
	c.subs[typeURL] = names
	return c.send(typeURL)
}

func (c *grpcClient) handle(resp *sotwResponse) error {
	typ := resp.typeURL
	got := make(map[string]*resourceInfo, len(resp.resources))
	for _, b := range resp.resources {
		in, err := c.index.info(typ, b)
		if err != nil {
			return err
		}
		got[in.name] = in
	}
	// Listeners and clusters come whole in every response; a route
	// configuration or endpoint assignment left out of one is unchanged.
	if typ == xdstest.RouteType || typ == xdstest.EndpointType {
		for name, in := range c.held[typ] {
			if _, ok := got[name]; !ok && slices.Contains(c.subs[typ], name) {
				got[name] = in
			}
		}
	}
	var changed []string
	if typ == xdstest.ListenerType {
		for name, in := range got {
			if c.held[typ][name] != in {
				changed = append(changed, name)
			}
		}
	}
	c.held[typ] = got
	c.versions[typ], c.nonces[typ] = resp.version, resp.nonce
	if err := c.send(typ); err != nil {
		return err
	}
	c.acks.record(c.node, changed)
	// Subscribe to what the resources held now name.
	for _, next := range grpcTypes[1:] {
		var want []string
		for _, held := range c.held {
			for _, in := range held {
				want = append(want, in.refs[next]...)
			}
		}
		slices.Sort(want)
		want = slices.Compact(want)
		if !slices.Equal(want, c.subs[next]) {
			if err := c.subscribe(next, want); err != nil {
				return err
			}
		}
	}
	return nil
}

// TestNearestRank: the benchmarks' percentiles are nearest rank, so that
// with 100 samples p99 is the second slowest and p50 the 50th.
func TestNearestRank(t *testing.T) {
	var samples []time.Duration
	for i := 100; i >= 1; i-- {
		samples = append(samples, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want float64
	}{{0, 1}, {0.5, 50}, {0.9, 90}, {0.99, 99}, {1, 100}} {
		if got := nearestRank(samples, c.p); got != c.want {
			t.Errorf("nearestRank(1..100 ms, %v) = %v ms, want %v", c.p, got, c.want)
		}
	}
	if got := nearestRank(samples[:7], 0.99); got != 100 {
		t.Errorf("with 7 samples p99 is the slowest (100 ms); got %v", got)
	}
}
