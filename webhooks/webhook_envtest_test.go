package webhooks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/identity"
	"github.com/weft-mesh/weft/internal/inject"
	"github.com/weft-mesh/weft/internal/testenv"
	"github.com/weft-mesh/weft/webhooks"
)

const (
	awaitInterval = 50 * time.Millisecond
	awaitTimeout  = 30 * time.Second

	meshedNS   = "shop"
	unmeshedNS = "plain"
	appImage   = "example.com/shop/cart:1.4.2"
)

// TestWebhookThroughAPIServer installs the MutatingWebhookConfiguration that
// `make manifests` generates into a real API server, serves the injector from
// a controller-runtime manager, and creates objects through the API server,
// so every result below is what kubectl would get back: the webhook entries'
// namespace selectors and match conditions, the TLS hop, the JSON patch as
// the API server applies it, and the API server's own validation of the
// injected pod. There are no controllers, so pods are created directly.
func TestWebhookThroughAPIServer(t *testing.T) {
	c := startWebhook(t)
	ctx := t.Context()

	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: meshedNS, Labels: map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}}},
		{ObjectMeta: metav1.ObjectMeta{Name: unmeshedNS}},
		// The control plane's namespace, labelled as if by mistake.
		{ObjectMeta: metav1.ObjectMeta{Name: "weft-system", Labels: map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}}},
	} {
		if err := c.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	awaitWebhookActive(t, c)

	t.Run("labelled namespace", func(t *testing.T) {
		pod := appPod(meshedNS, "cart-1", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: appImage}}
		})
		got := create(t, c, pod)
		status := wantInjected(t, got, inject.ModeNativeSidecar)
		if got := names(got.Spec.InitContainers); !slices.Equal(got, []string{inject.InitContainerName, inject.ProxyContainerName, "migrate"}) {
			t.Errorf("init containers %v, want weft-init, weft-proxy, then the pod's own", got)
		}
		if got := names(got.Spec.Containers); !slices.Equal(got, []string{"cart"}) {
			t.Errorf("containers %v, want the app alone", got)
		}
		proxy := got.Spec.InitContainers[1]
		if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("weft-proxy restartPolicy %v, want Always (a native sidecar)", proxy.RestartPolicy)
		}
		if proxy.StartupProbe == nil {
			t.Error("weft-proxy has no startup probe to hold the app until it is ready")
		}
		if !slices.ContainsFunc(proxy.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.Name == inject.IdentityVolumeName && m.MountPath == inject.IdentityDir && m.ReadOnly
		}) {
			t.Errorf("weft-proxy mounts %+v, want the identity read-only at %s", proxy.VolumeMounts, inject.IdentityDir)
		}
		if !slices.Equal(status.Volumes, []string{inject.ProxyVolumeName, inject.IdentityVolumeName}) {
			t.Errorf("status volumes %v", status.Volumes)
		}
		wantIdentityVolume(t, got, "cart")
		if got.Labels[meshv1alpha1.LabelProxyVersion] != testConfig().ProxyVersion {
			t.Errorf("proxy version label %q", got.Labels[meshv1alpha1.LabelProxyVersion])
		}

		// What the create returned is what the API server stored.
		stored := &corev1.Pod{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(got), stored); err != nil {
			t.Fatal(err)
		}
		if stored.Annotations[meshv1alpha1.AnnotationStatus] != got.Annotations[meshv1alpha1.AnnotationStatus] || len(stored.Spec.InitContainers) != 3 {
			t.Error("the stored pod differs from the create response")
		}
		awaitEvent(t, c, meshedNS, "Pod", "cart-1", "injected weft v0.1.0 (native-sidecar)")
	})

	t.Run("opted out in a labelled namespace", func(t *testing.T) {
		pod := appPod(meshedNS, "cart-opted-out", withAnnotation(meshv1alpha1.AnnotationInject, meshv1alpha1.InjectFalse))
		wantUntouched(t, create(t, c, pod))
	})

	t.Run("opted in by annotation in an unlabelled namespace", func(t *testing.T) {
		pod := appPod(unmeshedNS, "cart-opted-in", withAnnotation(meshv1alpha1.AnnotationInject, meshv1alpha1.InjectTrue))
		got := create(t, c, pod)
		wantInjected(t, got, inject.ModeNativeSidecar)
		wantIdentityVolume(t, got, "cart")
		awaitEvent(t, c, unmeshedNS, "Pod", "cart-opted-in", "injected weft")
	})

	t.Run("unlabelled namespace without annotation", func(t *testing.T) {
		wantUntouched(t, create(t, c, appPod(unmeshedNS, "cart-plain")))
	})

	t.Run("grpc-agent", func(t *testing.T) {
		pod := appPod(meshedNS, "greeter-1", withAnnotation(meshv1alpha1.AnnotationInject, meshv1alpha1.InjectGRPCAgent))
		got := create(t, c, pod)
		status := wantInjected(t, got, inject.ModeGRPCAgent)
		if len(got.Spec.InitContainers) != 0 || !slices.Equal(names(got.Spec.Containers), []string{"cart"}) {
			t.Errorf("init containers %v, containers %v: grpc-agent must add no containers and no Envoy",
				names(got.Spec.InitContainers), names(got.Spec.Containers))
		}
		if !slices.Equal(status.ConfiguredContainers, []string{"cart"}) {
			t.Errorf("status configured containers %v", status.ConfiguredContainers)
		}
		app := got.Spec.Containers[0]
		i := slices.IndexFunc(app.Env, func(e corev1.EnvVar) bool { return e.Name == inject.EnvGRPCBootstrapConfig })
		if i < 0 {
			t.Fatalf("app env %+v, want %s", app.Env, inject.EnvGRPCBootstrapConfig)
		}
		var boot struct {
			XDSServers []struct {
				ServerURI string `json:"server_uri"`
			} `json:"xds_servers"`
			Node struct {
				ID string `json:"id"`
			} `json:"node"`
			CertificateProviders map[string]json.RawMessage `json:"certificate_providers"`
		}
		if err := json.Unmarshal([]byte(app.Env[i].Value), &boot); err != nil {
			t.Fatalf("gRPC bootstrap: %v", err)
		}
		if len(boot.XDSServers) != 1 || boot.XDSServers[0].ServerURI != testConfig().XDSAddress || boot.Node.ID != "greeter-1."+meshedNS {
			t.Errorf("gRPC bootstrap %s", app.Env[i].Value)
		}
		if _, ok := boot.CertificateProviders[inject.GRPCCertProviderInstance]; !ok {
			t.Errorf("gRPC bootstrap has no %s certificate provider", inject.GRPCCertProviderInstance)
		}
		if !slices.ContainsFunc(app.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.Name == inject.IdentityVolumeName && m.MountPath == inject.IdentityDir && m.ReadOnly
		}) {
			t.Errorf("app mounts %+v, want the identity read-only at %s", app.VolumeMounts, inject.IdentityDir)
		}
		wantIdentityVolume(t, got, "cart")
		awaitEvent(t, c, meshedNS, "Pod", "greeter-1", "(grpc-agent)")
	})

	t.Run("bad annotation is rejected", func(t *testing.T) {
		pod := appPod(meshedNS, "cart-bad", withAnnotation(meshv1alpha1.AnnotationExcludeOutboundPorts, "5432,postgres"))
		err := c.Create(ctx, pod)
		if err == nil {
			t.Fatal("pod with a bad exclude-outbound-ports annotation was created")
		}
		msg := err.Error()
		for _, want := range []string{`admission webhook "namespace.inject.weft.dev" denied the request`, "annotation " + meshv1alpha1.AnnotationExcludeOutboundPorts + "=", "postgres"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not contain %q", msg, want)
			}
		}
		if !apierrors.IsForbidden(err) {
			t.Errorf("error %v is not Forbidden", err)
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{}); !apierrors.IsNotFound(err) {
			t.Errorf("get rejected pod: %v, want NotFound", err)
		}
	})

	t.Run("system namespaces", func(t *testing.T) {
		for _, ns := range []string{"kube-system", "weft-system"} {
			pod := appPod(ns, "cart-system", withAnnotation(meshv1alpha1.AnnotationInject, meshv1alpha1.InjectTrue))
			wantUntouched(t, create(t, c, pod))
		}
	})

	t.Run("pod named after admission", func(t *testing.T) {
		// As a ReplicaSet creates them: generateName and a controller
		// reference. The event goes to the ReplicaSet, since the pod's
		// name is not known while it is admitted.
		rs := &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: "cart-7d9f8", Namespace: meshedNS},
			Spec: appsv1.ReplicaSetSpec{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "cart"}},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "cart"}},
					Spec:       appPod(meshedNS, "").Spec,
				},
			},
		}
		if err := c.Create(ctx, rs); err != nil {
			t.Fatal(err)
		}
		pod := appPod(meshedNS, "", func(p *corev1.Pod) {
			p.GenerateName = "cart-7d9f8-"
			p.Labels = map[string]string{"app": "cart"}
			p.OwnerReferences = []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
			}}
		})
		got := create(t, c, pod)
		wantInjected(t, got, inject.ModeNativeSidecar)
		if !strings.HasPrefix(got.Name, "cart-7d9f8-") {
			t.Errorf("pod name %q", got.Name)
		}
		awaitEvent(t, c, meshedNS, "ReplicaSet", rs.Name, "into a new pod cart-7d9f8-*")
	})

	t.Run("deployment is never modified", func(t *testing.T) {
		// The same Deployment in a namespace the webhook never sees: both
		// must come back identical, with only the API server's defaults.
		var specs []appsv1.DeploymentSpec
		for _, ns := range []string{meshedNS, unmeshedNS} {
			d := deployment(ns)
			want := d.DeepCopy()
			if err := c.Create(ctx, d); err != nil {
				t.Fatal(err)
			}
			tmpl := d.Spec.Template
			if !maps.Equal(tmpl.Annotations, want.Spec.Template.Annotations) || !maps.Equal(tmpl.Labels, want.Spec.Template.Labels) ||
				!maps.Equal(d.Annotations, want.Annotations) || !maps.Equal(d.Labels, want.Labels) {
				t.Errorf("%s: deployment metadata or template metadata changed: %+v / %+v", ns, d.ObjectMeta, tmpl.ObjectMeta)
			}
			if !slices.Equal(names(tmpl.Spec.InitContainers), names(want.Spec.Template.Spec.InitContainers)) ||
				!slices.Equal(names(tmpl.Spec.Containers), names(want.Spec.Template.Spec.Containers)) || len(tmpl.Spec.Volumes) != 0 {
				t.Errorf("%s: deployment template changed: init %v containers %v volumes %d", ns,
					names(tmpl.Spec.InitContainers), names(tmpl.Spec.Containers), len(tmpl.Spec.Volumes))
			}
			specs = append(specs, d.Spec)
		}
		if d := cmpJSON(t, specs[0], specs[1]); d != "" {
			t.Errorf("the Deployment in the labelled namespace differs from the one in the plain namespace:\n%s", d)
		}
	})
}

