package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/testenv"
	"github.com/weft-mesh/weft/internal/workload"
)

// BenchmarkSideBySide runs weft-controller and istiod (pilot-discovery,
// built from the istio.io/istio module) one after the other against one
// API server holding the same mesh: WEFT_BENCH_SERVICES Services (default
// 500) in namespace bench, two pods behind each, and a GAMMA HTTPRoute on
// every fifth Service splitting it 90/10 with the next one. Each control
// plane gets the same number of simulated Envoy proxies (one per pod) on
// delta ADS over plaintext gRPC (weft-controller with --xds-insecure,
// istiod on its plaintext port), which subscribe as Envoy does: every
// listener and cluster, the route configurations the listeners name and
// the endpoints of the clusters, and acknowledge every response.
//
// Then WEFT_BENCH_CHANGES (default 50) weight changes of the first
// HTTPRoute are written, one after another, each when the last settled.
// For each control plane the benchmark reports:
//
//   - <cp>-ack-p50-ms, <cp>-ack-p99-ms: from the write until every proxy
//     acknowledged a new version of the route configuration that carries
//     the route (Weft: the Service's own; istiod: the port's, "80");
//   - <cp>-cpu-s: CPU seconds the process used during the changes, and
//     <cp>-cpu-total-s from its start (including the first push to every
//     proxy);
//   - <cp>-rss-peak-MiB: its peak resident set (VmHWM);
//   - <cp>-bytes/proxy: what one proxy received until its first complete
//     configuration, and <cp>-bytes/proxy/change what it received per
//     change.
//
// Both run with their own defaults; notably istiod debounces changes for
// 100 ms (PILOT_DEBOUNCE_AFTER) and Weft for 20 ms (--debounce).
// WEFT_BENCH_ISTIOD_ENV adds environment variables to istiod
// (space-separated KEY=VALUE); WEFT_BENCH_PLANES=weft (or istiod) runs one
// of the two.
func BenchmarkSideBySide(b *testing.B) {
	services := envInt(b, "WEFT_BENCH_SERVICES", 500)
	changes := envInt(b, "WEFT_BENCH_CHANGES", 50)
	proxies := 2 * services
	bin := filepath.Join(testenv.RepoRoot(), "bin")
	weftBin, istiodBin := filepath.Join(bin, "weft-controller"), filepath.Join(bin, "pilot-discovery")
	build(b, testenv.RepoRoot(), weftBin, "./cmd/weft-controller")
	build(b, ".", istiodBin, "istio.io/istio/pilot/cmd/pilot-discovery")

	istioCRDs := filepath.Join(moduleDir(b, "istio.io/istio"), "manifests", "charts", "base", "files", "crd-all.gen.yaml")
	env := testenv.Start(b, func(e *envtest.Environment) {
		e.CRDDirectoryPaths = append(e.CRDDirectoryPaths, istioCRDs)
	})
	kubeconfig := filepath.Join(b.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.Environment().KubeConfig, 0o600); err != nil {
		b.Fatal(err)
	}
	m := createMesh(b, env.Client, services)

	istiod := istiodPlane(istiodBin)
	istiod.args = istiodArgs(b, kubeconfig)
	only := os.Getenv("WEFT_BENCH_PLANES") // e.g. "weft": run one of them
	for _, cp := range []controlPlane{weftPlane(weftBin), istiod} {
		if only != "" && !slices.Contains(strings.Split(only, ","), cp.name) {
			continue
		}
		if !b.Run(cp.name, func(b *testing.B) {
			r := runPlane(b, cp, kubeconfig, m, proxies, changes)
			b.ReportMetric(nearestRank(r.acks, 0.50), "ack-p50-ms")
			b.ReportMetric(nearestRank(r.acks, 0.99), "ack-p99-ms")
			b.ReportMetric(r.cpuChanges, "cpu-s")
			b.ReportMetric(r.cpuTotal, "cpu-total-s")
			b.ReportMetric(r.rssPeakMiB, "rss-peak-MiB")
			b.ReportMetric(r.bytesPerProxy, "bytes/proxy")
			b.ReportMetric(r.bytesPerChange, "bytes/proxy/change")
			b.ReportMetric(float64(len(r.acks)), "samples")
			b.Logf("%s: %d changes, write → last ACK %s; first config %.0f bytes/proxy; %.1f CPU s during the changes, %.1f in all; peak RSS %.0f MiB",
				cp.name, len(r.acks), spread(r.acks), r.bytesPerProxy, r.cpuChanges, r.cpuTotal, r.rssPeakMiB)
		}) {
			b.FailNow()
		}
	}
}

