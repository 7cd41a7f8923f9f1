package e2e

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/weft-mesh/weft/e2e/cluster"
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// startBox builds weft-controller (unless WEFT_CONTROLLER_BINARY names
// one) and brings the cluster in a box up for the test.
func startBox(t *testing.T) *cluster.Cluster {
	t.Helper()
	bin := os.Getenv("WEFT_CONTROLLER_BINARY")
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
				t.Logf("weft-controller log (last 8 KiB):\n%s", tail(b, 8<<10))
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

func TestSmoke(t *testing.T) {
	c := startBox(t)
	ctx := t.Context()
	must(t, c.CreateNamespace(ctx, "shop"))
	must(t, c.CreateService(ctx, "shop", "checkout", 8080, map[string]string{"app": "checkout"}))
	srv, err := c.RunPod(ctx, cluster.PodSpec{Namespace: "shop", Name: "checkout-v1-0", ServiceAccount: "checkout", IP: "10.244.1.1", Port: 8080, Labels: map[string]string{"app": "checkout", "version": "v1"}})
	must(t, err)
	web, err := c.RunPod(ctx, cluster.PodSpec{Namespace: "shop", Name: "web-0", ServiceAccount: "web", IP: "10.244.9.1"})
	must(t, err)
	t.Logf("bootstrap: %s", web.Bootstrap)
	must(t, srv.WaitServing(ctx, 30*time.Second))
	conn, err := web.Conn("checkout.shop.svc.cluster.local:8080")
	must(t, err)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	pod, err := cluster.Echo(cctx, conn)
	t.Logf("answer %q err %v", pod, err)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
