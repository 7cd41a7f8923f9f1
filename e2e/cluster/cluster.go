package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/inject"
	"github.com/weft-mesh/weft/internal/testenv"
	"github.com/weft-mesh/weft/internal/testsigner"
)

// Names and addresses of the box's control plane.
const (
	// ControlPlaneNamespace is where weft-controller "runs".
	ControlPlaneNamespace = "weft-system"
	// ControllerServiceAccount is the controller's identity towards the
	// API server (bound to the ClusterRole make manifests generates) and
	// in its xDS serving certificate.
	ControllerServiceAccount = "weft-controller"
	// XDSHost is the name workloads dial, as in a cluster; the sandbox's
	// hosts file points it at loopback.
	XDSHost = "weft-xds.weft-system.svc"
	// XDSPort is the controller's xDS port (the sandbox has its own
	// ports, so the standard one is free).
	XDSPort = 15010
	// IssuerName is the ClusterIssuer the test signer answers for, as in
	// config/samples.
	IssuerName = "mesh-ca"
	// TrustDomain of the mesh.
	TrustDomain = "cluster.local"
	// MeshIdentityName is the MeshIdentity Start creates.
	MeshIdentityName = "default"

	probeAddress = "127.0.0.1:8081"
	xdsSecret    = "weft-xds-tls"
)

var logOnce sync.Once

// SandboxHosts are the hosts entries the box needs: the control plane's
// DNS name on loopback.
func SandboxHosts() map[string]string {
	return map[string]string{XDSHost: "127.0.0.1", XDSHost + ".cluster.local": "127.0.0.1"}
}

// Options configure a Cluster.
type Options struct {
	// RepoRoot is the directory of Weft's go.mod: CRDs, RBAC and
	// certificate manifests are read from it.
	RepoRoot string
	// AssetsDir holds kube-apiserver, etcd and kubectl; default
	// $KUBEBUILDER_ASSETS.
	AssetsDir string
	// ControllerBinary is the weft-controller executable to run.
	ControllerBinary string
	// WorkDir keeps kubeconfigs, logs and the pods' volumes; default a
	// new temporary directory, removed by Stop.
	WorkDir string
	// Debounce is passed to the controller's --debounce; default 20ms.
	Debounce time.Duration
	// Logf reports progress; default silent.
	Logf func(format string, args ...any)
}

// Cluster is a running box.
type Cluster struct {
	opts Options
	// Client talks to the API server as cluster admin.
	Client client.Client
	// Config is the admin REST config.
	Config *rest.Config
	// Signer issues the mesh's certificates, as cert-manager would.
	Signer *testsigner.Signer
	// Injector is the one the webhook would use.
	Injector *inject.Injector
	// WorkDir holds everything the box writes.
	WorkDir string

	env        *envtest.Environment
	controller *controllerProcess
	cancel     context.CancelFunc
	mgrDone    chan error
	kubelet    *kubelet
	removeWork bool

	mu   sync.Mutex
	pods map[string]*Pod
}

// NewScheme knows the core kinds and Weft's, Gateway API's and
// cert-manager's: the scheme every test of the repository uses.
func NewScheme() *runtime.Scheme { return testenv.NewScheme() }

// CRDDirs are the CRD directories of Weft and of the modules it uses.
func CRDDirs(repoRoot string) ([]string, error) {
	dirs := []string{filepath.Join(repoRoot, "config", "crd", "bases")}
	for _, m := range []struct{ module, sub string }{
		{"sigs.k8s.io/gateway-api", "config/crd/standard"},
		{"github.com/cert-manager/cert-manager", "deploy/crds"},
	} {
		cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", m.module)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "GOFLAGS=-mod=mod")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("go list -m %s: %w: %s", m.module, err, stderr.String())
		}
		dir := strings.TrimSpace(string(out))
		if dir == "" {
			return nil, fmt.Errorf("module %s is not downloaded (run go mod download)", m.module)
		}
		dirs = append(dirs, filepath.Join(dir, filepath.FromSlash(m.sub)))
	}
	return dirs, nil
}

// BuildController builds cmd/weft-controller into out.
func BuildController(repoRoot, out string) error {
	cmd := exec.Command("go", "build", "-o", out, "./cmd/weft-controller")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building weft-controller: %w\n%s", err, b)
	}
	return nil
}

