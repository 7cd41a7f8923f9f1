// Command weft-controller is Weft's control plane: it watches the cluster,
// serves xDS to every meshed proxy, writes status, issues workload
// identities and injects sidecars.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/controllers"
	"github.com/weft-mesh/weft/internal/xds/server"
	"github.com/weft-mesh/weft/internal/xds/translate"
)

type options struct {
	metricsAddr, probeAddr, xdsAddr string
	pprofAddr                       string
	xdsCertDir                      string
	xdsInsecure                     bool
	metricsSecure                   bool
	leaderElect                     bool
	leaderNamespace                 string
	clusterDomain                   string
	debounce                        time.Duration
	debugConfig                     bool
	blockUnknown                    bool
	webhookPort                     int
	webhookCertDir                  string
	enableWebhook                   bool
	enableIdentity                  bool
	tracingAddress                  string
	tracingSampling                 float64
	accessLog                       bool
	accessLogFormat                 string
	manageWebhookCert               bool
	webhookSecret                   string
	webhookService                  string
	webhookConfiguration            string
	proxyAPIAddr                    string
	proxyAPICertDir                 string
	proxyAPIService                 string
	apiService                      string
	podIP, podName                  string
}

func main() {
	var o options
	flag.StringVar(&o.metricsAddr, "metrics-bind-address", ":8443", "Address of the metrics endpoint (HTTPS with Kubernetes authentication unless --metrics-secure=false); 0 disables it.")
	flag.BoolVar(&o.metricsSecure, "metrics-secure", true, "Serve metrics over HTTPS with authentication and authorization.")
	flag.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	flag.StringVar(&o.pprofAddr, "pprof-bind-address", "0", "Address of Go's /debug/pprof profiles, unauthenticated: bind it to loopback and reach it with kubectl port-forward; 0 (the default) disables it.")
	flag.StringVar(&o.xdsAddr, "xds-bind-address", ":15010", "Address of the xDS (ADS) server.")
	flag.StringVar(&o.xdsCertDir, "xds-cert-dir", "/var/run/weft/xds", "Directory with the xDS server certificate (tls.crt, tls.key) and the CA that signs proxies' certificates (ca.crt).")
	flag.BoolVar(&o.xdsInsecure, "xds-insecure", false, "Serve xDS without TLS and without checking proxy identities. For local development only.")
	flag.BoolVar(&o.leaderElect, "leader-elect", false, "Elect a leader so that only one replica writes status.")
	flag.StringVar(&o.leaderNamespace, "leader-election-namespace", "", "Namespace of the leader election lease (default: the pod's namespace).")
	flag.StringVar(&o.clusterDomain, "cluster-domain", "cluster.local", "DNS suffix of Services.")
	flag.DurationVar(&o.debounce, "debounce", 20*time.Millisecond, "Coalesce changes: the first change after a quiet interval this long rebuilds at once, later ones wait up to this long; a steady stream still rebuilds at this interval.")
	flag.BoolVar(&o.debugConfig, "enable-debug-config", false, "Serve /debug/config?node=<pod>.<namespace> on the metrics endpoint, behind its authentication.")
	flag.BoolVar(&o.blockUnknown, "block-unknown-destinations", false, "Refuse outbound traffic to destinations outside the mesh instead of passing it through.")
	flag.IntVar(&o.webhookPort, "webhook-port", 9443, "Port of the sidecar injection webhook.")
	flag.StringVar(&o.webhookCertDir, "webhook-cert-dir", "/var/run/weft/webhook", "Directory with the webhook serving certificate (tls.crt, tls.key).")
	flag.BoolVar(&o.enableWebhook, "enable-injection", true, "Serve the sidecar injection webhook.")
	flag.BoolVar(&o.enableIdentity, "enable-identity", true, "Run the MeshIdentity reconciler (needs cert-manager's CRDs).")
	flag.StringVar(&o.tracingAddress, "tracing-address", "", "host:port of an OpenTelemetry collector (OTLP over gRPC) that sidecars report spans to; empty turns tracing off.")
	flag.Float64Var(&o.tracingSampling, "tracing-sampling-percent", 1, "Share of requests traced, 0 to 100, when --tracing-address is set.")
	flag.BoolVar(&o.accessLog, "access-log", true, "Sidecars write an access log line per request on stdout.")
	flag.StringVar(&o.accessLogFormat, "access-log-format", translate.AccessLogJSON, "Format of the sidecars' access log lines: json or logfmt (key=value pairs).")
	flag.BoolVar(&o.manageWebhookCert, "manage-webhook-certificate", false, "Keep the injection webhook's CA and serving certificate in the Secret --webhook-secret, renew them, write them to --webhook-cert-dir and set the webhook configuration's caBundle (instead of cert-manager).")
	flag.StringVar(&o.webhookSecret, "webhook-secret", "weft-webhook-tls", "Secret, in --control-plane-namespace, for --manage-webhook-certificate.")
	flag.StringVar(&o.webhookService, "webhook-service", "weft-webhook", "Service the API server calls the webhook through; the certificate's name.")
	flag.StringVar(&o.webhookConfiguration, "webhook-configuration", "weft-injector", "MutatingWebhookConfiguration whose caBundle --manage-webhook-certificate sets.")
	flag.StringVar(&o.proxyAPIAddr, "proxy-api-bind-address", ":9445", "Address of the proxy status API (debug.weft.dev, which the API server's aggregation layer forwards to: kubectl weft proxy-status and proxy-config); 0 disables it.")
	flag.StringVar(&o.proxyAPICertDir, "proxy-api-cert-dir", "/var/run/weft/webhook", "Directory with the proxy status API's serving certificate, key and CA (tls.crt, tls.key, ca.crt); replicas also show it to each other.")
	flag.StringVar(&o.proxyAPIService, "proxy-api-service", "weft-webhook", "Service, in --control-plane-namespace, the API server reaches the proxy status API through; its ready endpoints are the replicas a list gathers.")
	flag.StringVar(&o.apiService, "proxy-apiservice", "v1alpha1.debug.weft.dev", "APIService of the proxy status API, whose caBundle --manage-webhook-certificate sets too (it is served with the webhook's certificate); empty leaves it alone.")
	flag.StringVar(&o.podIP, "pod-ip", os.Getenv("POD_IP"), "This replica's pod IP (default $POD_IP), left out when asking the other replicas.")
	flag.StringVar(&o.podName, "pod-name", os.Getenv("POD_NAME"), "This replica's pod name (default $POD_NAME, else the host name), as the proxy status API reports it.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	injectFlags := bindInjectFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if err := run(ctrl.SetupSignalHandler(), o, injectFlags); err != nil {
		ctrl.Log.Error(err, "weft-controller stopped")
		os.Exit(1)
	}
}