// startWebhook starts the API server with the generated webhook
// configuration and a manager serving the injector where envtest points it.
func startWebhook(t *testing.T) client.Client {
	t.Helper()
	return startWebhookEnv(t).Client
}

// startWebhookEnv is startWebhook, returning the whole environment.
func startWebhookEnv(t *testing.T) *testenv.Env {
	t.Helper()
	if testing.Verbose() {
		ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr)))
	} else {
		ctrl.SetLogger(logr.Discard())
	}
	env := testenv.Start(t, func(e *envtest.Environment) {
		e.WebhookInstallOptions = envtest.WebhookInstallOptions{
			Paths: []string{filepath.Join(testenv.RepoRoot(), "config", "webhook", "manifests.yaml")},
		}
	})
	wo := env.Environment().WebhookInstallOptions
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    wo.LocalServingHost,
			Port:    wo.LocalServingPort,
			CertDir: wo.LocalServingCertDir,
		}),
	})
	if err != nil {
		t.Fatalf("manager: %v", err)
	}
	if err := webhooks.SetupWithManager(mgr, testConfig()); err != nil {
		t.Fatalf("SetupWithManager: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	started := mgr.GetWebhookServer().StartedChecker()
	await(t, "webhook server listening", func(context.Context) (bool, string, error) {
		if err := started(nil); err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	})
	return env
}

// awaitWebhookActive waits until the API server calls the webhook: it
// learns about webhook configurations through an informer, so the first
// pods after installing one could slip past it. A dry run records nothing.
func awaitWebhookActive(t *testing.T, c client.Client) {
	t.Helper()
	await(t, "API server calling the injector", func(ctx context.Context) (bool, string, error) {
		pod := appPod(meshedNS, "probe")
		if err := c.Create(ctx, pod, client.DryRunAll); err != nil {
			return false, err.Error(), nil
		}
		_, ok := pod.Annotations[meshv1alpha1.AnnotationStatus]
		return ok, "dry-run pod not injected", nil
	})
}

func testConfig() inject.Config {
	cfg := inject.DefaultConfig()
	cfg.ProxyImage = "example.com/weft/proxy:v0.1.0"
	cfg.InitImage = "example.com/weft/init:v0.1.0"
	cfg.ProxyVersion = "v0.1.0"
	// envtest's API server is far newer than 1.29.
	cfg.NativeSidecars = true
	return cfg
}

func appPod(ns, name string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			ServiceAccountName: "cart",
			Containers: []corev1.Container{{
				Name:  "cart",
				Image: appImage,
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			}},
		},
	}
	for _, m := range mutate {
		m(pod)
	}
	return pod
}

