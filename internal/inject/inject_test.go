package inject

import (
	"encoding/json"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"gomodules.xyz/jsonpatch/v2"
	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	goldenfile "github.com/weft-mesh/weft/internal/golden"
	"github.com/weft-mesh/weft/internal/identity"
	"github.com/weft-mesh/weft/internal/workload"
)

// golden is what testdata/<case>.patch.json holds.
type golden struct {
	Result   string                `json:"result"`
	Mode     Mode                  `json:"mode,omitempty"`
	Reason   SkipReason            `json:"reason,omitempty"`
	Message  string                `json:"message,omitempty"`
	Warnings []string              `json:"warnings,omitempty"`
	Patch    []jsonpatch.Operation `json:"patch,omitempty"`
}

type outcome struct {
	in  *corev1.Pod
	res *Result
	err error
}

// statsTags reads the stats tags of the injected proxy's bootstrap: a
// fixed tag's value, a regex tag's regex.
func statsTags(t *testing.T, pod *corev1.Pod) map[string]string {
	t.Helper()
	boot, ok := env(container(pod, InitContainerName), EnvProxyBootstrap)
	if !ok {
		t.Fatal("no bootstrap")
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal([]byte(boot.Value), b); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, tag := range b.GetStatsConfig().GetStatsTags() {
		out[tag.GetTagName()] = tag.GetFixedValue() + tag.GetRegex()
	}
	return out
}

func TestInjectGolden(t *testing.T) {
	older := func(c *Config) { c.NativeSidecars = false }
	cases := []struct {
		name   string
		config func(*Config)
		check  func(t *testing.T, o outcome)
	}{
		{name: "namespace-label", check: func(t *testing.T, o outcome) {
			wantInjected(t, o, ModeNativeSidecar)
			if got := names(o.res.Pod.Spec.InitContainers); !slices.Equal(got, []string{InitContainerName, ProxyContainerName}) {
				t.Errorf("init containers %v", got)
			}
			if got := names(o.res.Pod.Spec.Containers); !slices.Equal(got, []string{"cart"}) {
				t.Errorf("containers %v, want the app alone", got)
			}
		}},
		{name: "deployment-pod", check: func(t *testing.T, o outcome) {
			wantInjected(t, o, ModeNativeSidecar)
			tags := statsTags(t, o.res.Pod)
			want := map[string]string{StatsTagWorkloadNamespace: "shop", StatsTagWorkload: "checkout-v2", StatsTagWorkloadKind: "Deployment", StatsTagWorkloadRevision: "5d8f7c9b4", StatsTagDestinationService: DestinationServiceTagRegex}
			if !maps.Equal(tags, want) {
				t.Errorf("the proxy's stats tags are %v, want %v", tags, want)
			}
			ann := o.res.Pod.Annotations
			if ann[AnnotationPrometheusScrape] != "true" || ann[AnnotationPrometheusPort] != "15090" || ann[AnnotationPrometheusPath] != "/stats/prometheus" {
				t.Errorf("scrape annotations %v, want the proxy's stats port and path", ann)
			}
		}},
		{name: "own-metrics-annotations", check: func(t *testing.T, o outcome) {
			wantInjected(t, o, ModeNativeSidecar)
			ann := o.res.Pod.Annotations
			if ann[AnnotationPrometheusPort] != "9102" || ann[AnnotationPrometheusPath] != "" {
				t.Errorf("the application's scrape annotations were changed: %v", ann)
			}
			if len(o.res.Warnings) != 1 || !strings.Contains(o.res.Warnings[0], "PodMonitor") {
				t.Errorf("warnings %q, want one saying how the proxy's metrics are scraped", o.res.Warnings)
			}
		}},
		{name: "annotation-opt-out", check: func(t *testing.T, o outcome) { wantSkipped(t, o, SkipOptedOut) }},
		{name: "annotation-opt-in", check: func(t *testing.T, o outcome) { wantInjected(t, o, ModeNativeSidecar) }},
		{name: "not-enabled", check: func(t *testing.T, o outcome) { wantSkipped(t, o, SkipNotEnabled) }},
		{name: "bad-inject-value", check: func(t *testing.T, o outcome) {
			wantRejected(t, o, meshv1alpha1.AnnotationInject, `"yes"`, "grpc-agent")
		}},
		{name: "kube-system", check: func(t *testing.T, o outcome) { wantSkipped(t, o, SkipSystemNamespace) }},
		{name: "control-plane-namespace", check: func(t *testing.T, o outcome) { wantSkipped(t, o, SkipSystemNamespace) }},
		{name: "existing-init-containers", check: func(t *testing.T, o outcome) {
			wantInjected(t, o, ModeNativeSidecar)
			want := []string{InitContainerName, ProxyContainerName, "migrate", "warm-cache"}
			if got := names(o.res.Pod.Spec.InitContainers); !slices.Equal(got, want) {
				t.Errorf("init containers %v, want %v", got, want)
			}
			for i, c := range o.in.Spec.InitContainers {
				if !reflect.DeepEqual(o.res.Pod.Spec.InitContainers[i+2], c) {
					t.Errorf("user init container %s changed", c.Name)
				}
			}
		}},
		{name: "job", check: func(t *testing.T, o outcome) {
			// Native sidecars end with the Job's containers, so no warning.
			wantInjected(t, o, ModeNativeSidecar)
			if len(o.res.Warnings) != 0 {
				t.Errorf("warnings %q, want none", o.res.Warnings)
			}
			b := proxyBootstrap(t, o.res.Pod)
			if want := "$(WEFT_POD_NAME).batch"; b.GetNode().GetId() != want {
				t.Errorf("node id %q, want %q (filled in by the kubelet)", b.GetNode().GetId(), want)
			}
			initC := container(o.res.Pod, InitContainerName)
			podName, ok := env(initC, EnvPodName)
			if !ok || podName.ValueFrom.FieldRef.FieldPath != "metadata.name" {
				t.Errorf("weft-init lacks %s from metadata.name", EnvPodName)
			}
			if slices.IndexFunc(initC.Env, func(e corev1.EnvVar) bool { return e.Name == EnvPodName }) >
				slices.IndexFunc(initC.Env, func(e corev1.EnvVar) bool { return e.Name == EnvProxyBootstrap }) {
				t.Errorf("%s must be defined before %s for $(...) expansion", EnvPodName, EnvProxyBootstrap)
			}
			if got := identitySecretName(t, o.res.Pod); got != "weft-identity-reports" {
				t.Errorf("identity secret %q", got)
			}
		}},
		{name: "exclude-inbound-ports", check: func(t *testing.T, o outcome) {
			wantInjected(t, o, ModeNativeSidecar)
			wantInitArg(t, o, "--exclude-inbound-ports=8443,9901")
		}},
		{name: "exclude-outbound-ports", check: func(t *testing.T, o outcome) {
			wantInjected(t, o, ModeNativeSidecar)
			wantInitArg(t, o, "--exclude-outbound-ports=5432,6379")
		}},
		{name: "exclude-outbound-cidrs", check: func(t *testing.T, o outcome) {
			wantInjected(t, o, ModeNativeSidecar)
			wantInitArg(t, o, "--exclude-outbound-cidrs=10.96.0.0/12,169.254.169.254/32,fd00:10:96::/112")
		}},
		{name: "bad-exclusion", check: func(t *testing.T, o outcome) {
			wantRejected(t, o, meshv1alpha1.AnnotationExcludeInboundPorts, `"http" is not a port number`)
			wantRejected(t, o, meshv1alpha1.AnnotationExcludeOutboundCIDRs, "the network is 10.0.0.0/8")
		}},
		{name: "resource-overrides", check: func(t *testing.T, o outcome) {
			wantInjected(t, o, ModeNativeSidecar)
			r := container(o.res.Pod, ProxyContainerName).Resources
			for _, q := range []struct {
				got  resource.Quantity
				want string
			}{{r.Requests[corev1.ResourceCPU], "250m"}, {r.Requests[corev1.ResourceMemory], "256Mi"}, {r.Limits[corev1.ResourceCPU], "1"}, {r.Limits[corev1.ResourceMemory], "512Mi"}} {
				if q.got.Cmp(resource.MustParse(q.want)) != 0 {
					t.Errorf("proxy resource %s, want %s", q.got.String(), q.want)
				}
			}
		}},
		{name: "bad-resource-quantity", check: func(t *testing.T, o outcome) {
			wantRejected(t, o, meshv1alpha1.AnnotationProxyMemory, `"lots"`, "not a resource quantity")
		}},
		{name: "resource-request-over-limit", check: func(t *testing.T, o outcome) {
			wantRejected(t, o, meshv1alpha1.AnnotationProxyCPU, "request 4 exceeds limit 2", meshv1alpha1.AnnotationProxyCPULimit)
		}},
		{name: "log-level", check: func(t *testing.T, o outcome) {
			wantInjected(t, o, ModeNativeSidecar)
			args := container(o.res.Pod, ProxyContainerName).Args
			if i := slices.Index(args, "--log-level"); i < 0 || args[i+1] != "debug" {
				t.Errorf("proxy args %q, want --log-level debug", args)
			}
		}},
		{name: "bad-log-level", check: func(t *testing.T, o outcome) {
			wantRejected(t, o, meshv1alpha1.AnnotationProxyLogLevel, "trace, debug, info, warn, error")
		}},
		{name: "image-override", check: func(t *testing.T, o outcome) {
			wantInjected(t, o, ModeNativeSidecar)
			if got := container(o.res.Pod, ProxyContainerName).Image; got != "example.com/weft/proxy:v0.2.0-rc.1" {
				t.Errorf("proxy image %q", got)
			}
			if got := container(o.res.Pod, InitContainerName).Image; got != testConfig().InitImage {
				t.Errorf("init image %q changed by the proxy image annotation", got)
			}
		}},
		{name: "host-network", check: func(t *testing.T, o outcome) { wantSkipped(t, o, SkipHostNetwork) }},
		{name: "already-injected", check: func(t *testing.T, o outcome) { wantSkipped(t, o, SkipAlreadyInjected) }},
		{name: "proxy-container-without-status", check: func(t *testing.T, o outcome) { wantSkipped(t, o, SkipAlreadyInjected) }},
		{name: "older-api-server", config: older, check: func(t *testing.T, o outcome) {
			wantInjected(t, o, ModeSidecar)
			pod := o.res.Pod
			if got := names(pod.Spec.InitContainers); !slices.Equal(got, []string{InitContainerName}) {
				t.Errorf("init containers %v, want weft-init alone", got)
			}
			if got := names(pod.Spec.Containers); !slices.Equal(got, []string{ProxyContainerName, "cart"}) {
				t.Errorf("containers %v, want the proxy first", got)
			}
			proxy := container(pod, ProxyContainerName)
			if proxy.RestartPolicy != nil || proxy.StartupProbe != nil {
				t.Error("a regular container cannot have a restartPolicy, and a startup probe would not hold the app")
			}
			ps := proxy.Lifecycle.PostStart
			if ps == nil || ps.Exec == nil || !slices.Contains(ps.Exec.Command, "wait-ready") || !slices.Contains(ps.Exec.Command, "--url=http://127.0.0.1:15021/ready") {
				t.Errorf("postStart %+v, want weft-init wait-ready on the readiness port", ps)
			}
			if pod.Annotations[AnnotationDefaultContainer] != "cart" {
				t.Errorf("default container %q, want the app", pod.Annotations[AnnotationDefaultContainer])
			}
		}},
		{name: "older-api-server-job", config: older, check: func(t *testing.T, o outcome) {
			wantInjected(t, o, ModeSidecar)
			joined := strings.Join(o.res.Warnings, "\n")
			for _, want := range []string{"restartPolicy Never) will not complete", "init containers run before weft-proxy starts"} {
				if !strings.Contains(joined, want) {
					t.Errorf("warnings %q, want one containing %q", o.res.Warnings, want)
				}
			}
		}},
		{name: "grpc-agent", check: func(t *testing.T, o outcome) {
			wantInjected(t, o, ModeGRPCAgent)
			pod := o.res.Pod
			if len(pod.Spec.InitContainers) != 0 || len(pod.Spec.Containers) != 1 {
				t.Errorf("grpc-agent must add no containers, got init %v containers %v", names(pod.Spec.InitContainers), names(pod.Spec.Containers))
			}
			if len(o.res.Warnings) != 1 || !strings.Contains(o.res.Warnings[0], meshv1alpha1.AnnotationProxyCPU) {
				t.Errorf("warnings %q, want one about %s having no effect", o.res.Warnings, meshv1alpha1.AnnotationProxyCPU)
			}
			app := container(pod, "cart")
			e, ok := env(app, EnvGRPCBootstrapConfig)
			if !ok {
				t.Fatalf("app has no %s", EnvGRPCBootstrapConfig)
			}
			checkGRPCBootstrap(t, e.Value, "cart-7d9f8.shop", "cart.shop")
			if !slices.ContainsFunc(app.VolumeMounts, func(m corev1.VolumeMount) bool {
				return m.Name == IdentityVolumeName && m.MountPath == IdentityDir && m.ReadOnly
			}) {
				t.Errorf("app mounts %+v, want the identity read-only at %s", app.VolumeMounts, IdentityDir)
			}
		}},
	}

	seen := map[string]bool{}
	for _, tc := range cases {
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			ns, pod := loadCase(t, tc.name)
			cfg := testConfig()
			if tc.config != nil {
				tc.config(&cfg)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			before := pod.DeepCopy()
			res, err := Inject(pod, ns.Labels, cfg)
			if !reflect.DeepEqual(pod, before) {
				t.Error("Inject modified its input pod")
			}
			o := outcome{in: before, res: res, err: err}
			compareGolden(t, tc.name, o)
			tc.check(t, o)
			if err == nil && res.Skip == nil {
				checkInjected(t, o, ns.Labels, cfg)
			}
		})
	}
	// Every input has a case, so no golden goes unchecked.
	inputs, err := filepath.Glob(filepath.Join("testdata", "*.pod.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range inputs {
		if name := strings.TrimSuffix(filepath.Base(in), ".pod.yaml"); !seen[name] {
			t.Errorf("testdata/%s.pod.yaml has no test case", name)
		}
	}
}

func compareGolden(t *testing.T, name string, o outcome) {
	t.Helper()
	var g golden
	switch {
	case o.err != nil:
		g = golden{Result: "rejected", Message: o.err.Error()}
	case o.res.Skip != nil:
		g = golden{Result: "skipped", Reason: o.res.Skip.Reason, Message: o.res.Skip.Message}
	default:
		g = golden{Result: "injected", Mode: o.res.Mode, Warnings: o.res.Warnings, Patch: o.res.Patch}
	}
	got, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	goldenfile.Check(t, filepath.Join("testdata", name+".patch.json"), got)
}

func wantInjected(t *testing.T, o outcome, mode Mode) {
	t.Helper()
	if o.err != nil {
		t.Fatalf("Inject failed: %v", o.err)
	}
	if o.res.Skip != nil {
		t.Fatalf("skipped (%s: %s), want injected", o.res.Skip.Reason, o.res.Skip.Message)
	}
	if o.res.Mode != mode {
		t.Errorf("mode %s, want %s", o.res.Mode, mode)
	}
}

func wantSkipped(t *testing.T, o outcome, reason SkipReason) {
	t.Helper()
	if o.err != nil {
		t.Fatalf("Inject failed: %v", o.err)
	}
	if o.res.Skip == nil {
		t.Fatal("injected, want skipped")
	}
	if o.res.Skip.Reason != reason || o.res.Skip.Message == "" {
		t.Errorf("skip %s (%q), want %s with a message", o.res.Skip.Reason, o.res.Skip.Message, reason)
	}
	if o.res.Pod != nil || len(o.res.Patch) != 0 {
		t.Error("a skipped pod must come with no pod and no patch")
	}
}

func wantRejected(t *testing.T, o outcome, annotation string, fragments ...string) {
	t.Helper()
	if o.err == nil {
		t.Fatal("accepted, want rejected")
	}
	if !IsRejection(o.err) {
		t.Errorf("error %v is not a rejection", o.err)
	}
	for _, line := range strings.Split(o.err.Error(), "\n") {
		if !strings.Contains(line, "annotation "+annotation+"=") {
			continue
		}
		for _, f := range fragments {
			if !strings.Contains(line, f) {
				t.Errorf("message %q does not contain %q", line, f)
			}
		}
		return
	}
	t.Errorf("message %q does not name annotation %s", o.err, annotation)
}

func wantInitArg(t *testing.T, o outcome, arg string) {
	t.Helper()
	if c := container(o.res.Pod, InitContainerName); !hasArg(c, arg) {
		t.Errorf("weft-init args %q, want %s", c.Args, arg)
	}
}

// checkInjected asserts what every injected pod must satisfy.
func checkInjected(t *testing.T, o outcome, nsLabels map[string]string, cfg Config) {
	t.Helper()
	pod := o.res.Pod

	// The patch turns the submitted pod into the injected one.
	orig, err := json.Marshal(o.in)
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	rawPatch, err := json.Marshal(o.res.Patch)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatchapply.DecodePatch(rawPatch)
	if err != nil {
		t.Fatalf("patch is not RFC 6902: %v", err)
	}
	patched, err := p.Apply(orig)
	if err != nil {
		t.Fatalf("patch does not apply: %v", err)
	}
	if !jsonpatchapply.Equal(patched, want) {
		t.Errorf("patched pod differs from the injected pod:\n%s\nwant\n%s", patched, want)
	}

	// Deterministic, and idempotent: injecting the result changes nothing.
	again, err := Inject(o.in, nsLabels, cfg)
	if err != nil || !reflect.DeepEqual(again.Patch, o.res.Patch) {
		t.Error("a second Inject of the same pod gave a different patch")
	}
	twice, err := Inject(pod, nsLabels, cfg)
	if err != nil || twice.Skip == nil || twice.Skip.Reason != SkipAlreadyInjected {
		t.Errorf("injecting an injected pod: %+v, %v; want skipped as already injected", twice, err)
	}

	var status Status
	if err := json.Unmarshal([]byte(pod.Annotations[meshv1alpha1.AnnotationStatus]), &status); err != nil {
		t.Fatalf("status annotation: %v", err)
	}
	if !reflect.DeepEqual(&status, o.res.Status) || status.Version != cfg.ProxyVersion || status.Mode != o.res.Mode {
		t.Errorf("status annotation %+v, result status %+v", status, o.res.Status)
	}
	if pod.Annotations[meshv1alpha1.AnnotationProxyVersion] != cfg.ProxyVersion || pod.Labels[meshv1alpha1.LabelProxyVersion] != cfg.ProxyVersion {
		t.Errorf("proxy version annotation %q label %q, want %q", pod.Annotations[meshv1alpha1.AnnotationProxyVersion], pod.Labels[meshv1alpha1.LabelProxyVersion], cfg.ProxyVersion)
	}
	for _, c := range status.InitContainers {
		if container(pod, c) == nil || !slices.ContainsFunc(pod.Spec.InitContainers, func(x corev1.Container) bool { return x.Name == c }) {
			t.Errorf("status lists init container %s the pod lacks", c)
		}
	}
	for _, v := range status.Volumes {
		if !slices.ContainsFunc(pod.Spec.Volumes, func(x corev1.Volume) bool { return x.Name == v }) {
			t.Errorf("status lists volume %s the pod lacks", v)
		}
	}

	// Nothing but containers, volumes, labels and annotations changed.
	stripped := pod.DeepCopy()
	stripped.Spec.InitContainers, stripped.Spec.Containers, stripped.Spec.Volumes = o.in.Spec.InitContainers, o.in.Spec.Containers, o.in.Spec.Volumes
	stripped.Labels, stripped.Annotations = o.in.Labels, o.in.Annotations
	if !reflect.DeepEqual(stripped, o.in) {
		t.Error("Inject changed parts of the pod other than containers, volumes, labels and annotations")
	}

	// What the rest of Weft makes of the injected pod must match what it
	// was given: ingest, the sidecar audit and the xDS server read the
	// record this writes.
	w := workload.Of(pod, nsLabels)
	wantMode := workload.ModeSidecar
	if o.res.Mode == ModeGRPCAgent {
		wantMode = workload.ModeProxyless
	}
	if !w.Injected || !w.Meshed || w.Mode != wantMode || w.ProxyVersion != cfg.ProxyVersion {
		t.Errorf("workload.Of(injected pod) = injected %v, meshed %v, mode %q, proxy version %q; want injected, meshed, %q, %q",
			w.Injected, w.Meshed, w.Mode, w.ProxyVersion, wantMode, cfg.ProxyVersion)
	}

	if o.res.Mode == ModeGRPCAgent {
		checkIdentityVolume(t, pod, w.ServiceAccount)
		return
	}
	checkSidecar(t, o, cfg)
}

func checkSidecar(t *testing.T, o outcome, cfg Config) {
	t.Helper()
	pod := o.res.Pod
	if pod.Spec.InitContainers[0].Name != InitContainerName {
		t.Errorf("first init container is %s, want weft-init", pod.Spec.InitContainers[0].Name)
	}
	initC := container(pod, InitContainerName)
	isc := initC.SecurityContext
	if *isc.RunAsUser != 0 || *isc.RunAsNonRoot || *isc.AllowPrivilegeEscalation || *isc.Privileged ||
		!slices.Equal(isc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) ||
		!slices.Equal(isc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("weft-init security context %+v", isc)
	}
	for _, arg := range []string{"--inbound-port=15006", "--outbound-port=15001", "--proxy-uid=1337"} {
		if !hasArg(initC, arg) {
			t.Errorf("weft-init lacks %s", arg)
		}
	}

	proxy := container(pod, ProxyContainerName)
	if proxy == nil {
		t.Fatal("no weft-proxy container")
	}
	if o.res.Mode == ModeNativeSidecar {
		if pod.Spec.InitContainers[1].Name != ProxyContainerName {
			t.Errorf("second init container is %s, want weft-proxy", pod.Spec.InitContainers[1].Name)
		}
		if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Error("native sidecar needs restartPolicy Always")
		}
		sp := proxy.StartupProbe
		if sp == nil || sp.HTTPGet == nil || sp.HTTPGet.Path != "/ready" || sp.HTTPGet.Port.IntValue() != ReadinessPort {
			t.Errorf("startup probe %+v, want GET :15021/ready", sp)
		}
	} else if pod.Spec.Containers[0].Name != ProxyContainerName {
		t.Errorf("first container is %s, want weft-proxy", pod.Spec.Containers[0].Name)
	}
	rp := proxy.ReadinessProbe
	if rp == nil || rp.HTTPGet == nil || rp.HTTPGet.Path != "/ready" || rp.HTTPGet.Port.IntValue() != ReadinessPort {
		t.Errorf("readiness probe %+v, want GET :15021/ready", rp)
	}
	if ps := proxy.Lifecycle.PreStop; ps == nil || ps.Exec == nil || ps.Exec.Command[0] != InitBinaryPath || ps.Exec.Command[1] != "drain" {
		t.Errorf("preStop %+v, want weft-init drain", ps)
	}
	psc := proxy.SecurityContext
	if *psc.RunAsUser != cfg.ProxyUID || !*psc.RunAsNonRoot || !*psc.ReadOnlyRootFilesystem || *psc.AllowPrivilegeEscalation ||
		!slices.Equal(psc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(psc.Capabilities.Add) != 0 {
		t.Errorf("weft-proxy security context %+v", psc)
	}
	for _, m := range proxy.VolumeMounts {
		if !m.ReadOnly {
			t.Errorf("proxy mounts %s read-write", m.Name)
		}
	}
	if !slices.ContainsFunc(proxy.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == IdentityVolumeName && m.MountPath == IdentityDir }) {
		t.Errorf("proxy does not mount the identity at %s", IdentityDir)
	}
	sa := o.in.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	checkIdentityVolume(t, pod, sa)
	checkEnvoyBootstrap(t, proxyBootstrap(t, pod), o.in, sa)
}

