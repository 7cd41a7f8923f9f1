package status

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ingest"
	"github.com/weft-mesh/weft/internal/ir"
	"github.com/weft-mesh/weft/internal/xds/translate"
)

var (
	split = ir.ObjectRef{Group: meshv1alpha1.GroupVersion.Group, Kind: "TrafficSplit", Namespace: "shop", Name: "canary"}
	route = ir.ObjectRef{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute", Namespace: "shop", Name: "web"}
)

func accepted(gen int64) ingest.Result {
	return ingest.Result{
		Statuses: []ingest.ObjectStatus{{Ref: split, Generation: gen, Conditions: []metav1.Condition{
			condition(meshv1alpha1.ConditionAccepted, metav1.ConditionTrue, meshv1alpha1.ReasonAccepted, "the policy is valid", gen),
			condition(meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonReady, "the policy is in effect", gen),
			condition(meshv1alpha1.ConditionResolvedRefs, metav1.ConditionTrue, meshv1alpha1.ReasonResolvedRefs, "every reference resolves", gen),
		}}},
		Routes: []ingest.RouteStatus{{Ref: route, Generation: gen, Parents: []gwapiv1.RouteParentStatus{{
			ParentRef:      gwapiv1.ParentReference{Name: "checkout"},
			ControllerName: ingest.ControllerName,
			Conditions: []metav1.Condition{
				condition(string(gwapiv1.RouteConditionAccepted), metav1.ConditionTrue, string(gwapiv1.RouteReasonAccepted), "attached to the Service", gen),
				condition(string(gwapiv1.RouteConditionResolvedRefs), metav1.ConditionTrue, string(gwapiv1.RouteReasonResolvedRefs), "every backend reference resolves", gen),
			},
		}}}},
	}
}

// Two translation problems on one route used to give two PartiallyInvalid
// conditions, which the API server refuses (conditions are a map keyed by
// type): now they are one, naming both, and the route stays Accepted.
func TestTwoProblemsOnARouteAreOneCondition(t *testing.T) {
	res := accepted(3)
	problems := []translate.Problem{
		{Source: route, Reason: translate.ReasonInvalidRegex, Message: `route "r/rule-0": regular expression "/(?<=a)b" is refused`},
		{Source: route, Reason: translate.ReasonInvalidRegex, Message: `route "r/rule-1": regular expression "/(?!x)y" is refused`},
	}
	got := Build(&res, problems, nil)
	conds := got.Routes[0].Parents[0].Conditions
	var types []string
	for _, c := range conds {
		types = append(types, c.Type)
	}
	if want := []string{"Accepted", "PartiallyInvalid", "ResolvedRefs"}; !reflect.DeepEqual(types, want) {
		t.Fatalf("condition types = %v, want %v", types, want)
	}
	pi := conds[1]
	if pi.Status != metav1.ConditionTrue || !strings.HasPrefix(pi.Message, "Dropped Rule") ||
		!strings.Contains(pi.Message, "rule-0") || !strings.Contains(pi.Message, "rule-1") {
		t.Errorf("PartiallyInvalid = %+v, want True naming rule-0 and rule-1, starting with \"Dropped Rule\"", pi)
	}
	if conds[0].Status != metav1.ConditionTrue {
		t.Errorf("Accepted = %s, want True: the good rules are programmed", conds[0].Status)
	}
	if res.Routes[0].Parents[0].Conditions[0].Message != "attached to the Service" || len(res.Routes[0].Parents[0].Conditions) != 2 {
		t.Error("Build modified its input")
	}
}

// A route that is not accepted is wholly invalid: the Gateway API forbids
// PartiallyInvalid on it.
func TestNoPartiallyInvalidOnARouteThatIsNotAccepted(t *testing.T) {
	res := accepted(1)
	res.Routes[0].Parents[0].Conditions[0].Status = metav1.ConditionFalse
	res.Routes[0].Parents[0].Conditions[0].Reason = string(gwapiv1.RouteReasonNoMatchingParent)
	got := Build(&res, []translate.Problem{{Source: route, Reason: "InvalidRegex", Message: "x"}}, nil)
	if c := findCondition(got.Routes[0].Parents[0].Conditions, "PartiallyInvalid"); c != nil {
		t.Errorf("PartiallyInvalid on a route that is not accepted: %+v", c)
	}
}

func TestPolicyProblemsAndProgrammed(t *testing.T) {
	res := accepted(2)
	t.Run("a translation problem makes the policy not accepted and not ready", func(t *testing.T) {
		got := Build(&res, []translate.Problem{
			{Source: split, Reason: "UnknownBackend", Message: "backend a is gone"},
			{Source: split, Reason: "UnknownBackend", Message: "backend b is gone"},
		}, nil).Policies[0].Conditions
		for _, typ := range []string{meshv1alpha1.ConditionAccepted, meshv1alpha1.ConditionReady} {
			c := findCondition(got, typ)
			if c.Status != metav1.ConditionFalse || c.Reason != "UnknownBackend" || c.Message != "backend a is gone; backend b is gone" {
				t.Errorf("%s = %+v", typ, c)
			}
		}
	})
	t.Run("Ready waits for Programmed", func(t *testing.T) {
		prog := condition(meshv1alpha1.ConditionProgrammed, metav1.ConditionFalse, meshv1alpha1.ReasonPending, "1 of 2 connected proxies have not acknowledged", 2)
		got := Build(&res, nil, map[ir.ObjectRef]metav1.Condition{split: prog}).Policies[0].Conditions
		if c := findCondition(got, meshv1alpha1.ConditionReady); c.Status != metav1.ConditionFalse || c.Reason != meshv1alpha1.ReasonPending {
			t.Errorf("Ready = %+v, want False/Pending while Programmed is False", c)
		}
		prog.Status, prog.Reason = metav1.ConditionTrue, meshv1alpha1.ReasonProgrammed
		got = Build(&res, nil, map[ir.ObjectRef]metav1.Condition{split: prog}).Policies[0].Conditions
		if c := findCondition(got, meshv1alpha1.ConditionReady); c.Status != metav1.ConditionTrue {
			t.Errorf("Ready = %+v, want True once Programmed is", c)
		}
		if len(got) != 4 {
			t.Errorf("%d conditions, want Accepted, Programmed, Ready, ResolvedRefs", len(got))
		}
	})
}

func TestLongMessagesAreBounded(t *testing.T) {
	var conds []metav1.Condition
	for i := range 500 {
		conds = append(conds, condition("Accepted", metav1.ConditionFalse, "Bad", fmt.Sprintf("problem %d: %s", i, strings.Repeat("é", 20)), 1))
	}
	got := Merge(conds, 1)
	if len(got) != 1 || len(got[0].Message) > MaxMessage || !strings.HasSuffix(got[0].Message, "more") {
		t.Fatalf("merged %d conditions, message of %d bytes ending %q", len(got), len(got[0].Message), got[0].Message[max(0, len(got[0].Message)-20):])
	}
	one := Merge([]metav1.Condition{condition("Accepted", metav1.ConditionFalse, "Bad", strings.Repeat("ü", 40000), 1)}, 1)[0].Message
	if len(one) > MaxMessage || !strings.HasSuffix(one, "…") {
		t.Errorf("a single long message was not cut: %d bytes", len(one))
	}
}

// checkValid asserts what the API server's validation of metav1.Condition
// and of the CRDs' condition lists asks.
func checkValid(t *testing.T, conds []metav1.Condition) {
	t.Helper()
	if len(conds) > MaxConditions {
		t.Errorf("%d conditions, the schema allows %d", len(conds), MaxConditions)
	}
	seen := map[string]bool{}
	for _, c := range conds {
		if seen[c.Type] {
			t.Errorf("two conditions of type %q", c.Type)
		}
		seen[c.Type] = true
		if errs := validation.IsQualifiedName(c.Type); len(errs) > 0 || len(c.Type) > maxTypeLength {
			t.Errorf("type %q: %v", c.Type, errs)
		}
		if !reasonPattern.MatchString(c.Reason) || len(c.Reason) > maxReason {
			t.Errorf("reason %q is not valid", c.Reason)
		}
		if len(c.Message) > 32768 {
			t.Errorf("message of %d bytes", len(c.Message))
		}
		switch c.Status {
		case metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown:
		default:
			t.Errorf("status %q", c.Status)
		}
		if c.ObservedGeneration < 0 {
			t.Errorf("observedGeneration %d", c.ObservedGeneration)
		}
	}
}

// randomConditions makes conditions with types, reasons, statuses and
// messages of every kind, valid and not.
func randomConditions(r *rand.Rand, gen int64) []metav1.Condition {
	types := []string{"Accepted", "Ready", "ResolvedRefs", "Programmed", "PartiallyInvalid", "bad type!", "", "example.com/Custom", strings.Repeat("T", 400)}
	reasons := []string{"Accepted", "InvalidRegex", "", "has space", "9Digit", "trailing,", "Ünïcode", strings.Repeat("R", 2000)}
	statuses := []metav1.ConditionStatus{metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown, "Maybe"}
	n := r.IntN(14)
	out := make([]metav1.Condition, 0, n)
	for range n {
		out = append(out, condition(types[r.IntN(len(types))], statuses[r.IntN(len(statuses))], reasons[r.IntN(len(reasons))],
			strings.Repeat("problem ", r.IntN(600)), gen))
	}
	return out
}

func TestMergeAlwaysGivesValidConditions(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		gen := r.Int64N(5) - 1
		conds := randomConditions(r, gen)
		got := Merge(conds, gen)
		checkValid(t, got)
		if !reflect.DeepEqual(got, Merge(conds, gen)) {
			t.Fatal("Merge is not deterministic")
		}
		if again := Merge(got, gen); !reflect.DeepEqual(again, got) {
			t.Fatalf("Merge of its own output changed it:\n%v\n%v", got, again)
		}
		if t.Failed() {
			t.Fatalf("input: %+v", conds)
		}
	}
}