func withAnnotation(key, value string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[key] = value
	}
}

func deployment(ns string) *appsv1.Deployment {
	pod := appPod(ns, "")
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "cart", Namespace: ns, Labels: map[string]string{"app": "cart"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "cart"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      map[string]string{"app": "cart"},
					Annotations: map[string]string{meshv1alpha1.AnnotationInject: meshv1alpha1.InjectTrue},
				},
				Spec: pod.Spec,
			},
		},
	}
}

// create creates pod through the API server and returns what it stored.
func create(t *testing.T, c client.Client, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	if err := c.Create(t.Context(), pod); err != nil {
		t.Fatalf("create pod %s/%s%s: %v", pod.Namespace, pod.Name, pod.GenerateName, err)
	}
	return pod
}

func wantInjected(t *testing.T, pod *corev1.Pod, mode inject.Mode) inject.Status {
	t.Helper()
	raw, ok := pod.Annotations[meshv1alpha1.AnnotationStatus]
	if !ok {
		t.Fatalf("pod %s/%s has no %s annotation: not injected", pod.Namespace, pod.Name, meshv1alpha1.AnnotationStatus)
	}
	var status inject.Status
	if err := json.Unmarshal([]byte(raw), &status); err != nil {
		t.Fatalf("status annotation %q: %v", raw, err)
	}
	if status.Mode != mode || status.Version != testConfig().ProxyVersion {
		t.Errorf("status %+v, want mode %s version %s", status, mode, testConfig().ProxyVersion)
	}
	if mode != inject.ModeGRPCAgent {
		if len(pod.Spec.InitContainers) < 2 || pod.Spec.InitContainers[0].Name != inject.InitContainerName {
			t.Errorf("init containers %v, want weft-init first", names(pod.Spec.InitContainers))
		}
	}
	return status
}

