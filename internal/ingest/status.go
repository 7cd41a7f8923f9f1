package ingest

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ir"
)

// verdict collects what ingest found about one policy object.
type verdict struct {
	ref        ir.ObjectRef
	generation int64

	acceptedReason, acceptedMsg string // empty reason: accepted
	resolvedReason              string // empty reason: all refs resolve
	// notReady holds a reason the object is accepted and resolved but still
	// not fully in force (e.g. an AccessPolicy without mTLS).
	notReadyReason, notReadyMsg string
	problems                    []string
	// readyMsg, when set, says what the object does once it is in effect.
	readyMsg string
	// notes are further conditions, False, that do not make the object
	// less Ready (ProxylessCompatible).
	notes []metav1.Condition
}

// note adds a further False condition.
func (v *verdict) note(t, reason, msg string) {
	v.notes = append(v.notes, metav1.Condition{Type: t, Status: metav1.ConditionFalse, Reason: reason, Message: msg, ObservedGeneration: v.generation})
}

func newVerdict(kind, ns, name string, gen int64) *verdict {
	return &verdict{ref: ir.ObjectRef{Group: meshv1alpha1.GroupVersion.Group, Kind: kind, Namespace: ns, Name: name}, generation: gen}
}

func (v *verdict) reject(reason, format string, args ...any) {
	if v.acceptedReason == "" {
		v.acceptedReason, v.acceptedMsg = reason, fmt.Sprintf(format, args...)
	}
}

func (v *verdict) unresolved(reason, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if v.resolvedReason == "" {
		v.resolvedReason = reason
	}
	v.problems = append(v.problems, msg)
}

func (v *verdict) degrade(reason, format string, args ...any) {
	if v.notReadyReason == "" {
		v.notReadyReason, v.notReadyMsg = reason, fmt.Sprintf(format, args...)
	}
}

func (v *verdict) accepted() bool { return v.acceptedReason == "" }

func (v *verdict) status() ObjectStatus {
	cond := func(t string, ok bool, reason, msg string) metav1.Condition {
		s := metav1.ConditionTrue
		if !ok {
			s = metav1.ConditionFalse
		}
		return metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: v.generation}
	}
	conds := make([]metav1.Condition, 0, 3)
	if v.accepted() {
		conds = append(conds, cond(meshv1alpha1.ConditionAccepted, true, meshv1alpha1.ReasonAccepted, "the policy is valid"))
	} else {
		conds = append(conds, cond(meshv1alpha1.ConditionAccepted, false, v.acceptedReason, v.acceptedMsg))
	}
	resolvedMsg := strings.Join(v.problems, "; ")
	if v.resolvedReason == "" {
		conds = append(conds, cond(meshv1alpha1.ConditionResolvedRefs, true, meshv1alpha1.ReasonResolvedRefs, "every reference resolves"))
	} else {
		conds = append(conds, cond(meshv1alpha1.ConditionResolvedRefs, false, v.resolvedReason, resolvedMsg))
	}
	switch {
	case !v.accepted():
		conds = append(conds, cond(meshv1alpha1.ConditionReady, false, v.acceptedReason, v.acceptedMsg))
	case v.resolvedReason != "":
		conds = append(conds, cond(meshv1alpha1.ConditionReady, false, v.resolvedReason, resolvedMsg))
	case v.notReadyReason != "":
		conds = append(conds, cond(meshv1alpha1.ConditionReady, false, v.notReadyReason, v.notReadyMsg))
	default:
		conds = append(conds, cond(meshv1alpha1.ConditionReady, true, meshv1alpha1.ReasonReady, cmp.Or(v.readyMsg, "the policy is in effect")))
	}
	conds = append(conds, v.notes...)
	slices.SortFunc(conds, func(a, b metav1.Condition) int { return strings.Compare(a.Type, b.Type) })
	return ObjectStatus{Ref: v.ref, Generation: v.generation, Conditions: conds}
}

// olderFirst orders objects the way conflicts are settled: the oldest wins,
// ties broken by namespace/name.
func olderFirst(a, b metav1.Object) int {
	ta, tb := a.GetCreationTimestamp(), b.GetCreationTimestamp()
	if !ta.Equal(&tb) {
		if ta.Before(&tb) {
			return -1
		}
		return 1
	}
	if c := strings.Compare(a.GetNamespace(), b.GetNamespace()); c != 0 {
		return c
	}
	return strings.Compare(a.GetName(), b.GetName())
}