func checkEnvoyBootstrap(t *testing.T, b *bootstrapv3.Bootstrap, in *corev1.Pod, sa string) {
	t.Helper()
	wantID := in.Name + "." + in.Namespace
	if in.Name == "" {
		wantID = "$(WEFT_POD_NAME)." + in.Namespace
	}
	if b.GetNode().GetId() != wantID || b.GetNode().GetCluster() != sa+"."+in.Namespace {
		t.Errorf("node %s / %s, want %s / %s.%s", b.GetNode().GetId(), b.GetNode().GetCluster(), wantID, sa, in.Namespace)
	}
	// The proxy must name itself as ingest lists it among a group's members.
	if id := workload.Of(in, nil).NodeID; id != "" && b.GetNode().GetId() != id {
		t.Errorf("node %s, but workload.Of names the pod %s", b.GetNode().GetId(), id)
	}
	admin := b.GetAdmin().GetAddress().GetSocketAddress()
	if admin.GetAddress() != "127.0.0.1" || admin.GetPortValue() != AdminPort {
		t.Errorf("admin on %s:%d, want 127.0.0.1:15000 only", admin.GetAddress(), admin.GetPortValue())
	}
	ads := b.GetDynamicResources().GetAdsConfig()
	if ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != XDSClusterName {
		t.Error("ADS does not use the xDS cluster")
	}
	ports := map[uint32]string{}
	for _, l := range b.GetStaticResources().GetListeners() {
		ports[l.GetAddress().GetSocketAddress().GetPortValue()] = l.GetName()
	}
	if ports[ReadinessPort] == "" || ports[StatsPort] == "" || len(ports) != 2 {
		t.Errorf("static listeners on %v, want exactly 15021 and 15090", ports)
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() != XDSClusterName {
			continue
		}
		ts := c.GetTransportSocket()
		if ts == nil || !strings.HasSuffix(ts.GetTypedConfig().GetTypeUrl(), "UpstreamTlsContext") {
			t.Error("xDS cluster does not use TLS")
		}
		ep := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if ep.GetAddress() != "weft-xds.weft-system.svc" || ep.GetPortValue() != 15010 {
			t.Errorf("xDS endpoint %s:%d", ep.GetAddress(), ep.GetPortValue())
		}
		return
	}
	t.Error("no xDS cluster")
}

