package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/weft-mesh/weft/controllers"
	"github.com/weft-mesh/weft/internal/inject"
	"github.com/weft-mesh/weft/internal/proxyapi"
	"github.com/weft-mesh/weft/internal/webhookcert"
	"github.com/weft-mesh/weft/internal/xds/server"
	"github.com/weft-mesh/weft/webhooks"
)

// version is the controller and proxy version, set at build time with
// -ldflags "-X main.version=...".
var version = "dev"

type injectOptions struct {
	cfg                                inject.Config
	cpu, memory, cpuLimit, memoryLimit string
}

func bindInjectFlags(fs *flag.FlagSet) *injectOptions {
	o := &injectOptions{cfg: inject.DefaultConfig()}
	fs.StringVar(&o.cfg.ProxyImage, "proxy-image", "ghcr.io/weft-mesh/weft-proxy:"+version, "Image of the injected Envoy sidecar.")
	fs.StringVar(&o.cfg.InitImage, "init-image", "ghcr.io/weft-mesh/weft-init:"+version, "Image of the injected traffic-capture init container.")
	fs.StringVar(&o.cfg.XDSAddress, "xds-address", o.cfg.XDSAddress, "host:port of the xDS Service that injected proxies dial.")
	fs.StringVar(&o.cfg.ControlPlaneNamespace, "control-plane-namespace", o.cfg.ControlPlaneNamespace, "Namespace of the control plane; never injected.")
	fs.StringVar(&o.cfg.TrustDomain, "trust-domain", o.cfg.TrustDomain, "SPIFFE trust domain injected proxies expect of the xDS server.")
	fs.StringVar(&o.cfg.LogLevel, "proxy-log-level", o.cfg.LogLevel, "Default proxy log level: trace, debug, info, warn or error.")
	fs.StringVar(&o.cpu, "proxy-cpu", o.cfg.ProxyCPU.String(), "Default proxy CPU request.")
	fs.StringVar(&o.memory, "proxy-memory", o.cfg.ProxyMemory.String(), "Default proxy memory request.")
	fs.StringVar(&o.cpuLimit, "proxy-cpu-limit", o.cfg.ProxyCPULimit.String(), "Default proxy CPU limit.")
	fs.StringVar(&o.memoryLimit, "proxy-memory-limit", o.cfg.ProxyMemoryLimit.String(), "Default proxy memory limit.")
	return o
}

func (o *injectOptions) config() (inject.Config, error) {
	cfg := o.cfg
	cfg.ProxyVersion = version
	for _, q := range []struct {
		flag string
		val  string
		dst  *resource.Quantity
	}{{"--proxy-cpu", o.cpu, &cfg.ProxyCPU}, {"--proxy-memory", o.memory, &cfg.ProxyMemory}, {"--proxy-cpu-limit", o.cpuLimit, &cfg.ProxyCPULimit}, {"--proxy-memory-limit", o.memoryLimit, &cfg.ProxyMemoryLimit}} {
		v, err := resource.ParseQuantity(q.val)
		if err != nil {
			return cfg, fmt.Errorf("%s: %q is not a quantity such as 100m or 128Mi: %w", q.flag, q.val, err)
		}
		*q.dst = v
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("injection settings: %w", err)
	}
	return cfg, nil
}

func newWebhookServer(o options) webhook.Server {
	return webhook.NewServer(webhook.Options{Port: o.webhookPort, CertDir: o.webhookCertDir, CertName: "tls.crt", KeyName: "tls.key"})
}

// setupInjection registers the pod injector; the native sidecar mode
// follows the API server's version.
func setupInjection(mgr ctrl.Manager, o *injectOptions) error {
	cfg, err := o.config()
	if err != nil {
		return err
	}
	native, err := webhooks.ServerSupportsNativeSidecars(mgr.GetConfig())
	if err != nil {
		return fmt.Errorf("checking the API server version: %w", err)
	}
	cfg.NativeSidecars = native
	if err := webhooks.SetupWithManager(mgr, cfg); err != nil {
		return fmt.Errorf("setting up the injection webhook: %w", err)
	}
	return nil
}

