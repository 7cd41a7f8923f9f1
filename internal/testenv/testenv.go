package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
)

// Env is a running API server with every CRD Weft uses.
type Env struct {
	Config *rest.Config
	Client client.Client
	Scheme *runtime.Scheme
	env    *envtest.Environment
}

// RepoRoot is the directory holding the main go.mod.
func RepoRoot() string {
	_, file, _, _ := goruntime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var moduleDirs sync.Map

// ModuleDir returns the directory of a Go module the main module depends on.
func ModuleDir(t testing.TB, module string) string {
	if d, ok := moduleDirs.Load(module); ok {
		return d.(string)
	}
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module) //nolint:gosec // module names are constants of the tests
	cmd.Dir = RepoRoot()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v: %s", module, err, stderr.String())
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		t.Fatalf("go list -m %s: module directory unknown (run go mod download)", module)
	}
	moduleDirs.Store(module, dir)
	return dir
}

// CRDPaths lists the directories envtest installs CRDs from.
func CRDPaths(t testing.TB) []string {
	return []string{
		filepath.Join(RepoRoot(), "config", "crd", "bases"),
		filepath.Join(ModuleDir(t, "sigs.k8s.io/gateway-api"), "config", "crd", "standard"),
		filepath.Join(ModuleDir(t, "github.com/cert-manager/cert-manager"), "deploy", "crds"),
	}
}

// NewScheme has the core kinds, Weft's, Gateway API's and cert-manager's.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme,
		meshv1alpha1.AddToScheme,
		gwapiv1.Install,
		gwapiv1beta1.Install,
		cmapi.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(fmt.Sprintf("building scheme: %v", err))
		}
	}
	return s
}

// Start runs an API server for the test and stops it when the test ends.
// KUBEBUILDER_ASSETS must point at the binaries hack/envtest builds; `make
// test` sets it. Without it the test fails with a message saying so.
func Start(t testing.TB, opts ...func(*envtest.Environment)) *Env {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run the tests with `make test`, or export KUBEBUILDER_ASSETS=$(hack/envtest/build.sh)")
	}
	s := NewScheme()
	env := &envtest.Environment{
		CRDDirectoryPaths:     CRDPaths(t),
		ErrorIfCRDPathMissing: true,
		Scheme:                s,
	}
	// A Service range the size of a real cluster's, so tests can create
	// thousands of Services.
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.96.0.0/16")
	for _, o := range opts {
		o(env)
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stopping envtest: %v", err)
		}
	})
	// Tests create objects in bulk; the default client-side rate limit
	// would make them crawl.
	cfg.QPS, cfg.Burst = 2000, 4000
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	return &Env{Config: cfg, Client: c, Scheme: s, env: env}
}

// Environment is the underlying envtest environment (for webhook options).
func (e *Env) Environment() *envtest.Environment { return e.env }