func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, meshv1alpha1.AddToScheme, gwapiv1.Install, gwapiv1beta1.Install, cmapi.AddToScheme} {
		if err := add(s); err != nil {
			return nil, fmt.Errorf("building scheme: %w", err)
		}
	}
	return s, nil
}

func run(ctx context.Context, o options, inj *injectOptions) error {
	logger := ctrl.Log.WithName("setup")
	scheme, err := newScheme()
	if err != nil {
		return err
	}
	metricsOpts := metricsserver.Options{BindAddress: o.metricsAddr, SecureServing: o.metricsSecure}
	if o.metricsSecure {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	mgrOpts := ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  o.probeAddr,
		PprofBindAddress:        o.pprofAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        meshv1alpha1.LeaderElectionID,
		LeaderElectionNamespace: o.leaderNamespace,
		// Followers keep serving xDS while they wait; the leader steps down
		// fast on shutdown so status writing moves on quickly.
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(),
	}
	if o.enableWebhook {
		mgrOpts.WebhookServer = newWebhookServer(o)
	}
	var debugHandler *debugConfig
	if o.debugConfig {
		debugHandler = &debugConfig{}
		metricsOpts.ExtraHandlers = map[string]http.Handler{"/debug/config": debugHandler}
		mgrOpts.Metrics = metricsOpts
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), mgrOpts)
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}

	topts, err := o.translateOptions()
	if err != nil {
		return err
	}
	mesh := &controllers.MeshReconciler{
		Client:        mgr.GetClient(),
		ClusterDomain: o.clusterDomain,
		Debounce:      o.debounce,
		Translate:     topts,
		Metrics:       controllers.NewMetrics(metrics.Registry),
	}
	xdsOpts := server.Options{
		Address:    o.xdsAddr,
		Authorizer: mesh,
		Metrics:    server.NewMetrics(metrics.Registry),
		Log:        ctrl.Log.WithName("xds"),
		Insecure:   o.xdsInsecure,
	}
	if !o.xdsInsecure {
		ft, err := server.NewFileTLS(o.xdsCertDir)
		if err != nil {
			return fmt.Errorf("xDS serving certificate (or run with --xds-insecure for local development): %w", err)
		}
		xdsOpts.TLS = ft.Config()
	}
	xds, err := server.New(xdsOpts)
	if err != nil {
		return err
	}
	mesh.XDS = xds
	if debugHandler != nil {
		debugHandler.xds = xds
	}
	mesh.Status = controllers.NewStatusWriter(mgr.GetClient(), mesh.Metrics)
	if err := mgr.Add(xds); err != nil {
		return fmt.Errorf("adding xDS server: %w", err)
	}
	if err := mgr.Add(mesh.Status); err != nil {
		return fmt.Errorf("adding status writer: %w", err)
	}
	if err := mesh.SetupWithManager(mgr); err != nil {
		return err
	}
	if o.enableIdentity {
		if err := setupIdentity(mgr); err != nil {
			return err
		}
	}
	if o.enableWebhook {
		if o.manageWebhookCert {
			if err := setupWebhookCertificate(ctx, mgr, o, inj.cfg.ControlPlaneNamespace); err != nil {
				return err
			}
		}
		if err := setupInjection(mgr, inj); err != nil {
			return err
		}
	}
	if err := setupProxyAPI(mgr, o, inj.cfg.ControlPlaneNamespace, xds); err != nil {
		return err
	}
	if err := setupSidecarAudit(mgr, inj); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("adding health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", cacheSyncedCheck(mgr.GetCache(), readyzBound)); err != nil {
		return fmt.Errorf("adding ready check: %w", err)
	}
	logger.Info("starting weft-controller", "xds", o.xdsAddr, "insecure", o.xdsInsecure, "leaderElection", o.leaderElect)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("running manager: %w", err)
	}
	return nil
}