func checkGRPCBootstrap(t *testing.T, raw, nodeID, cluster string) {
	t.Helper()
	var b struct {
		XDSServers []struct {
			ServerURI      string   `json:"server_uri"`
			ServerFeatures []string `json:"server_features"`
			ChannelCreds   []struct {
				Type   string            `json:"type"`
				Config map[string]string `json:"config"`
			} `json:"channel_creds"`
		} `json:"xds_servers"`
		Node struct {
			ID       string            `json:"id"`
			Cluster  string            `json:"cluster"`
			Metadata map[string]string `json:"metadata"`
		} `json:"node"`
		CertificateProviders map[string]struct {
			PluginName string            `json:"plugin_name"`
			Config     map[string]string `json:"config"`
		} `json:"certificate_providers"`
		Template string `json:"server_listener_resource_name_template"`
	}
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		t.Fatalf("grpc bootstrap: %v", err)
	}
	if len(b.XDSServers) != 1 || b.XDSServers[0].ServerURI != "weft-xds.weft-system.svc:15010" ||
		!slices.Equal(b.XDSServers[0].ServerFeatures, []string{"xds_v3"}) || b.XDSServers[0].ChannelCreds[0].Type != "tls" ||
		b.XDSServers[0].ChannelCreds[0].Config["certificate_file"] != CertificatePath {
		t.Errorf("xds servers %+v", b.XDSServers)
	}
	if b.Node.ID != nodeID || b.Node.Cluster != cluster {
		t.Errorf("node %+v, want id %s cluster %s", b.Node, nodeID, cluster)
	}
	p, ok := b.CertificateProviders[GRPCCertProviderInstance]
	if !ok || p.PluginName != "file_watcher" || p.Config["certificate_file"] != CertificatePath ||
		p.Config["private_key_file"] != PrivateKeyPath || p.Config["ca_certificate_file"] != CAPath {
		t.Errorf("certificate providers %+v", b.CertificateProviders)
	}
	if b.Template != "weft/inbound/%s" {
		t.Errorf("server listener template %q", b.Template)
	}
}