// setupSidecarAudit runs the reconciler that reports pods which should be
// meshed but have no sidecar, and pods on an older proxy. It runs whether or
// not this replica serves the webhook: pods that missed injection are what it
// looks for, and the mesh controller already caches every pod and namespace
// it reads.
func setupSidecarAudit(mgr ctrl.Manager, o *injectOptions) error {
	r := &controllers.SidecarAuditReconciler{
		Client:                mgr.GetClient(),
		Recorder:              mgr.GetEventRecorder(controllers.SidecarAuditRecorderName),
		ProxyVersion:          version,
		ControlPlaneNamespace: o.cfg.ControlPlaneNamespace,
		Metrics:               controllers.NewSidecarAuditMetrics(metrics.Registry),
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the sidecar audit: %w", err)
	}
	return nil
}

// setupIdentity runs the MeshIdentity reconciler, which needs cert-manager.
func setupIdentity(mgr ctrl.Manager) error {
	r := &controllers.MeshIdentityReconciler{Client: mgr.GetClient(), Scheme: mgr.GetScheme()}
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the MeshIdentity reconciler (is cert-manager installed? or run with --enable-identity=false): %w", err)
	}
	return nil
}

// setupWebhookCertificate makes the webhook's serving certificate before
// the webhook server starts (it reads the files at start), and keeps it
// renewed while the controller runs.
func setupWebhookCertificate(ctx context.Context, mgr ctrl.Manager, o options, namespace string) error {
	if namespace == "" {
		return errors.New("--manage-webhook-certificate needs --control-plane-namespace, the namespace of its Secret")
	}
	c, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		return err
	}
	svc := o.webhookService + "." + namespace + ".svc"
	m := &webhookcert.Manager{
		Client: c, Namespace: namespace, SecretName: o.webhookSecret,
		DNSNames: []string{svc, svc + ".cluster.local"}, Webhook: o.webhookConfiguration, CertDir: o.webhookCertDir,
		APIService: o.apiService,
	}
	if err := m.Ensure(ctx); err != nil {
		return fmt.Errorf("making the webhook certificate: %w", err)
	}
	return mgr.Add(m)
}

// proxyAPIPort is the name of the proxy status API's port on its Service.
const proxyAPIPort = "https-proxy-api"

// setupProxyAPI serves the debug.weft.dev API on every replica.
func setupProxyAPI(mgr ctrl.Manager, o options, namespace string, xds *server.Server) error {
	if o.proxyAPIAddr == "0" || o.proxyAPIAddr == "" {
		return nil
	}
	name := o.podName
	if name == "" {
		name, _ = os.Hostname()
	}
	certs := &proxyapi.ServingCerts{Dir: o.proxyAPICertDir}
	h := &proxyapi.Handler{
		Source:     xds,
		Replica:    name,
		Auth:       &proxyapi.Authenticator{FrontProxy: proxyapi.ConfigMapFrontProxy(mgr.GetAPIReader(), 30*time.Second), Certs: certs},
		PeerClient: certs.PeerClient,
		Log:        ctrl.Log.WithName("proxy-api"),
	}
	// Without its own pod IP a replica cannot tell itself from the others
	// among the Service's endpoints, and would list its proxies twice.
	if o.podIP != "" && namespace != "" {
		peers := &proxyapi.EndpointPeers{Reader: mgr.GetClient(), Namespace: namespace, Service: o.proxyAPIService, PortName: proxyAPIPort, SelfIP: o.podIP}
		h.Peers = peers.List
	} else {
		ctrl.Log.WithName("setup").Info("the proxy status API answers for this replica only: set --pod-ip and --control-plane-namespace to gather every replica")
	}
	return mgr.Add(&proxyapi.Server{Address: o.proxyAPIAddr, Handler: h, Certs: certs, Log: h.Log})
}