// Start brings the box up: API server with CRDs, the signer and its
// ClusterIssuer, the controller's RBAC and xDS certificate, a Strict
// MeshIdentity, the endpointslice controller and kubelet stand-ins, and
// the weft-controller process. It must run inside the sandbox.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if !entered {
		return nil, errors.New("cluster box: Start must run inside the sandbox (call EnterSandbox first)")
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.AssetsDir == "" {
		opts.AssetsDir = os.Getenv("KUBEBUILDER_ASSETS")
	}
	if opts.AssetsDir == "" {
		return nil, errors.New("cluster box: no kube-apiserver and etcd: set KUBEBUILDER_ASSETS (make envtest builds them; `make test-e2e` and `make demo` set it)")
	}
	if opts.ControllerBinary == "" {
		return nil, errors.New("cluster box: Options.ControllerBinary is required")
	}
	if opts.Debounce == 0 {
		opts.Debounce = 20 * time.Millisecond
	}
	c := &Cluster{opts: opts, pods: map[string]*Pod{}}
	if opts.WorkDir == "" {
		if c.WorkDir, err = os.MkdirTemp("", "weft-box-"); err != nil {
			return nil, err
		}
		c.removeWork = true
	} else {
		c.WorkDir = opts.WorkDir
		if err := os.MkdirAll(c.WorkDir, 0o755); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()

	crds, err := CRDDirs(opts.RepoRoot)
	if err != nil {
		return nil, err
	}
	opts.Logf("starting etcd and kube-apiserver")
	scheme := NewScheme()
	c.env = &envtest.Environment{
		CRDDirectoryPaths:     crds,
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
		BinaryAssetsDirectory: opts.AssetsDir,
	}
	// The sandbox has no default route to guess an address from, and a
	// loopback address cannot be published as the kubernetes Service's
	// endpoint, which nothing in the box needs.
	apiArgs := c.env.ControlPlane.GetAPIServer().Configure()
	apiArgs.Set("advertise-address", "127.0.0.1")
	apiArgs.Set("endpoint-reconciler-type", "none")
	fp, err := c.frontProxy()
	if err != nil {
		return nil, err
	}
	for flag, v := range fp {
		apiArgs.Set(flag, v)
	}
	if c.Config, err = c.env.Start(); err != nil {
		c.env = nil
		return nil, fmt.Errorf("starting the API server: %w", err)
	}
	if c.Client, err = client.New(c.Config, client.Options{Scheme: scheme}); err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.KubeconfigPath(), c.env.KubeConfig, 0o600); err != nil {
		return nil, err
	}

	c.Signer, err = testsigner.New(c.Client, testsigner.Options{IssuerName: IssuerName})
	if err != nil {
		return nil, err
	}
	if err := c.Signer.EnsureIssuer(ctx, ""); err != nil {
		return nil, err
	}
	if err := c.startHelpers(scheme); err != nil {
		return nil, err
	}
	if err := c.installControlPlane(ctx); err != nil {
		return nil, err
	}
	if err := c.installProxyAPI(ctx); err != nil {
		return nil, err
	}
	cfg := inject.DefaultConfig()
	cfg.ProxyImage = "ghcr.io/weft-mesh/weft-proxy:e2e"
	cfg.InitImage = "ghcr.io/weft-mesh/weft-controller:e2e"
	cfg.ProxyVersion = "e2e"
	cfg.XDSAddress = fmt.Sprintf("%s:%d", XDSHost, XDSPort)
	cfg.ControlPlaneNamespace = ControlPlaneNamespace
	cfg.TrustDomain = TrustDomain
	if c.Injector, err = inject.New(cfg); err != nil {
		return nil, err
	}

	opts.Logf("starting weft-controller")
	c.controller = &controllerProcess{
		binary:  opts.ControllerBinary,
		workDir: c.WorkDir,
		args: []string{
			fmt.Sprintf("--xds-bind-address=127.0.0.1:%d", XDSPort),
			"--xds-cert-dir=" + c.xdsCertDir(),
			"--enable-injection=false",
			"--enable-identity=true",
			"--metrics-bind-address=127.0.0.1:8443",
			"--metrics-secure=false",
			"--health-probe-bind-address=" + probeAddress,
			"--debounce=" + opts.Debounce.String(),
			fmt.Sprintf("--proxy-api-bind-address=%s:%d", ControllerPodIP, ProxyAPIPort),
			"--proxy-api-cert-dir=" + c.proxyAPICertDir(),
			"--pod-ip=" + ControllerPodIP,
			"--pod-name=" + ControllerPodName,
		},
		kubeconfig: c.controllerKubeconfigPath(),
	}
	if err := c.controller.start(ctx); err != nil {
		return nil, err
	}
	if err := c.recordController(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// KubeconfigPath is an admin kubeconfig for the box's API server (usable
// inside the sandbox).
func (c *Cluster) KubeconfigPath() string { return filepath.Join(c.WorkDir, "kubeconfig") }

func (c *Cluster) controllerKubeconfigPath() string {
	return filepath.Join(c.WorkDir, "weft-controller.kubeconfig")
}

func (c *Cluster) xdsCertDir() string { return filepath.Join(c.WorkDir, "weft-controller", "xds") }

// ControllerLog is the controller's log file.
func (c *Cluster) ControllerLog() string { return c.controller.logPath() }

// startHelpers runs, in this process, what envtest leaves out: the signer,
// an endpointslice controller and the kubelet's part for the box's pods.
func (c *Cluster) startHelpers(scheme *runtime.Scheme) error {
	// controller-runtime's global logger (its work queues log through it)
	// would otherwise complain that it was never set.
	logOnce.Do(func() { ctrl.SetLogger(logr.Discard()) })
	mgr, err := ctrl.NewManager(c.Config, ctrl.Options{
		Scheme:                 scheme,
		Logger:                 logr.Discard(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		return fmt.Errorf("box manager: %w", err)
	}
	if err := mgr.Add(c.Signer); err != nil {
		return err
	}
	if err := setupEndpointSlices(mgr); err != nil {
		return err
	}
	c.kubelet = newKubelet(c)
	if err := c.kubelet.setup(mgr); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.mgrDone = make(chan error, 1)
	go func() { c.mgrDone <- mgr.Start(ctx) }()
	syncCtx, done := context.WithTimeout(ctx, time.Minute)
	defer done()
	if !mgr.GetCache().WaitForCacheSync(syncCtx) {
		return errors.New("box manager: caches did not sync")
	}
	return nil
}

// installControlPlane does what `make deploy` and cert-manager would: the
// controller's namespace, ClusterRole (the generated one) and binding, its
// xDS certificate from config/certmanager, and the mesh's MeshIdentity.
func (c *Cluster) installControlPlane(ctx context.Context) error {
	if err := c.create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ControlPlaneNamespace}}); err != nil {
		return err
	}
	var role rbacv1.ClusterRole
	if err := c.readManifest(filepath.Join("config", "rbac", "role.yaml"), &role); err != nil {
		return err
	}
	if err := c.create(ctx, &role); err != nil {
		return err
	}
	if err := c.create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-controller"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ControlPlaneNamespace, Name: ControllerServiceAccount}},
	}); err != nil {
		return err
	}
	user, err := c.env.AddUser(envtest.User{Name: "system:serviceaccount:" + ControlPlaneNamespace + ":" + ControllerServiceAccount}, nil)
	if err != nil {
		return fmt.Errorf("controller credentials: %w", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return err
	}
	if err := os.WriteFile(c.controllerKubeconfigPath(), kc, 0o600); err != nil {
		return err
	}

	var cert cmapi.Certificate
	if err := c.readManifest(filepath.Join("config", "certmanager", "xds.yaml"), &cert); err != nil {
		return err
	}
	if err := c.create(ctx, &cert); err != nil {
		return err
	}
	c.opts.Logf("waiting for the xDS serving certificate")
	secret, err := c.waitSecret(ctx, ControlPlaneNamespace, cert.Spec.SecretName)
	if err != nil {
		return err
	}
	if err := writeAtomic(c.xdsCertDir(), map[string][]byte{
		corev1.TLSCertKey:       secret.Data[corev1.TLSCertKey],
		corev1.TLSPrivateKeyKey: secret.Data[corev1.TLSPrivateKeyKey],
		"ca.crt":                secret.Data["ca.crt"],
	}, 0o600); err != nil {
		return err
	}

	return c.create(ctx, &meshv1alpha1.MeshIdentity{
		ObjectMeta: metav1.ObjectMeta{Name: MeshIdentityName},
		Spec: meshv1alpha1.MeshIdentitySpec{
			TrustDomain: TrustDomain,
			IssuerRef:   meshv1alpha1.IssuerReference{Name: IssuerName, Kind: cmapi.ClusterIssuerKind},
			MTLS:        meshv1alpha1.MTLS{Mode: meshv1alpha1.MTLSStrict},
		},
	})
}

