package helm

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/internal/manifest"
	"github.com/weft-mesh/weft/internal/testenv"
)

func chartDir() string { return filepath.Join(testenv.RepoRoot(), "charts", "weft") }

func allOnValues(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(chartDir(), "ci", "all-on-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	v := map[string]any{}
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestLint is `helm lint --strict` on the chart, with its default values
// and with every option on: no error and no warning.
func TestLint(t *testing.T) {
	for name, vals := range map[string]map[string]any{"defaults": nil, "all on": allOnValues(t)} {
		l := action.NewLint()
		l.Strict = true
		l.Namespace = "weft-system"
		res := l.Run([]string{chartDir()}, vals)
		for _, m := range res.Messages {
			if m.Severity >= support.WarningSev {
				t.Errorf("%s: %s", name, m)
			}
		}
		for _, err := range res.Errors {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// render is `helm template` of the chart as release "weft" in ns: the CRDs
// of crds/ and the rendered templates.
func render(t *testing.T, vals map[string]any, ns string) (crds, objs []*unstructured.Unstructured) {
	t.Helper()
	ch, err := loader.Load(chartDir())
	if err != nil {
		t.Fatal(err)
	}
	rv, err := util.ToRenderValues(ch, vals, common.ReleaseOptions{Name: "weft", Namespace: ns, IsInstall: true, Revision: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	files, err := engine.Render(ch, rv)
	if err != nil {
		t.Fatalf("rendering the chart: %v", err)
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if strings.HasSuffix(name, "NOTES.txt") {
			continue
		}
		objs = append(objs, decode(t, name, files[name])...)
	}
	for _, c := range ch.CRDObjects() {
		crds = append(crds, decode(t, c.Filename, string(c.File.Data))...)
	}
	return crds, objs
}

func decode(t *testing.T, name, text string) []*unstructured.Unstructured {
	t.Helper()
	out, err := manifest.Decode(strings.NewReader(text))
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, text)
	}
	return out
}

func id(u *unstructured.Unstructured) string {
	return fmt.Sprintf("%s %s/%s", u.GetKind(), u.GetNamespace(), u.GetName())
}

// TestDefaultsRenderConfigDefault checks that the chart and config/ have
// not drifted: at its default values the chart renders exactly the
// objects of `kustomize build config/default`, less the Namespace (Helm
// installs into the release's) and plus the default MeshIdentity, which is
// the sample's.
func TestDefaultsRenderConfigDefault(t *testing.T) {
	crds, objs := render(t, nil, "weft-system")
	got := map[string]*unstructured.Unstructured{}
	for _, u := range append(crds, objs...) {
		if _, dup := got[id(u)]; dup {
			t.Errorf("the chart renders %s twice", id(u))
		}
		got[id(u)] = u
	}
	want := map[string]*unstructured.Unstructured{}
	for _, u := range kustomize(t) {
		if u.GetKind() != "Namespace" {
			want[id(u)] = u
		}
	}
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "samples", "mesh_v1alpha1_meshidentity.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	mi := decode(t, "sample", string(b))[0]
	mi.SetLabels(map[string]string{"app.kubernetes.io/part-of": "weft"})
	want[id(mi)] = mi
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("config/default has %s, the chart does not", k)
			continue
		}
		if !equality.Semantic.DeepEqual(normalize(t, w), normalize(t, g)) {
			wy, _ := yaml.Marshal(w.Object)
			gy, _ := yaml.Marshal(g.Object)
			t.Errorf("%s differs:\nconfig/default:\n%s\nchart:\n%s", k, wy, gy)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("the chart renders %s, config/default does not", k)
		}
	}
}

// normalize makes equal objects compare equal: through JSON, so that
// numbers and empty values read the same.
func normalize(t *testing.T, u *unstructured.Unstructured) map[string]any {
	t.Helper()
	b, err := u.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	if err := yaml.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// kustomize renders config/default as `make build-installer` does.
func kustomize(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	root := testenv.RepoRoot()
	bin := filepath.Join(root, "bin", "kustomize")
	if _, err := os.Stat(bin); err != nil {
		cmd := exec.Command("make", "-s", "-C", root, "bin/kustomize")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building kustomize: %v\n%s", err, out)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), bin, "build", filepath.Join(root, "config", "default"))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kustomize build config/default: %v\n%s", err, stderr.String())
	}
	return decode(t, "config/default", stdout.String())
}

// TestInstall applies the chart, as rendered with its default values and
// with every option on, to a real API server the way Helm installs it
// (the CRDs of crds/ first, then the rest), and checks that every object
// is accepted, that the values reach the objects they are for, and that
// weft-controller starts with the rendered arguments and RBAC.
func TestInstall(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals map[string]any
	}{{"defaults", nil}, {"all on", allOnValues(t)}} {
		t.Run(tc.name, func(t *testing.T) {
			crds, objs := render(t, tc.vals, "mesh-system")
			env := testenv.Start(t, func(e *envtest.Environment) {
				own := filepath.Join(testenv.RepoRoot(), "config", "crd", "bases")
				e.CRDDirectoryPaths = slices.DeleteFunc(slices.Clone(e.CRDDirectoryPaths), func(p string) bool { return p == own })
				// The Prometheus Operator's ServiceMonitor, as a
				// stand-in CRD that accepts any spec.
				e.CRDs = append(e.CRDs, serviceMonitorCRD())
			})
			c := env.Client
			ctx := t.Context()
			for _, ns := range []string{"mesh-system", "cert-manager"} {
				if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
					t.Fatal(err)
				}
			}
			applyAll(t, c, crds)
			var names []string
			for _, u := range crds {
				names = append(names, u.GetName())
			}
			if err := envtest.WaitForCRDs(env.Config, crdObjects(t, crds), envtest.CRDInstallOptions{MaxTime: 30 * time.Second, PollInterval: 100 * time.Millisecond}); err != nil {
				t.Fatalf("CRDs %v not established: %v", names, err)
			}
			applyAll(t, c, objs)

			dep := &unstructured.Unstructured{}
			dep.SetAPIVersion("apps/v1")
			dep.SetKind("Deployment")
			if err := c.Get(ctx, client.ObjectKey{Namespace: "mesh-system", Name: "weft-controller"}, dep); err != nil {
				t.Fatal(err)
			}
			containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
			var args []string
			for _, a := range containers[0].(map[string]any)["args"].([]any) {
				args = append(args, a.(string))
			}
			if !slices.Contains(args, "--xds-address=weft-xds.mesh-system.svc:15010") || !slices.Contains(args, "--control-plane-namespace=mesh-system") {
				t.Errorf("the controller is not pointed at its release namespace: %v", args)
			}
			// The controller starts from what the chart rendered, with
			// the chart's RBAC.
			startController(t, env, dep, "mesh-system")
			if tc.vals == nil {
				return
			}
			for _, want := range []string{"--debounce=50ms", "--block-unknown-destinations", "--tracing-address=otel-collector.observability.svc:4317",
				"--tracing-sampling-percent=5", "--access-log=false", "--zap-log-level=debug", "--proxy-image=registry.example.com/weft/weft-proxy:v0.1.0",
				"--init-image=registry.example.com/weft/weft-init:v0.1.0", "--cluster-domain=cluster.local"} {
				if !slices.Contains(args, want) {
					t.Errorf("the controller's args %v lack %s", args, want)
				}
			}
			if r, _, _ := unstructured.NestedInt64(dep.Object, "spec", "replicas"); r != 3 {
				t.Errorf("replicas %d, want 3", r)
			}
			// Without cert-manager for the webhook, the controller made
			// the certificate (in the Secret the flag names), and the
			// webhook configuration trusts it.
			if !slices.Contains(args, "--manage-webhook-certificate") {
				t.Fatalf("webhook.certManager=false should turn on --manage-webhook-certificate: %v", args)
			}
			var sec corev1.Secret
			if err := c.Get(ctx, client.ObjectKey{Namespace: "mesh-system", Name: "weft-webhook-tls"}, &sec); err != nil {
				t.Fatalf("the controller's webhook certificate: %v", err)
			}
			wh := &unstructured.Unstructured{}
			wh.SetAPIVersion("admissionregistration.k8s.io/v1")
			wh.SetKind("MutatingWebhookConfiguration")
			if err := c.Get(ctx, client.ObjectKey{Name: "weft-injector"}, wh); err != nil {
				t.Fatal(err)
			}
			hooks, _, _ := unstructured.NestedSlice(wh.Object, "webhooks")
			for _, h := range hooks {
				ca, _, _ := unstructured.NestedString(h.(map[string]any), "clientConfig", "caBundle")
				if ca == "" || ca != b64(sec.Data["ca.crt"]) {
					t.Errorf("webhook caBundle is not the controller's CA")
				}
				if fp, _, _ := unstructured.NestedString(h.(map[string]any), "failurePolicy"); fp != "Ignore" {
					t.Errorf("failurePolicy %q, want Ignore", fp)
				}
			}
			if _, ok := wh.GetAnnotations()["cert-manager.io/inject-ca-from"]; ok {
				t.Errorf("cert-manager would overwrite the controller's caBundle: %v", wh.GetAnnotations())
			}
			verifyServing(t, sec.Data["tls.crt"], sec.Data["ca.crt"], "weft-webhook.mesh-system.svc")
		})
	}
}

func applyAll(t *testing.T, c client.Client, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, u := range objs {
		if err := c.Apply(t.Context(), client.ApplyConfigurationFromUnstructured(u.DeepCopy()), client.FieldOwner("helm"), client.ForceOwnership); err != nil {
			t.Errorf("the API server refused %s: %v", id(u), err)
		}
	}
}

func crdObjects(t *testing.T, us []*unstructured.Unstructured) []*apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, u := range us {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		b, err := u.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, crd); err != nil {
			t.Fatal(err)
		}
		out = append(out, crd)
	}
	return out
}