// mesh is what createMesh made.
type mesh struct {
	services int
	pods     []podInfo
	route    *gwapiv1.HTTPRoute
}

type podInfo struct{ name, ip, service string }

func createMesh(b *testing.B, c client.Client, services int) *mesh {
	ctx := b.Context()
	for _, ns := range []*corev1.Namespace{
		// Weft meshes the pods of namespaces labelled for injection;
		// istiod configures whatever proxy connects.
		{ObjectMeta: metav1.ObjectMeta{Name: "bench", Labels: map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled, "istio-injection": "enabled"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}},
	} {
		if err := c.Create(ctx, ns); err != nil {
			b.Fatal(err)
		}
	}
	m := &mesh{services: services}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range services {
		g.Go(func() error {
			name := fmt.Sprintf("s%d", i)
			labels := map[string]string{"app": name}
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
				Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{
					Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP,
				}}},
			}
			if err := c.Create(gctx, svc); err != nil {
				return err
			}
			es := &discoveryv1.EndpointSlice{
				ObjectMeta:  metav1.ObjectMeta{Namespace: "bench", Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
			}
			for j := range 2 {
				n := 2*i + j
				p := podInfo{name: fmt.Sprintf("p%d", n), ip: fmt.Sprintf("10.%d.%d.%d", 100+n/65536, (n/256)%256, n%256), service: name}
				pod := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: p.name, Labels: labels},
					// Injected pods, as in a cluster: with a proxy
					// container (what Weft's sidecar audit looks for).
					Spec: corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{
						Name: "app", Image: "example/app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					}, {
						Name: workload.ProxyContainerName, Image: "example/proxy",
					}}},
				}
				if err := c.Create(gctx, pod); err != nil {
					return err
				}
				pod.Status = corev1.PodStatus{
					Phase: corev1.PodRunning, PodIP: p.ip, PodIPs: []corev1.PodIP{{IP: p.ip}},
					Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
				}
				if err := c.Status().Update(gctx, pod); err != nil {
					return err
				}
				es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
					Addresses:  []string{p.ip},
					Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
					TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "bench", Name: p.name},
				})
				mu.Lock()
				m.pods = append(m.pods, p)
				mu.Unlock()
			}
			if err := c.Create(gctx, es); err != nil {
				return err
			}
			if i%5 != 0 || i+1 >= services {
				return nil
			}
			hr := &gwapiv1.HTTPRoute{
				ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
				Spec: gwapiv1.HTTPRouteSpec{
					CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{{
						Group: ptr.To(gwapiv1.Group("")), Kind: ptr.To(gwapiv1.Kind("Service")), Name: gwapiv1.ObjectName(name), Port: ptr.To(gwapiv1.PortNumber(80)),
					}}},
					Rules: []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{
						backend(name, 90), backend(fmt.Sprintf("s%d", i+1), 10),
					}}},
				},
			}
			if err := c.Create(gctx, hr); err != nil {
				return err
			}
			if i == 0 {
				mu.Lock()
				m.route = hr
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	slices.SortFunc(m.pods, func(a, b podInfo) int { return strings.Compare(a.name, b.name) })
	return m
}

func backend(name string, weight int32) gwapiv1.HTTPBackendRef {
	return gwapiv1.HTTPBackendRef{BackendRef: gwapiv1.BackendRef{
		BackendObjectReference: gwapiv1.BackendObjectReference{Name: gwapiv1.ObjectName(name), Port: ptr.To(gwapiv1.PortNumber(80))},
		Weight:                 ptr.To(weight),
	}}
}

// result is what runPlane measured.
type result struct {
	acks                          []time.Duration
	cpuChanges, cpuTotal          float64
	rssPeakMiB                    float64
	bytesPerProxy, bytesPerChange float64
}