// readManifest decodes the single object of a YAML file under the repo.
// Files may start with a document separator or comments: documents without
// a kind are skipped.
func (c *Cluster) readManifest(rel string, into client.Object) error {
	raw, err := os.ReadFile(filepath.Join(c.opts.RepoRoot, rel))
	if err != nil {
		return err
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: no object", rel)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if tm.Kind == "" {
			continue
		}
		if err := yaml.UnmarshalStrict(doc, into); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		return nil
	}
}

func (c *Cluster) create(ctx context.Context, obj client.Object) error {
	if err := c.Client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err)
	}
	return nil
}

func (c *Cluster) waitSecret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	var s corev1.Secret
	err := poll(ctx, 30*time.Second, func() (bool, error) {
		err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil && len(s.Data[corev1.TLSCertKey]) > 0, err
	})
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %w", ns, name, err)
	}
	return &s, nil
}

// poll calls cond every 20ms until it is true, fails, or timeout passes.
func poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		return cond()
	})
	if wait.Interrupted(err) {
		return fmt.Errorf("not within %s", timeout)
	}
	return err
}

// Stop ends every pod, the controller, the helpers and the API server.
func (c *Cluster) Stop() {
	c.mu.Lock()
	pods := make([]*Pod, 0, len(c.pods))
	for _, p := range c.pods {
		pods = append(pods, p)
	}
	c.mu.Unlock()
	for _, p := range pods {
		p.stopWorkload()
	}
	if c.controller != nil {
		c.controller.stop()
	}
	if c.cancel != nil {
		c.cancel()
		if err := <-c.mgrDone; err != nil {
			c.opts.Logf("box helpers stopped: %v", err)
		}
	}
	if c.env != nil {
		_ = c.env.Stop()
	}
	if c.removeWork {
		_ = os.RemoveAll(c.WorkDir)
	}
}