func FuzzBuild(f *testing.F) {
	f.Add(uint64(1), uint64(2))
	f.Add(uint64(7), uint64(0))
	f.Fuzz(func(t *testing.T, a, b uint64) {
		r := rand.New(rand.NewPCG(a, b))
		res := accepted(r.Int64N(4))
		res.Statuses[0].Conditions = append(res.Statuses[0].Conditions, randomConditions(r, res.Statuses[0].Generation)...)
		res.Routes[0].Parents[0].Conditions = append(res.Routes[0].Parents[0].Conditions, randomConditions(r, res.Routes[0].Generation)...)
		var problems []translate.Problem
		for range r.IntN(6) {
			problems = append(problems, translate.Problem{Source: []ir.ObjectRef{split, route}[r.IntN(2)], Reason: "InvalidRegex", Message: strings.Repeat("x", r.IntN(5000))})
		}
		got := Build(&res, problems, nil)
		checkValid(t, got.Policies[0].Conditions)
		pc := got.Routes[0].Parents[0].Conditions
		checkValid(t, pc)
		if pi := findCondition(pc, "PartiallyInvalid"); pi != nil {
			if a := findCondition(pc, "Accepted"); a == nil || a.Status != metav1.ConditionTrue {
				t.Errorf("PartiallyInvalid without Accepted=True: %+v", pc)
			}
		}
		if !reflect.DeepEqual(got, Build(&res, problems, nil)) {
			t.Error("Build is not deterministic")
		}
	})
}

