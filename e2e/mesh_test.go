package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/weft-mesh/weft/e2e/cluster"
	"github.com/weft-mesh/weft/internal/testenv"
)

func repoRoot() string { return testenv.RepoRoot() }

// startBox builds weft-controller (unless WEFT_CONTROLLER_BINARY names
// one) and brings the cluster in a box up for the test.
func startBox(t *testing.T) *cluster.Cluster {
	t.Helper()
	bin := os.Getenv("WEFT_CONTROLLER_BINARY")
	if bin != "" && !filepath.IsAbs(bin) {
		bin = filepath.Join(repoRoot(), bin) // relative to the repository, as make runs
	}
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "weft-controller")
		start := time.Now()
		if err := cluster.BuildController(repoRoot(), bin); err != nil {
			t.Fatal(err)
		}
		t.Logf("built weft-controller in %s", time.Since(start).Round(time.Millisecond))
	}
	start := time.Now()
	c, err := cluster.Start(t.Context(), cluster.Options{
		RepoRoot:         repoRoot(),
		ControllerBinary: bin,
		WorkDir:          t.TempDir(),
		Logf:             t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(c.ControllerLog()); err == nil {
				t.Logf("weft-controller log (last 16 KiB):\n%s", tail(b, 16<<10))
			}
		}
		c.Stop()
	})
	t.Logf("cluster in a box up in %s", time.Since(start).Round(time.Millisecond))
	return c
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// box is the shared state of the scenarios: the cluster and the two
// client pods, web-0 (service account web) and batch-0 (batch), in
// namespace front. Each scenario has Services of its own in namespace
// shop, so scenarios do not see each other's policies.
type box struct {
	*cluster.Cluster
	web, batch *cluster.Pod

	mu     sync.Mutex
	nextIP int
}

const (
	appNS   = "shop"
	frontNS = "front"
	port    = 8080
)

// TestMesh runs every end-to-end scenario against one cluster in a box.
func TestMesh(t *testing.T) {
	b := &box{Cluster: startBox(t), nextIP: 10}
	start := time.Now()
	ctx := t.Context()
	must(t, b.CreateNamespace(ctx, appNS))
	must(t, b.CreateNamespace(ctx, frontNS))
	var err error
	b.web, err = b.RunPod(ctx, cluster.PodSpec{Namespace: frontNS, Name: "web-0", ServiceAccount: "web", IP: "10.244.0.2"})
	must(t, err)
	b.batch, err = b.RunPod(ctx, cluster.PodSpec{Namespace: frontNS, Name: "batch-0", ServiceAccount: "batch", IP: "10.244.0.3"})
	must(t, err)

	t.Run("canary", b.testCanary)
	t.Run("canary steps from 0", b.testCanaryStepsFromZero)
	t.Run("controller restart", b.testControllerRestart)
	t.Run("header route", b.testHeaderRoute)
	t.Run("retries", b.testRetries)
	t.Run("timeout", b.testTimeout)
	t.Run("circuit breaker", b.testCircuitBreaker)
	t.Run("outlier detection", b.testOutlierDetection)
	t.Run("mtls and access policy", b.testAccess)
	t.Run("endpoint churn", b.testEndpointChurn)
	t.Run("fault injection", b.testFaults)
	t.Run("load balancing", b.testLoadBalancing)
	t.Run("deny one method", b.testMethodDeny)
	t.Run("permissive mtls", b.testPermissive)
	t.Run("rate limit on proxyless", b.testRateLimitOnProxyless)
	t.Run("kubectl weft", b.testKubectlWeft)
	t.Logf("the scenarios took %s", time.Since(start).Round(time.Millisecond))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ip hands out pod addresses in 10.244.1.0/24.
func (b *box) ip() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nextIP++
	return fmt.Sprintf("10.244.1.%d", b.nextIP)
}

// service creates a Service in the app namespace selecting app=name.
func (b *box) service(t *testing.T, name string, selector map[string]string) {
	t.Helper()
	must(t, b.CreateService(t.Context(), appNS, name, port, selector))
}

// versions creates Service name (app=name) and Services name-v1 and
// name-v2 selecting each version, with v1 and v2 pods of each (named
// name-v1-0, ...), all serving as service account name.
func (b *box) versions(t *testing.T, name string, v1, v2 int) {
	t.Helper()
	b.service(t, name, map[string]string{"app": name})
	for _, vp := range []struct {
		v    string
		pods int
	}{{"v1", v1}, {"v2", v2}} {
		v, pods := vp.v, vp.pods
		labels := map[string]string{"app": name, "version": v}
		b.service(t, name+"-"+v, labels)
		for i := range pods {
			b.backend(t, fmt.Sprintf("%s-%s-%d", name, v, i), name, labels)
		}
	}
}

// backend runs a serving pod in the app namespace and waits until it is
// ready and listed as a ready endpoint of its Services.
func (b *box) backend(t *testing.T, name, sa string, labels map[string]string) *cluster.Pod {
	t.Helper()
	p, err := b.RunPod(t.Context(), cluster.PodSpec{Namespace: appNS, Name: name, ServiceAccount: sa, IP: b.ip(), Port: port, Labels: labels})
	must(t, err)
	must(t, p.WaitReady(t.Context(), 30*time.Second))
	return p
}

// reachable waits until a new Service answers each client: its endpoints
// are ready in the API server, but the mesh takes a moment to push them.
func (b *box) reachable(t *testing.T, svc string, clients ...*cluster.Pod) {
	t.Helper()
	for _, c := range clients {
		start := time.Now()
		eventually(t, 15*time.Second, c.Spec.Name+" reaches "+svc, func() (bool, string) {
			_, err := echo(t.Context(), c, host(svc), 5*time.Second)
			return err == nil, fmt.Sprint(err)
		})
		t.Logf("%s reached %s %s after its endpoints were ready", c.Spec.Name, svc, time.Since(start).Round(time.Millisecond))
	}
}

// answering waits until calls from c to svc reach every one of pods: the
// client has every endpoint.
func (b *box) answering(t *testing.T, c *cluster.Pod, svc string, pods ...*cluster.Pod) {
	t.Helper()
	eventually(t, 15*time.Second, fmt.Sprintf("%s reaches every pod of %s", c.Spec.Name, svc), func() (bool, string) {
		tally := load(t, t.Context(), c, host(svc), 20*len(pods), 2)
		for _, p := range pods {
			if tally.ByPod[p.Spec.Name] == 0 {
				return false, tally.String()
			}
		}
		return true, ""
	})
}

// host is the name a client dials for a Service of the app namespace.
func host(svc string) string { return fmt.Sprintf("%s.%s.svc.cluster.local:%d", svc, appNS, port) }

// eventually retries cond every 50ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	last := ""
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		ok, msg := cond()
		last = msg
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: not within %s; last: %s", what, timeout, last)
	}
}

// echo makes one call bounded by timeout.
func echo(ctx context.Context, p *cluster.Pod, target string, timeout time.Duration) (string, error) {
	conn, err := p.Conn(target)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return cluster.Echo(ctx, conn)
}

// load makes n calls from p to target, concurrency at a time, within a
// minute at most.
func load(t *testing.T, ctx context.Context, p *cluster.Pod, target string, n, concurrency int) cluster.Tally {
	t.Helper()
	conn, err := p.Conn(target)
	must(t, err)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tally := cluster.Load(ctx, conn, n, concurrency, 5*time.Second)
	if tally.Calls < n {
		t.Fatalf("only %d of %d calls were made within a minute: %s", tally.Calls, n, tally)
	}
	return tally
}
