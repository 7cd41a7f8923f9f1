package controllers_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weft-mesh/weft/internal/cli"
	"github.com/weft-mesh/weft/internal/testenv"
	"github.com/weft-mesh/weft/internal/xds/translate"
)

// TestAnalyzeAgreesWithTheController applies the manifests of `kubectl
// weft analyze`'s mistakes case to a real API server with the controller
// running, and checks that the conditions the controller writes that are
// not fine are exactly those analyze reports offline.
func TestAnalyzeAgreesWithTheController(t *testing.T) {
	path := filepath.Join(testenv.RepoRoot(), "cmd", "kubectl-weft", "testdata", "analyze", "mistakes", "manifests.yaml")
	m, err := cli.ReadManifests([]string{path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := cli.Analyze(m, translate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range rep.Findings {
		if f.Severity == cli.Error {
			want = append(want, line(f.Object, f.Condition, f.Reason, f.Message))
		}
	}
	if len(want) == 0 {
		t.Fatal("the mistakes case found nothing")
	}

	h := startHarness(t)
	ctx := t.Context()
	var objs []*unstructured.Unstructured
	for _, u := range readManifests(t, path) {
		if u.GetKind() == "Deployment" {
			continue
		}
		if err := h.c.Create(ctx, u); err != nil {
			t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
		}
		objs = append(objs, u)
	}
	var got []string
	eventually(t, 20*time.Second, "the controller's conditions match analyze's", func() (bool, string) {
		got = nil
		for _, u := range objs {
			live := &unstructured.Unstructured{}
			live.SetGroupVersionKind(u.GroupVersionKind())
			if err := h.c.Get(ctx, client.ObjectKeyFromObject(u), live); err != nil {
				return false, err.Error()
			}
			obj := fmt.Sprintf("%s %s/%s", u.GetKind(), u.GetNamespace(), u.GetName())
			conds, _, _ := unstructured.NestedSlice(live.Object, "status", "conditions")
			parents, _, _ := unstructured.NestedSlice(live.Object, "status", "parents")
			for _, p := range parents {
				pc, _, _ := unstructured.NestedSlice(p.(map[string]any), "conditions")
				conds = append(conds, pc...)
			}
			for _, c := range conds {
				c := c.(map[string]any)
				typ, st := c["type"].(string), c["status"].(string)
				// Programmed depends on connected proxies, which
				// analyze has none of.
				if typ == "Programmed" {
					continue
				}
				if (typ == "PartiallyInvalid" && st == "True") || (typ != "PartiallyInvalid" && st != "True") {
					got = append(got, line(obj, typ, c["reason"].(string), c["message"].(string)))
				}
			}
		}
		slices.Sort(got)
		w := slices.Clone(want)
		slices.Sort(w)
		return slices.Equal(got, w), "controller:\n" + strings.Join(got, "\n") + "\nanalyze:\n" + strings.Join(w, "\n")
	})
}

func line(obj, cond, reason, msg string) string {
	return obj + " | " + cond + " | " + reason + " | " + msg
}
