package controllers_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weft-mesh/weft/internal/manifest"
	"github.com/weft-mesh/weft/internal/testenv"
)

// argoManager is the field manager Argo CD's server-side apply, and the
// dry run of its server-side diff, use (common.ArgoCDSSAManager in
// argoproj/argo-cd, passed to sync.WithServerSideApplyManager and
// diffConfigBuilder.WithManager).
const argoManager = "argocd-controller"

// TestSamplesSyncCleanly applies every sample, and a route a user writes
// for a canary, with server-side apply as Argo CD does, lets the
// controller work on them, and checks what a GitOps user relies on: a
// second apply of the same files changes nothing (no defaults or list
// merges the schema does not declare), a server-side dry run, which Argo
// CD's server-side diff compares with the live object, shows no drift,
// and the controller wrote only status.
func TestSamplesSyncCleanly(t *testing.T) {
	h := startHarness(t)
	ctx := t.Context()
	h.create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"weft.dev/inject": "enabled"}}})
	v1 := h.pod(t, "shop", "checkout-v1-0", "checkout", "10.244.0.1", map[string]string{"app": "checkout", "version": "v1"})
	v2 := h.pod(t, "shop", "checkout-v2-0", "checkout", "10.244.0.2", map[string]string{"app": "checkout", "version": "v2"})
	h.service(t, "shop", "checkout", "10.96.0.10", map[string]string{"app": "checkout"}, v1, v2)
	h.service(t, "shop", "checkout-v1", "10.96.0.11", map[string]string{"app": "checkout", "version": "v1"}, v1)
	h.service(t, "shop", "checkout-v2", "10.96.0.12", map[string]string{"app": "checkout", "version": "v2"}, v2)

	var objs []*unstructured.Unstructured
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "samples", "mesh_*.yaml"))
	if err != nil || len(files) < 5 {
		t.Fatalf("samples: %v %v", files, err)
	}
	for _, f := range files {
		objs = append(objs, readManifests(t, f)...)
	}
	// A canary route as a user (or a tool's initial manifest) writes it,
	// leaving to the API server what Gateway API defaults.
	objs = append(objs, parseManifests(t, "route", `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: checkout-v2-canary
  namespace: shop
spec:
  parentRefs:
  - kind: Service
    group: ""
    name: checkout-v2
    port: 80
  rules:
  - matches:
    - path:
        value: /api
      headers:
      - name: x-canary
        value: "true"
    backendRefs:
    - name: checkout-v1
      port: 80
      weight: 90
    - name: checkout-v2
      port: 80
      weight: 10
`)...)

	apply := func(u *unstructured.Unstructured, opts ...client.ApplyOption) *unstructured.Unstructured {
		t.Helper()
		in := u.DeepCopy()
		if err := h.c.Apply(ctx, client.ApplyConfigurationFromUnstructured(in), append([]client.ApplyOption{client.FieldOwner(argoManager), client.ForceOwnership}, opts...)...); err != nil {
			t.Fatalf("applying %s %s: %v", u.GetKind(), u.GetName(), err)
		}
		return in
	}
	first := map[string]string{}
	for _, u := range objs {
		first[key(u)] = apply(u).GetResourceVersion()
	}

	// The controller has worked on each object once it reported status.
	for _, u := range objs {
		eventually(t, 20*time.Second, key(u)+" has status", func() (bool, string) {
			live := &unstructured.Unstructured{}
			live.SetGroupVersionKind(u.GroupVersionKind())
			if err := h.c.Get(ctx, client.ObjectKeyFromObject(u), live); err != nil {
				return false, err.Error()
			}
			st, _, _ := unstructured.NestedMap(live.Object, "status")
			if u.GetKind() == "MeshIdentity" {
				// Its controller does not run in this harness.
				return true, ""
			}
			return len(st) > 0, "no status yet"
		})
	}

	for _, u := range objs {
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(u.GroupVersionKind())
		if err := h.c.Get(ctx, client.ObjectKeyFromObject(u), live); err != nil {
			t.Fatal(err)
		}
		// Only status was written by anyone but the applier.
		for _, mf := range live.GetManagedFields() {
			if mf.Manager != argoManager && mf.Subresource != "status" {
				t.Errorf("%s: %s wrote %s outside status: %s", key(u), mf.Manager, mf.Operation, mf.FieldsV1.String())
			}
		}
		// A dry run of the same manifest, Argo CD's server-side diff,
		// predicts the live object.
		dry := apply(u, client.DryRunAll)
		for _, field := range []string{"spec", "metadata"} {
			want, got := strip(live.Object[field]), strip(dry.Object[field])
			if !equality.Semantic.DeepEqual(want, got) {
				t.Errorf("%s: a server-side dry run of the manifest differs from the live %s:\nlive %v\ndry  %v", key(u), field, want, got)
			}
		}
		// Applying it again writes nothing.
		again := apply(u)
		if again.GetResourceVersion() != live.GetResourceVersion() {
			t.Errorf("%s: a second apply of the same manifest wrote a new version (%s → %s)", key(u), live.GetResourceVersion(), again.GetResourceVersion())
		}
		if again.GetGeneration() != live.GetGeneration() {
			t.Errorf("%s: a second apply changed the generation", key(u))
		}
	}
}

func key(u *unstructured.Unstructured) string {
	return u.GetKind() + " " + u.GetNamespace() + "/" + u.GetName()
}

// strip drops what changes with every write and is not the user's.
func strip(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	out := map[string]any{}
	for k, e := range m {
		switch k {
		case "managedFields", "resourceVersion", "generation", "creationTimestamp", "uid":
			continue
		}
		out[k] = e
	}
	return out
}

// readManifests reads every object of a manifest file.
func readManifests(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parseManifests(t, filepath.Base(path), string(b))
}

func parseManifests(t *testing.T, name, text string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := manifest.Decode(strings.NewReader(text))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return objs
}