// wantUntouched checks that the API server stored the pod as submitted.
func wantUntouched(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if _, ok := pod.Annotations[meshv1alpha1.AnnotationStatus]; ok {
		t.Errorf("pod %s/%s was injected", pod.Namespace, pod.Name)
	}
	if len(pod.Spec.InitContainers) != 0 || !slices.Equal(names(pod.Spec.Containers), []string{"cart"}) || len(pod.Spec.Volumes) != 0 {
		t.Errorf("pod %s/%s changed: init %v containers %v volumes %d", pod.Namespace, pod.Name,
			names(pod.Spec.InitContainers), names(pod.Spec.Containers), len(pod.Spec.Volumes))
	}
	if _, ok := pod.Labels[meshv1alpha1.LabelProxyVersion]; ok {
		t.Errorf("pod %s/%s has the proxy version label", pod.Namespace, pod.Name)
	}
}

// wantIdentityVolume checks the identity volume as the API server stored
// it: the certificate and key from the service account's Secret and ca.crt
// from the namespace's trust bundle.
func wantIdentityVolume(t *testing.T, pod *corev1.Pod, sa string) {
	t.Helper()
	i := slices.IndexFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == inject.IdentityVolumeName })
	if i < 0 {
		t.Fatalf("pod %s/%s has no %s volume", pod.Namespace, pod.Name, inject.IdentityVolumeName)
	}
	p := pod.Spec.Volumes[i].Projected
	if p == nil || len(p.Sources) != 2 || p.Sources[0].Secret == nil || p.Sources[1].ConfigMap == nil {
		t.Fatalf("identity volume %+v, want a projected Secret and ConfigMap", pod.Spec.Volumes[i].VolumeSource)
	}
	if s := p.Sources[0].Secret; s.Name != identity.CertificateName(sa) || ptr.Deref(s.Optional, false) ||
		!slices.Equal(keys(s.Items), []string{"tls.crt", "tls.key"}) {
		t.Errorf("identity secret source %+v", s)
	}
	if cm := p.Sources[1].ConfigMap; cm.Name != identity.TrustBundleName || ptr.Deref(cm.Optional, false) ||
		!slices.Equal(keys(cm.Items), []string{identity.TrustBundleKey}) {
		t.Errorf("trust bundle source %+v", cm)
	}
}

