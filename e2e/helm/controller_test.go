package helm

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/weft-mesh/weft/internal/testenv"
	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

var (
	buildOnce sync.Once
	binary    string
	errBuild  error
	buildDir  string
)

// TestMain removes the controller binary the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// controllerBinary is $WEFT_CONTROLLER_BINARY, or weft-controller built
// from the tree once.
func controllerBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("WEFT_CONTROLLER_BINARY"); b != "" {
		return b
	}
	buildOnce.Do(func() {
		buildDir, errBuild = os.MkdirTemp("", "weft-helm-test")
		if errBuild != nil {
			return
		}
		binary = filepath.Join(buildDir, "weft-controller")
		cmd := exec.Command("go", "build", "-o", binary, "./cmd/weft-controller")
		cmd.Dir = testenv.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			errBuild = fmt.Errorf("building weft-controller: %w\n%s", err, out)
		}
	})
	if errBuild != nil {
		t.Fatal(errBuild)
	}
	return binary
}

// startController runs weft-controller with the arguments the chart's
// Deployment gives it, as the chart's service account (so the chart's RBAC
// must be enough), and waits until it reports ready. What a pod provides
// and a test process has not is substituted: the mounted certificate
// Secrets become directories with certificates for the same names, the
// bind addresses become free loopback ports, and the leader election
// namespace, which a pod reads from its service account, is given.
func startController(t *testing.T, env *testenv.Env, dep *unstructured.Unstructured, ns string) {
	t.Helper()
	containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	var args []string
	for _, a := range containers[0].(map[string]any)["args"].([]any) {
		args = append(args, a.(string))
	}
	ca, err := xdstest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	xdsDir, webhookDir := filepath.Join(dir, "xds"), filepath.Join(dir, "webhook")
	for _, d := range []string{xdsDir, webhookDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := ca.WriteDir(xdsDir, "spiffe://cluster.local/ns/"+ns+"/sa/weft-controller", []string{"weft-xds." + ns + ".svc"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteDir(webhookDir, "", []string{"weft-webhook." + ns + ".svc"}, nil); err != nil {
		t.Fatal(err)
	}
	probe := freePort(t)
	replace := map[string]string{
		"--metrics-bind-address":      "127.0.0.1:" + freePort(t),
		"--health-probe-bind-address": "127.0.0.1:" + probe,
		"--xds-bind-address":          "127.0.0.1:" + freePort(t),
		"--webhook-port":              freePort(t),
		"--xds-cert-dir":              xdsDir,
		"--webhook-cert-dir":          webhookDir,
	}
	for i, a := range args {
		name, _, _ := strings.Cut(a, "=")
		if v, ok := replace[name]; ok {
			args[i] = name + "=" + v
			delete(replace, name)
		}
	}
	if len(replace) > 0 {
		t.Fatalf("the chart's Deployment does not set %v: %v", replace, args)
	}
	args = append(args, "--leader-election-namespace="+ns)

	user, err := env.Environment().AddUser(envtest.User{Name: "system:serviceaccount:" + ns + ":weft-controller", Groups: []string{"system:serviceaccounts"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "weft-controller.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(controllerBinary(t), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		_ = logFile.Close()
	})
	hc := &http.Client{Timeout: time.Second}
	err = wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		select {
		case <-exited:
			return false, fmt.Errorf("weft-controller exited")
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+probe+"/readyz", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return false, nil
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		b, _ := os.ReadFile(logPath)
		if len(b) > 8<<10 {
			b = b[len(b)-8<<10:]
		}
		t.Fatalf("weft-controller with the chart's arguments %v did not become ready: %v\n%s", args, err, b)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}
