package controllers

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ktypes "k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ingest"
	"github.com/weft-mesh/weft/internal/status"
)

// StatusWriter writes the status that internal/status worked out: it only
// diffs and writes. It runs on the leader only, writes only what changed,
// never writes a status computed for an older generation than the object
// has, and retries failed writes on the next round.
type StatusWriter struct {
	Client  client.Client
	Metrics *Metrics

	mu     sync.Mutex
	want   *status.Desired
	signal chan struct{}
}

// NewStatusWriter creates a writer; add it to the manager.
func NewStatusWriter(c client.Client, m *Metrics) *StatusWriter {
	if m == nil {
		m = NewMetrics(nil)
	}
	return &StatusWriter{Client: c, Metrics: m, signal: make(chan struct{}, 1)}
}

// Submit hands over the newest desired status; older ones not yet written
// are dropped.
func (w *StatusWriter) Submit(_ context.Context, want status.Desired) {
	w.mu.Lock()
	w.want = &want
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// NeedLeaderElection is true: one writer per cluster.
func (w *StatusWriter) NeedLeaderElection() bool { return true }

// Start writes until ctx ends.
func (w *StatusWriter) Start(ctx context.Context) error {
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	var conflictDelay time.Duration
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.signal:
		case <-retry.C:
		}
		w.mu.Lock()
		want := w.want
		w.mu.Unlock()
		if want == nil {
			continue
		}
		failed, conflicts := w.write(ctx, want)
		if failed == 0 {
			conflictDelay = 0
			continue
		}
		if failed > conflicts {
			retry.Reset(time.Second)
			continue
		}
		// Only conflicts: the cache had an older copy (the object changed
		// meanwhile). It catches up within moments, and a user waiting for
		// Programmed should not wait a second for it.
		conflictDelay = min(max(2*conflictDelay, 25*time.Millisecond), time.Second)
		retry.Reset(conflictDelay)
	}
}

// write applies one desired status and returns how many writes must be
// retried, and how many of those met a newer version of their object.
func (w *StatusWriter) write(ctx context.Context, want *status.Desired) (failed, conflicts int) {
	logger := log.FromContext(ctx)
	for _, st := range want.Policies {
		if err := w.writePolicy(ctx, st); err != nil {
			failed++
			if apierrors.IsConflict(err) {
				conflicts++
			} else if !apierrors.IsNotFound(err) {
				logger.Error(err, "writing status", "object", st.Ref.String())
			}
		}
	}
	for _, rs := range want.Routes {
		if err := w.writeRoute(ctx, rs); err != nil {
			failed++
			if apierrors.IsConflict(err) {
				conflicts++
			} else if !apierrors.IsNotFound(err) {
				logger.Error(err, "writing route status", "route", rs.Ref.String())
			}
		}
	}
	return failed, conflicts
}

func newPolicy(kind string) (client.Object, func() *meshv1alpha1.Status) {
	switch kind {
	case "TrafficSplit":
		o := &meshv1alpha1.TrafficSplit{}
		return o, func() *meshv1alpha1.Status { return &o.Status.Status }
	case "RetryPolicy":
		o := &meshv1alpha1.RetryPolicy{}
		return o, func() *meshv1alpha1.Status { return &o.Status.Status }
	case "CircuitBreaker":
		o := &meshv1alpha1.CircuitBreaker{}
		return o, func() *meshv1alpha1.Status { return &o.Status.Status }
	case "AccessPolicy":
		o := &meshv1alpha1.AccessPolicy{}
		return o, func() *meshv1alpha1.Status { return &o.Status.Status }
	case "FaultInjection":
		o := &meshv1alpha1.FaultInjection{}
		return o, func() *meshv1alpha1.Status { return &o.Status.Status }
	case "RateLimitPolicy":
		o := &meshv1alpha1.RateLimitPolicy{}
		return o, func() *meshv1alpha1.Status { return &o.Status.Status }
	}
	return nil, nil
}