// runPlane starts the control plane, connects the proxies, waits for the
// first complete configuration of each and makes the weight changes.
func runPlane(b *testing.B, cp controlPlane, kubeconfig string, m *mesh, proxies, changes int) result {
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	xdsAddr := freeAddr(b)
	logDir := os.Getenv("WEFT_BENCH_LOGDIR") // kept after the run when set
	if logDir == "" {
		logDir = b.TempDir()
	}
	logPath := filepath.Join(logDir, cp.name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, cp.binary, cp.args(xdsAddr, freeAddr)...)
	cmd.Env = append(append(os.Environ(), "KUBECONFIG="+kubeconfig), cp.env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	started := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cancel()
		_ = cmd.Wait()
	}()
	fail := func(format string, args ...any) {
		b.Helper()
		tail, _ := os.ReadFile(logPath)
		if len(tail) > 4000 {
			tail = tail[len(tail)-4000:]
		}
		b.Fatalf("%s: %s\n--- end of its log:\n%s", cp.name, fmt.Sprintf(format, args...), tail)
	}
	if err := waitListening(ctx, xdsAddr, 3*time.Minute); err != nil {
		fail("xDS port never opened: %v", err)
	}

	board := newBoard(cp.awaited)
	conn, err := dialPlain(xdsAddr)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	// Counted from the first response: proxies that connect early are
	// answered before the last one connects.
	board.await(proxies)
	clients := make([]*proxy, 0, proxies)
	for _, p := range m.pods[:proxies] {
		px, err := startProxy(ctx, conn, cp.node(p), cp.metadata(p), board)
		if err != nil {
			fail("proxy %s: %v", p.name, err)
		}
		clients = append(clients, px)
	}
	if _, err := board.wait(ctx, 3*time.Minute); err != nil {
		fail("first configuration: %v", err)
	}
	// Let the control plane settle (late pushes of the start-up), then
	// count from here.
	time.Sleep(2 * time.Second)
	var initial int64
	for _, px := range clients {
		initial += px.bytes.Load()
	}
	cpuBefore, err := cpuSeconds(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	var acks []time.Duration
	c := clientFor(b, kubeconfig)
	for i := range changes {
		var cur gwapiv1.HTTPRoute
		if err := c.Get(ctx, client.ObjectKeyFromObject(m.route), &cur); err != nil {
			b.Fatal(err)
		}
		orig := cur.DeepCopy()
		w := int32(i%90 + 5)
		if w == *cur.Spec.Rules[0].BackendRefs[0].Weight {
			w++
		}
		cur.Spec.Rules[0].BackendRefs[0].Weight = ptr.To(w)
		cur.Spec.Rules[0].BackendRefs[1].Weight = ptr.To(100 - w)
		board.await(proxies)
		start := time.Now()
		if err := c.Patch(ctx, &cur, client.MergeFrom(orig)); err != nil {
			b.Fatal(err)
		}
		last, err := board.wait(ctx, 2*time.Minute)
		if err != nil {
			fail("change %d: %v", i, err)
		}
		acks = append(acks, last.Sub(start))
		// The next canary step comes later; let this one's pushes end.
		time.Sleep(200 * time.Millisecond)
	}
	cpuAfter, err := cpuSeconds(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	var total int64
	for _, px := range clients {
		total += px.bytes.Load()
	}
	rss, err := peakRSSMiB(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%s ran %s; log %s; write → last ACK of each change in order: %v", cp.name, time.Since(started).Round(time.Second), logPath, acks)
	return result{
		acks:           acks,
		cpuChanges:     cpuAfter - cpuBefore,
		cpuTotal:       cpuAfter,
		rssPeakMiB:     rss,
		bytesPerProxy:  float64(initial) / float64(proxies),
		bytesPerChange: float64(total-initial) / float64(proxies) / float64(changes),
	}
}

func build(b *testing.B, dir, out, pkg string) {
	b.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building %s: %v\n%s", pkg, err, o)
	}
}

func moduleDir(b *testing.B, module string) string {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("go list -m %s: %v: %s", module, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q is not a positive number", name, v)
	}
	return n
}

func freeAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitListening(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
