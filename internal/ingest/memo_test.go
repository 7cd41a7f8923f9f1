package ingest

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ir"
)

// objects lists every object of a bundle.
func objects(b *Bundle) []metav1.Object {
	var out []metav1.Object
	add := func(o metav1.Object) { out = append(out, o) }
	for _, o := range b.Namespaces {
		add(o)
	}
	for _, o := range b.Services {
		add(o)
	}
	for _, o := range b.EndpointSlices {
		add(o)
	}
	for _, o := range b.Pods {
		add(o)
	}
	for _, o := range b.TrafficSplits {
		add(o)
	}
	for _, o := range b.RetryPolicies {
		add(o)
	}
	for _, o := range b.CircuitBreakers {
		add(o)
	}
	for _, o := range b.MeshIdentities {
		add(o)
	}
	for _, o := range b.AccessPolicies {
		add(o)
	}
	for _, o := range b.HTTPRoutes {
		add(o)
	}
	for _, o := range b.GRPCRoutes {
		add(o)
	}
	for _, o := range b.ReferenceGrants {
		add(o)
	}
	return out
}

// stamp gives every object a UID and a resourceVersion that follows its
// content, as the API server does: a changed object gets a new version.
func stamp(t testing.TB, b *Bundle) {
	t.Helper()
	for _, o := range objects(b) {
		o.SetUID(types.UID(o.GetNamespace() + "/" + o.GetName()))
		o.SetResourceVersion("")
		data, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		h := fnv.New64a()
		_, _ = h.Write(data)
		o.SetResourceVersion(fmt.Sprint(h.Sum64()))
	}
}

func resultJSON(t *testing.T, r *Result) string {
	t.Helper()
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestMemoReusesGroupsUntilTheirInputsChange(t *testing.T) {
	b := LoadBundle(t, "testdata/accesspolicy.in.yaml")
	stamp(t, b)
	memo := NewMemo()
	first := memo.Build(b)
	if len(first.Mesh.ProxyGroups) == 0 {
		t.Fatal("the bundle has no proxy groups")
	}
	// firstEndpoints is the first endpoint of the first Service port that
	// has one: the same element when the memo reused the endpoints.
	firstEndpoints := func(r *Result) *ir.Endpoint {
		for _, s := range r.Mesh.Services {
			for _, p := range s.Ports {
				if len(p.Endpoints) > 0 {
					return &p.Endpoints[0]
				}
			}
		}
		t.Fatal("no endpoints")
		return nil
	}
	check := func(what string, reuse bool) {
		t.Helper()
		prev := first.Mesh.ProxyGroups
		prevEndpoints := firstEndpoints(first)
		got := memo.Build(b)
		if (firstEndpoints(got) == prevEndpoints) != reuse {
			t.Errorf("%s: endpoints reused = %v, want %v", what, !reuse, reuse)
		}
		if want := resultJSON(t, Build(b)); resultJSON(t, got) != want {
			t.Errorf("%s: the memo's result differs from Build's", what)
		}
		same := slices.Equal(got.Mesh.ProxyGroups, prev)
		if same != reuse {
			t.Errorf("%s: groups reused = %v, want %v", what, same, reuse)
		}
		first = got
	}
	check("nothing changed", true)

	b.RetryPolicies = append(b.RetryPolicies, &meshv1alpha1.RetryPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "retries"},
		Spec:       meshv1alpha1.RetryPolicySpec{TargetRef: meshv1alpha1.RouteTargetReference{Kind: "Service", Name: "checkout"}},
	})
	stamp(t, b)
	check("a retry policy added", true)

	b.Pods[0].Labels = map[string]string{"app": "elsewhere"}
	stamp(t, b)
	check("a pod's labels", false)

	b.AccessPolicies[0].Spec.Action = meshv1alpha1.ActionDeny
	stamp(t, b)
	prev := firstEndpoints(first)
	got := memo.Build(b)
	if slices.Equal(got.Mesh.ProxyGroups, first.Mesh.ProxyGroups) || firstEndpoints(got) != prev {
		t.Error("an access policy: want new groups and the same endpoints")
	}
	first = got

	b.Pods[1].ResourceVersion = ""
	check("an object without a version", false)
	check("an object without a version, again", false)
}

// TestMemoMatchesBuild runs every golden input through one Memo, in turn
// and then in reverse, and compares each result with Build's.
func TestMemoMatchesBuild(t *testing.T) {
	paths, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	memo := NewMemo()
	reversed := slices.Clone(paths)
	slices.Reverse(reversed)
	for _, path := range append(slices.Clone(paths), reversed...) {
		if _, err := os.Stat(path); err != nil {
			t.Fatal(err)
		}
		b := LoadBundle(t, path)
		stamp(t, b)
		for range 2 {
			if got, want := resultJSON(t, memo.Build(b)), resultJSON(t, Build(b)); got != want {
				t.Errorf("%s: the memo's result differs from Build's", strings.TrimPrefix(path, "testdata/"))
			}
		}
	}
}
