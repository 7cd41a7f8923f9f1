package controllers_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	smiv1alpha1 "github.com/weft-mesh/weft/api/smi/split/v1alpha1"
	smiv1alpha3 "github.com/weft-mesh/weft/api/smi/split/v1alpha3"
	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/testenv"
	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

// TestSMITrafficSplits installs SMI's TrafficSplit CRD into a running
// controller, writes splits the way Argo Rollouts and Flagger write them,
// and checks that the client proxy follows their weights, that Events and
// the metric tell what Weft made of them, that Weft never writes them, and
// that removing the CRD puts the apex back on its own endpoints.
func TestSMITrafficSplits(t *testing.T) {
	h := startHarness(t)
	ctx := t.Context()
	h.checkoutShop(t)
	apexCluster := "outbound|80||checkout.shop.svc.cluster.local"

	web := h.proxy(t, "web-0.shop", webID, map[string][]string{xdstest.ClusterType: nil, xdstest.ListenerType: nil})
	wait := func(what string, want map[string]uint32) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := web.WaitFor(wctx, func(c *xdstest.Client) bool {
			rc, ok := c.Resource(xdstest.RouteType, checkoutRoutes).(*routev3.RouteConfiguration)
			return ok && fmt.Sprint(positive(routeWeights(rc))) == fmt.Sprint(want)
		}); err != nil {
			rc, _ := web.Resource(xdstest.RouteType, checkoutRoutes).(*routev3.RouteConfiguration)
			t.Fatalf("%s: the proxy never saw %v (has %v): %v", what, want, routeWeights(rc), err)
		}
	}
	wait("before the SMI CRD", map[string]uint32{apexCluster: 100})

	crds, err := envtest.InstallCRDs(h.env.Config, envtest.CRDInstallOptions{Paths: []string{filepath.Join(testenv.RepoRoot(), "config", "smi")}, ErrorIfPathMissing: true})
	if err != nil {
		t.Fatal(err)
	}

	// Argo Rollouts' SMI reconciler (argo-rollouts v1.10.1,
	// rollout/trafficrouting/smi/smi.go, trafficSplitV1Alpha1): canary
	// backend first, stable last, weights as resource.NewQuantity, and a
	// controller reference to the Rollout; the apex defaults to the stable
	// Service itself.
	argo := toUnstructured(t, &smiv1alpha1.TrafficSplit{
		TypeMeta: metav1.TypeMeta{APIVersion: "split.smi-spec.io/v1alpha1", Kind: "TrafficSplit"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "checkout", OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "argoproj.io/v1alpha1", Kind: "Rollout", Name: "checkout", UID: "0c0c0c0c-0000-4000-8000-000000000001",
			Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
		}}},
		Spec: smiv1alpha1.TrafficSplitSpec{Service: "checkout", Backends: []smiv1alpha1.TrafficSplitBackend{
			{Service: "checkout-v2", Weight: resource.NewQuantity(10, resource.DecimalExponent)},
			{Service: "checkout", Weight: resource.NewQuantity(90, resource.DecimalExponent)},
		}},
	})
	// The CRD was just installed: the first create may race its discovery.
	eventually(t, 20*time.Second, "creating the v1alpha1 split", func() (bool, string) {
		err := h.c.Create(ctx, argo)
		return err == nil, fmt.Sprint(err)
	})
	written := argo.GetResourceVersion()

	t.Run("Argo Rollouts' v1alpha1 split reaches the proxy", func(t *testing.T) {
		wait("v1alpha1 10/90", map[string]uint32{v2Cluster: 10, apexCluster: 90})
	})

	t.Run("an Event says the split is in effect, the metric says 1", func(t *testing.T) {
		smiEvent(t, h, "checkout", corev1.EventTypeNormal, meshv1alpha1.ReasonAccepted)
		eventually(t, 10*time.Second, "weft_smi_trafficsplit_ready", func() (bool, string) {
			v := testutil.ToFloat64(h.mesh.Metrics.SMISplitReady.WithLabelValues("shop", "checkout", meshv1alpha1.ReasonReady))
			return v == 1, fmt.Sprint(v)
		})
	})

	t.Run("Argo Rollouts' weight patch reaches the proxy", func(t *testing.T) {
		// SetWeight sends a JSON merge patch of the spec.
		patch := []byte(`{"spec":{"backends":[{"service":"checkout-v2","weight":"50"},{"service":"checkout","weight":"50"}]}}`)
		if err := h.c.Patch(ctx, argo, client.RawPatch(ktypes.MergePatchType, patch)); err != nil {
			t.Fatal(err)
		}
		written = argo.GetResourceVersion()
		wait("v1alpha1 50/50", map[string]uint32{v2Cluster: 50, apexCluster: 50})
	})

	t.Run("a Weft TrafficSplit on the same apex wins and the SMI split is told", func(t *testing.T) {
		ts := &meshv1alpha1.TrafficSplit{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "checkout-weft"},
			Spec: meshv1alpha1.TrafficSplitSpec{Service: "checkout", Backends: []meshv1alpha1.TrafficSplitBackend{
				{Service: "checkout-v1", Weight: 1},
			}},
		}
		h.create(t, ts)
		wait("Weft's split", map[string]uint32{v1Cluster: 100})
		smiEvent(t, h, "checkout", corev1.EventTypeWarning, meshv1alpha1.ReasonOverridden)
		eventually(t, 10*time.Second, "weft_smi_trafficsplit_ready 0", func() (bool, string) {
			v := testutil.ToFloat64(h.mesh.Metrics.SMISplitReady.WithLabelValues("shop", "checkout", meshv1alpha1.ReasonOverridden))
			return v == 0 && testutil.CollectAndCount(h.mesh.Metrics.SMISplitReady) == 1, fmt.Sprint(v)
		})
		if err := h.c.Delete(ctx, ts); err != nil {
			t.Fatal(err)
		}
		wait("back to the SMI split", map[string]uint32{v2Cluster: 50, apexCluster: 50})
	})

	t.Run("Weft never wrote the split", func(t *testing.T) {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(argo.GroupVersionKind())
		if err := h.c.Get(ctx, client.ObjectKeyFromObject(argo), got); err != nil {
			t.Fatal(err)
		}
		if got.GetResourceVersion() != written {
			t.Errorf("resourceVersion %s, want %s as the test left it: something else wrote the split", got.GetResourceVersion(), written)
		}
		if refs := got.GetOwnerReferences(); len(refs) != 1 || refs[0].Kind != "Rollout" || got.GetFinalizers() != nil {
			t.Errorf("owner references %v, finalizers %v: want the Rollout's alone, no finalizer", refs, got.GetFinalizers())
		}
	})

	t.Run("milli-quantities give 90/10", func(t *testing.T) {
		deleteObject(t, h, argo)
		milli := toUnstructured(t, &smiv1alpha1.TrafficSplit{
			TypeMeta:   metav1.TypeMeta{APIVersion: "split.smi-spec.io/v1alpha1", Kind: "TrafficSplit"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "checkout-milli"},
			Spec: smiv1alpha1.TrafficSplitSpec{Service: "checkout", Backends: []smiv1alpha1.TrafficSplitBackend{
				{Service: "checkout-v1", Weight: ptr.To(resource.MustParse("900m"))},
				{Service: "checkout-v2", Weight: ptr.To(resource.MustParse("100m"))},
			}},
		})
		h.create(t, milli)
		wait("900m/100m", map[string]uint32{v1Cluster: 90, v2Cluster: 10})
		deleteObject(t, h, milli)
	})

	// Flagger's SMI router at v1alpha3 (flagger v1.36.1,
	// pkg/router/smi_v1alpha3.go): primary and canary backends with integer
	// weights, an owner reference to the Canary.
	flagger := toUnstructured(t, &smiv1alpha3.TrafficSplit{
		TypeMeta: metav1.TypeMeta{APIVersion: "split.smi-spec.io/v1alpha3", Kind: "TrafficSplit"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "checkout-v3", OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "flagger.app/v1beta1", Kind: "Canary", Name: "checkout", UID: "0c0c0c0c-0000-4000-8000-000000000002",
			Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
		}}},
		Spec: smiv1alpha3.TrafficSplitSpec{Service: "checkout", Backends: []smiv1alpha3.TrafficSplitBackend{
			{Service: "checkout-v1", Weight: 90}, {Service: "checkout-v2", Weight: 10},
		}},
	})
	t.Run("a v1alpha3 split gives 90/10 and follows a weight update", func(t *testing.T) {
		h.create(t, flagger)
		wait("v1alpha3 90/10", map[string]uint32{v1Cluster: 90, v2Cluster: 10})
		if err := unstructured.SetNestedSlice(flagger.Object, []any{
			map[string]any{"service": "checkout-v1", "weight": int64(0)},
			map[string]any{"service": "checkout-v2", "weight": int64(100)},
		}, "spec", "backends"); err != nil {
			t.Fatal(err)
		}
		if err := h.c.Update(ctx, flagger); err != nil {
			t.Fatal(err)
		}
		wait("v1alpha3 promoted", map[string]uint32{v2Cluster: 100})
	})

	t.Run("a split with HTTPRouteGroup matches is refused with an Event", func(t *testing.T) {
		matched := toUnstructured(t, &smiv1alpha3.TrafficSplit{
			TypeMeta:   metav1.TypeMeta{APIVersion: "split.smi-spec.io/v1alpha3", Kind: "TrafficSplit"},
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "checkout-ab"},
			Spec: smiv1alpha3.TrafficSplitSpec{Service: "checkout-v1", Backends: []smiv1alpha3.TrafficSplitBackend{
				{Service: "checkout-v2", Weight: 100},
			}, Matches: []corev1.TypedLocalObjectReference{{Kind: "HTTPRouteGroup", Name: "beta-users"}}},
		})
		h.create(t, matched)
		smiEvent(t, h, "checkout-ab", corev1.EventTypeWarning, meshv1alpha1.ReasonUnsupportedValue)
	})

	t.Run("the CRD refuses negative weights at every version", func(t *testing.T) {
		for _, v := range []struct {
			version string
			weight  any
			want    string
		}{
			{"v1alpha1", "-10", "weight must not be negative"},
			{"v1alpha1", int64(-10), "weight must not be negative"},
			{"v1alpha2", int64(-10), "should be greater than or equal to 0"},
			{"v1alpha4", int64(-10), "should be greater than or equal to 0"},
		} {
			bad := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "split.smi-spec.io/" + v.version, "kind": "TrafficSplit",
				"metadata": map[string]any{"namespace": "shop", "name": "negative"},
				"spec": map[string]any{"service": "checkout", "backends": []any{
					map[string]any{"service": "checkout-v1", "weight": v.weight},
				}},
			}}
			err := h.c.Create(ctx, bad)
			if err == nil || !strings.Contains(err.Error(), v.want) {
				t.Errorf("%s weight %v: got %v, want an error saying %q", v.version, v.weight, err, v.want)
			}
		}
	})

	t.Run("without the CRD the apex is back on its own endpoints", func(t *testing.T) {
		if err := envtest.UninstallCRDs(h.env.Config, envtest.CRDInstallOptions{CRDs: crds}); err != nil {
			t.Fatal(err)
		}
		wait("CRD removed", map[string]uint32{apexCluster: 100})
		eventually(t, 30*time.Second, "the CRD gone", func() (bool, string) {
			crd := &metav1.PartialObjectMetadata{}
			crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
			err := h.c.Get(ctx, client.ObjectKey{Name: "trafficsplits.split.smi-spec.io"}, crd)
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
	})

	t.Run("installed again, it is read again", func(t *testing.T) {
		crds, err = envtest.InstallCRDs(h.env.Config, envtest.CRDInstallOptions{Paths: []string{filepath.Join(testenv.RepoRoot(), "config", "smi")}, ErrorIfPathMissing: true})
		if err != nil {
			t.Fatal(err)
		}
		flagger.SetResourceVersion("")
		flagger.SetUID("")
		eventually(t, 20*time.Second, "creating the v1alpha3 split again", func() (bool, string) {
			err := h.c.Create(ctx, flagger)
			return err == nil, fmt.Sprint(err)
		})
		wait("v1alpha3 again", map[string]uint32{v2Cluster: 100})
	})
}

// positive drops backends at weight 0 (kept in routes to stay warm).
func positive(w map[string]uint32) map[string]uint32 {
	out := map[string]uint32{}
	for c, v := range w {
		if v > 0 {
			out[c] = v
		}
	}
	return out
}

func toUnstructured(t *testing.T, obj runtime.Object) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

func deleteObject(t *testing.T, h *harness, obj *unstructured.Unstructured) {
	t.Helper()
	if err := h.c.Delete(t.Context(), obj); err != nil {
		t.Fatal(err)
	}
}

// smiEvent waits for an Event on the SMI split with the type and reason.
func smiEvent(t *testing.T, h *harness, name, typ, reason string) {
	t.Helper()
	eventually(t, 20*time.Second, fmt.Sprintf("%s event %s on TrafficSplit.split.smi-spec.io shop/%s", typ, reason, name), func() (bool, string) {
		var evs eventsv1.EventList
		if err := h.c.List(t.Context(), &evs, client.InNamespace("shop")); err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range evs.Items {
			if e.Regarding.Kind != "TrafficSplit" || e.Regarding.Name != name || e.Regarding.APIVersion == meshv1alpha1.GroupVersion.String() {
				continue
			}
			seen = append(seen, e.Type+"/"+e.Reason+": "+e.Note)
			if e.Type == typ && e.Reason == reason && e.Note != "" && e.Regarding.UID != "" {
				return true, ""
			}
		}
		return false, fmt.Sprint(seen)
	})
}