// A route's Programmed condition goes on its accepted parents only, and a
// parent left with no condition at all (which the API server refuses) gets
// Accepted Unknown.
func TestRouteProgrammed(t *testing.T) {
	prog := map[ir.ObjectRef]metav1.Condition{route: condition(meshv1alpha1.ConditionProgrammed, metav1.ConditionUnknown, meshv1alpha1.ReasonPending, "waiting", 2)}
	res := accepted(2)
	got := Build(&res, nil, prog)
	if c := findCondition(got.Routes[0].Parents[0].Conditions, meshv1alpha1.ConditionProgrammed); c == nil || c.Status != metav1.ConditionUnknown || c.Reason != meshv1alpha1.ReasonPending {
		t.Errorf("accepted parent: Programmed = %+v, want Unknown/Pending", c)
	}

	res = accepted(2)
	res.Routes[0].Parents[0].Conditions[0].Status = metav1.ConditionFalse
	got = Build(&res, nil, prog)
	if c := findCondition(got.Routes[0].Parents[0].Conditions, meshv1alpha1.ConditionProgrammed); c != nil {
		t.Errorf("a parent that is not accepted got Programmed: %+v", c)
	}

	res = accepted(2)
	res.Routes[0].Parents[0].Conditions = []metav1.Condition{condition("PartiallyInvalid", metav1.ConditionTrue, "UnsupportedValue", "x", 2)}
	got = Build(&res, nil, prog)
	if conds := got.Routes[0].Parents[0].Conditions; len(conds) != 1 || conds[0].Type != "Accepted" || conds[0].Status != metav1.ConditionUnknown {
		t.Errorf("a parent with no valid condition left: %+v, want Accepted Unknown", conds)
	}
}
