package controllers

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ingest"
	"github.com/weft-mesh/weft/internal/ir"
	"github.com/weft-mesh/weft/internal/status"
	"github.com/weft-mesh/weft/internal/testenv"
	"github.com/weft-mesh/weft/internal/xds/translate"
)

// TestStatusAlwaysSettles feeds the status builder random sets of problems
// and conditions — duplicate types, reasons the API would refuse, long
// messages, unknown statuses — and writes the result to a real API server:
// every write must be accepted, what is stored must be what was built, and
// writing the same input again must write nothing. Whatever the input, an
// object's status settles.
func TestStatusAlwaysSettles(t *testing.T) {
	env := testenv.Start(t)
	ctx := t.Context()
	c := env.Client
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		&meshv1alpha1.TrafficSplit{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "canary"}, Spec: meshv1alpha1.TrafficSplitSpec{
			Service: "checkout", Backends: []meshv1alpha1.TrafficSplitBackend{{Service: "checkout-v1", Weight: 90}, {Service: "checkout-v2", Weight: 10}},
		}},
		&gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}, Spec: gwapiv1.HTTPRouteSpec{
			CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{
				{Group: ptr.To(gwapiv1.Group("")), Kind: ptr.To(gwapiv1.Kind("Service")), Name: "checkout", Port: ptr.To(gwapiv1.PortNumber(80))},
				{Group: ptr.To(gwapiv1.Group("")), Kind: ptr.To(gwapiv1.Kind("Service")), Name: "checkout-v2"},
			}},
		}},
	} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	split := ir.ObjectRef{Group: meshv1alpha1.GroupVersion.Group, Kind: "TrafficSplit", Namespace: "shop", Name: "canary"}
	route := ir.ObjectRef{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute", Namespace: "shop", Name: "web"}
	var ts meshv1alpha1.TrafficSplit
	var hr gwapiv1.HTTPRoute
	if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "canary"}, &ts); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "web"}, &hr); err != nil {
		t.Fatal(err)
	}

	metrics := NewMetrics(nil)
	w := NewStatusWriter(c, metrics)
	writes := func(kind, result string) float64 {
		return testutil.ToFloat64(metrics.StatusWrites.WithLabelValues(kind, result))
	}
	r := rand.New(rand.NewPCG(12, 7))
	for round := range 40 {
		res := &ingest.Result{
			Statuses: []ingest.ObjectStatus{{Ref: split, Generation: ts.Generation, Conditions: randomConditions(r, ts.Generation)}},
			Routes:   []ingest.RouteStatus{{Ref: route, Generation: hr.Generation}},
		}
		for _, p := range hr.Spec.ParentRefs {
			res.Routes[0].Parents = append(res.Routes[0].Parents, gwapiv1.RouteParentStatus{
				ParentRef: p, ControllerName: ingest.ControllerName, Conditions: randomConditions(r, hr.Generation),
			})
		}
		var problems []translate.Problem
		for range r.IntN(5) {
			problems = append(problems, translate.Problem{
				Source: []ir.ObjectRef{split, route}[r.IntN(2)], Reason: []string{"InvalidRegex", "bad reason!", ""}[r.IntN(3)],
				Message: fmt.Sprintf("rule %d: %s", r.IntN(9), strings.Repeat("é", r.IntN(3000))),
			})
		}
		var programmed map[ir.ObjectRef]metav1.Condition
		if r.IntN(2) == 0 {
			programmed = map[ir.ObjectRef]metav1.Condition{split: {
				Type: meshv1alpha1.ConditionProgrammed, Status: []metav1.ConditionStatus{"True", "False"}[r.IntN(2)],
				Reason: meshv1alpha1.ReasonPending, Message: "waiting", ObservedGeneration: ts.Generation,
			}, route: {
				Type: meshv1alpha1.ConditionProgrammed, Status: []metav1.ConditionStatus{"True", "Unknown", "False"}[r.IntN(3)],
				Reason: meshv1alpha1.ReasonPending, Message: "waiting", ObservedGeneration: hr.Generation,
			}}
		}
		desired := status.Build(res, problems, programmed)

		if failed, _ := w.write(ctx, &desired); failed != 0 {
			t.Fatalf("round %d: %d writes failed (%v refused by the API server) for input %+v, problems %+v", round, failed, writes("TrafficSplit", "error")+writes("HTTPRoute", "error"), res, problems)
		}
		// What is stored is what was built.
		if err := c.Get(ctx, client.ObjectKeyFromObject(&ts), &ts); err != nil {
			t.Fatal(err)
		}
		if !conditionsEqual(ts.Status.Conditions, desired.Policies[0].Conditions) || ts.Status.ObservedGeneration != ts.Generation {
			t.Fatalf("round %d: stored %+v, built %+v", round, ts.Status, desired.Policies[0].Conditions)
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(&hr), &hr); err != nil {
			t.Fatal(err)
		}
		if !parentsEqual(hr.Status.Parents, desired.Routes[0].Parents) {
			t.Fatalf("round %d: stored parents %+v, built %+v", round, hr.Status.Parents, desired.Routes[0].Parents)
		}
		// Equal input again writes nothing.
		before := writes("TrafficSplit", "ok") + writes("HTTPRoute", "ok")
		again := status.Build(res, problems, programmed)
		if failed, _ := w.write(ctx, &again); failed != 0 || writes("TrafficSplit", "ok")+writes("HTTPRoute", "ok") != before {
			t.Fatalf("round %d: a second write of equal input wrote again (failed %d)", round, failed)
		}
	}
}

// randomConditions makes conditions of every kind, valid and not, with the
// types Weft writes and others.
func randomConditions(r *rand.Rand, gen int64) []metav1.Condition {
	types := []string{"Accepted", "Ready", "ResolvedRefs", "Programmed", "PartiallyInvalid", "Accepted", "not a type!", ""}
	reasons := []string{"Accepted", "InvalidRegex", "", "has space", "9Digit", "trailing,", "Ünïcode"}
	statuses := []metav1.ConditionStatus{metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown, "Maybe"}
	n := 1 + r.IntN(10)
	out := make([]metav1.Condition, 0, n)
	for range n {
		out = append(out, metav1.Condition{
			Type: types[r.IntN(len(types))], Status: statuses[r.IntN(len(statuses))], Reason: reasons[r.IntN(len(reasons))],
			Message: strings.Repeat("problem ", r.IntN(3000)), ObservedGeneration: gen,
		})
	}
	return out
}