// writePolicy makes a policy's conditions exactly the desired ones.
func (w *StatusWriter) writePolicy(ctx context.Context, st ingest.ObjectStatus) error {
	obj, current := newPolicy(st.Ref.Kind)
	if obj == nil {
		return nil
	}
	if err := w.Client.Get(ctx, ktypes.NamespacedName{Namespace: st.Ref.Namespace, Name: st.Ref.Name}, obj); err != nil {
		return fmt.Errorf("reading %s: %w", st.Ref, err)
	}
	if obj.GetGeneration() != st.Generation {
		return nil // computed for another generation; the next rebuild covers this one
	}
	s := current()
	next := withTransitionTimes(st.Conditions, s.Conditions)
	if s.ObservedGeneration == st.Generation && conditionsEqual(s.Conditions, next) {
		return nil
	}
	orig, _ := obj.DeepCopyObject().(client.Object)
	s.Conditions, s.ObservedGeneration = next, st.Generation
	// A merge patch replaces the conditions without naming the version
	// read: only Weft writes this status, and the cached copy often lags
	// Weft's own previous write by a moment (Pending, then Programmed),
	// which an update would meet as a conflict and retry.
	if err := w.Client.Status().Patch(ctx, obj, client.MergeFrom(orig)); err != nil {
		w.Metrics.StatusWrites.WithLabelValues(st.Ref.Kind, "error").Inc()
		return fmt.Errorf("updating status of %s: %w", st.Ref, err)
	}
	w.Metrics.StatusWrites.WithLabelValues(st.Ref.Kind, "ok").Inc()
	return nil
}

// writeRoute replaces Weft's entries in a route's status.parents, leaving
// other controllers' entries alone. Each parentRef is echoed exactly as
// written in the spec.
func (w *StatusWriter) writeRoute(ctx context.Context, rs ingest.RouteStatus) error {
	var obj client.Object
	var parents *[]gwapiv1.RouteParentStatus
	switch rs.Ref.Kind {
	case "HTTPRoute":
		o := &gwapiv1.HTTPRoute{}
		obj, parents = o, &o.Status.Parents
	case "GRPCRoute":
		o := &gwapiv1.GRPCRoute{}
		obj, parents = o, &o.Status.Parents
	case "TCPRoute":
		o := &gwapiv1.TCPRoute{}
		obj, parents = o, &o.Status.Parents
	default:
		return nil
	}
	if err := w.Client.Get(ctx, ktypes.NamespacedName{Namespace: rs.Ref.Namespace, Name: rs.Ref.Name}, obj); err != nil {
		return fmt.Errorf("reading %s: %w", rs.Ref, err)
	}
	if obj.GetGeneration() != rs.Generation {
		return nil
	}
	// Never nil: the schema wants a list, empty when no parent is left.
	next := make([]gwapiv1.RouteParentStatus, 0, len(*parents)+len(rs.Parents))
	for _, p := range *parents {
		if p.ControllerName != ingest.ControllerName {
			next = append(next, p)
		}
	}
	for _, want := range rs.Parents {
		if len(next) == status.MaxRouteParents {
			break // the schema's limit; other controllers' entries stay
		}
		var have []metav1.Condition
		for _, p := range *parents {
			if p.ControllerName == ingest.ControllerName && parentRefEqual(p.ParentRef, want.ParentRef) {
				have = p.Conditions
			}
		}
		want.Conditions = withTransitionTimes(want.Conditions, have)
		next = append(next, want)
	}
	if parentsEqual(*parents, next) {
		return nil
	}
	*parents = next
	if err := w.Client.Status().Update(ctx, obj); err != nil {
		w.Metrics.StatusWrites.WithLabelValues(rs.Ref.Kind, "error").Inc()
		return fmt.Errorf("updating status of %s: %w", rs.Ref, err)
	}
	w.Metrics.StatusWrites.WithLabelValues(rs.Ref.Kind, "ok").Inc()
	return nil
}

// withTransitionTimes returns the desired conditions with the transition
// time of each current condition whose status did not change, and now for
// the others.
func withTransitionTimes(desired, current []metav1.Condition) []metav1.Condition {
	now := metav1.Now()
	out := slices.Clone(desired)
	for i := range out {
		out[i].LastTransitionTime = now
		if c := meta.FindStatusCondition(current, out[i].Type); c != nil && c.Status == out[i].Status && !c.LastTransitionTime.IsZero() {
			out[i].LastTransitionTime = c.LastTransitionTime
		}
	}
	return out
}

func conditionsEqual(a, b []metav1.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for _, c := range a {
		d := meta.FindStatusCondition(b, c.Type)
		if d == nil || d.Status != c.Status || d.Reason != c.Reason || d.Message != c.Message || d.ObservedGeneration != c.ObservedGeneration {
			return false
		}
	}
	return true
}

func parentsEqual(a, b []gwapiv1.RouteParentStatus) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ControllerName != b[i].ControllerName || !parentRefEqual(a[i].ParentRef, b[i].ParentRef) || !conditionsEqual(a[i].Conditions, b[i].Conditions) {
			return false
		}
	}
	return true
}

func parentRefEqual(a, b gwapiv1.ParentReference) bool { return reflect.DeepEqual(a, b) }