// awaitEvent waits for an Injected event about the named object whose note
// contains note.
func awaitEvent(t *testing.T, c client.Client, ns, kind, name, note string) {
	t.Helper()
	await(t, fmt.Sprintf("Injected event on %s %s/%s", kind, ns, name), func(ctx context.Context) (bool, string, error) {
		var list eventsv1.EventList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, "", err
		}
		var seen []string
		for _, e := range list.Items {
			if e.Reason == webhooks.ReasonInjected && e.Regarding.Kind == kind && e.Regarding.Name == name && strings.Contains(e.Note, note) {
				if e.Type != corev1.EventTypeNormal || e.ReportingController != webhooks.EventRecorderName {
					return false, "", fmt.Errorf("event %+v, want Normal from %s", e, webhooks.EventRecorderName)
				}
				return true, "", nil
			}
			seen = append(seen, fmt.Sprintf("%s %s/%s: %s", e.Reason, e.Regarding.Kind, e.Regarding.Name, e.Note))
		}
		return false, fmt.Sprintf("events %q", seen), nil
	})
}

func await(t *testing.T, what string, cond func(ctx context.Context) (bool, string, error)) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(t.Context(), awaitInterval, awaitTimeout, true, func(ctx context.Context) (bool, error) {
		ok, state, err := cond(ctx)
		last = state
		return ok, err
	})
	if err != nil {
		t.Fatalf("%s: %v; last seen: %s", what, err, last)
	}
}

func names(cs []corev1.Container) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func keys(items []corev1.KeyToPath) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, it.Key)
	}
	return out
}

// cmpJSON returns "" when a and b marshal to the same JSON, else both.
func cmpJSON(t *testing.T, a, b any) string {
	t.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if string(ja) == string(jb) {
		return ""
	}
	return fmt.Sprintf("%s\n%s", ja, jb)
}