// debugConfig dumps one proxy's current configuration as JSON.
type debugConfig struct{ xds *server.Server }

func (d *debugConfig) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	node := r.URL.Query().Get("node")
	cfg, ok := d.xds.Config(node)
	if node == "" || !ok {
		http.Error(w, "no configuration for node "+node+" (use ?node=<pod>.<namespace>)", http.StatusNotFound)
		return
	}
	out := map[string]map[string]json.RawMessage{}
	for typ, resources := range cfg {
		m := map[string]json.RawMessage{}
		for _, res := range resources {
			b, err := protojson.Marshal(res)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			m[cachev3.GetResourceName(res)] = b
		}
		out[typ] = m
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// translateOptions are the flags that shape every proxy's configuration.
func (o options) translateOptions() (translate.Options, error) {
	t := translate.Options{BlockUnknown: o.blockUnknown, DisableAccessLog: !o.accessLog, AccessLogFormat: o.accessLogFormat}
	switch o.accessLogFormat {
	case "", translate.AccessLogJSON, translate.AccessLogLogfmt:
	default:
		return t, fmt.Errorf("--access-log-format=%q: want json or logfmt", o.accessLogFormat)
	}
	if o.tracingAddress == "" {
		return t, nil
	}
	host, port, err := net.SplitHostPort(o.tracingAddress)
	p, perr := strconv.ParseUint(port, 10, 16)
	if err != nil || perr != nil || host == "" || p == 0 {
		return t, fmt.Errorf("--tracing-address=%q: want host:port of the collector's OTLP gRPC port, e.g. otel-collector.observability.svc:4317", o.tracingAddress)
	}
	if o.tracingSampling < 0 || o.tracingSampling > 100 || math.IsNaN(o.tracingSampling) {
		return t, fmt.Errorf("--tracing-sampling-percent=%v: want a share between 0 and 100", o.tracingSampling)
	}
	t.Tracing = &translate.Tracing{Address: host, Port: uint32(p), SamplingPercent: o.tracingSampling}
	return t, nil
}