// checkIdentityVolume asserts that the identity volume projects the
// workload's certificate and key from its Secret and ca.crt from the trust
// bundle, all required, and that every container mounting it sees the whole
// directory (a subPath mount would never be updated by the kubelet).
func checkIdentityVolume(t *testing.T, pod *corev1.Pod, sa string) {
	t.Helper()
	i := slices.IndexFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == IdentityVolumeName })
	if i < 0 {
		t.Fatal("no identity volume")
	}
	v := pod.Spec.Volumes[i]
	p := v.Projected
	if p == nil || v.Secret != nil || v.ConfigMap != nil {
		t.Fatalf("identity volume %+v, want a projected volume", v.VolumeSource)
	}
	if p.DefaultMode == nil || *p.DefaultMode != 0o444 {
		t.Errorf("identity volume mode %v, want 0444 so the proxy's uid can read it", p.DefaultMode)
	}
	if len(p.Sources) != 2 {
		t.Fatalf("identity volume sources %+v, want the Secret and the trust bundle", p.Sources)
	}
	files := map[string]string{}
	for _, src := range p.Sources {
		switch {
		case src.Secret != nil:
			if want := identity.CertificateName(sa); src.Secret.Name != want {
				t.Errorf("identity secret %q, want %q", src.Secret.Name, want)
			}
			if src.Secret.Optional != nil && *src.Secret.Optional {
				t.Error("identity secret is optional; a pod without it would start unable to authenticate")
			}
			for _, it := range src.Secret.Items {
				files[it.Path] = "secret:" + it.Key
			}
		case src.ConfigMap != nil:
			if src.ConfigMap.Name != identity.TrustBundleName {
				t.Errorf("trust bundle configmap %q, want %q", src.ConfigMap.Name, identity.TrustBundleName)
			}
			if src.ConfigMap.Optional != nil && *src.ConfigMap.Optional {
				t.Error("trust bundle is optional; a pod without it would start trusting no one")
			}
			for _, it := range src.ConfigMap.Items {
				files[it.Path] = "configmap:" + it.Key
			}
		default:
			t.Errorf("unexpected identity volume source %+v", src)
		}
	}
	want := map[string]string{
		CertificateFile: "secret:" + corev1.TLSCertKey,
		PrivateKeyFile:  "secret:" + corev1.TLSPrivateKeyKey,
		CAFile:          "configmap:" + identity.TrustBundleKey,
	}
	if !reflect.DeepEqual(files, want) {
		t.Errorf("identity volume files %v, want %v (ca.crt from the trust bundle, never the Secret)", files, want)
	}
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		for _, m := range c.VolumeMounts {
			if m.Name == IdentityVolumeName && (m.MountPath != IdentityDir || m.SubPath != "" || m.SubPathExpr != "" || !m.ReadOnly) {
				t.Errorf("container %s mounts the identity as %+v, want the whole volume read-only at %s", c.Name, m, IdentityDir)
			}
		}
	}
}

// identitySecretName is the Secret the identity volume projects.
func identitySecretName(t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	for _, v := range pod.Spec.Volumes {
		if v.Name != IdentityVolumeName || v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if src.Secret != nil {
				return src.Secret.Name
			}
		}
	}
	t.Fatal("no identity Secret in the pod's volumes")
	return ""
}
