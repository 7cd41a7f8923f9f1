package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ir"
)

// programmedWatcher follows ACKs and NACKs: it records propagation times and
// keeps every object's Programmed condition current.
type programmedWatcher struct{ r *MeshReconciler }

// NeedLeaderElection is false: every replica tracks its own proxies (the
// status writer itself only writes on the leader).
func (w *programmedWatcher) NeedLeaderElection() bool { return false }

// Start runs until ctx ends.
func (w *programmedWatcher) Start(ctx context.Context) error {
	r := w.r
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		changed := r.XDS.Changed()
		w.check(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-r.wake:
		case <-tick.C:
		}
		// ACKs arrive in bursts (every proxy answers a push): look again
		// after a pause rather than once per ACK. Propagation times come
		// from the ACKs themselves, so the pause does not lengthen them.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (w *programmedWatcher) check(ctx context.Context) {
	r := w.r
	connected := map[string]bool{}
	for _, n := range r.XDS.ConnectedNodes() {
		connected[n] = true
	}
	// Each connected node is asked once per check.
	up := map[string]bool{}
	upToDate := func(n string) bool {
		if !connected[n] {
			return true
		}
		v, ok := up[n]
		if !ok {
			v = r.XDS.UpToDate(n)
			up[n] = v
		}
		return v
	}

	r.mu.Lock()
	now := time.Now()
	kept := r.epochs[:0]
	for _, e := range r.epochs {
		done := true
		// The epoch ended with the last acknowledgement of its nodes.
		var end time.Time
		for _, n := range e.nodes {
			if !upToDate(n) {
				done = false
				break
			}
			if at := r.XDS.LastAck(n); connected[n] && at.After(end) {
				end = at
			}
		}
		if end.Before(e.since) {
			end = now
		}
		switch {
		case done:
			r.Metrics.PropagationDuration.Observe(end.Sub(e.since).Seconds())
		case now.Sub(e.since) > 5*time.Minute:
			// A proxy that never answers must not hold every later epoch.
		default:
			kept = append(kept, e)
		}
	}
	r.epochs = kept
	last := r.last
	r.mu.Unlock()
	if last == nil || r.Status == nil {
		return
	}
	r.Status.Submit(ctx, last.result, programmed(last, connected, upToDate, r))
}

// programmed computes the Programmed condition of every accepted policy:
// True once every connected proxy that needs it has acknowledged its
// current configuration, False with the proxy's error when one rejected it.
func programmed(b *built, connected map[string]bool, isUpToDate func(string) bool, r *MeshReconciler) map[ir.ObjectRef]metav1.Condition {
	nackByNode := r.XDS.Nacks()
	upToDate := map[string]bool{}
	pending := 0
	nackedSources := map[ir.ObjectRef]string{}
	for node := range b.nodes {
		if !connected[node] {
			continue
		}
		ok := isUpToDate(node)
		upToDate[node] = ok
		if !ok {
			pending++
		}
		nack, ok := nackByNode[node]
		if !ok {
			continue
		}
		matched := false
		for name, refs := range b.sources() {
			if strings.Contains(nack.Message, name) {
				for _, ref := range refs {
					nackedSources[ref] = fmt.Sprintf("proxy %s rejected its configuration: %s", node, nack.Message)
				}
				matched = true
			}
		}
		if !matched {
			nackedSources[ir.ObjectRef{}] = fmt.Sprintf("proxy %s rejected its configuration: %s", node, nack.Message)
		}
	}
	out := map[ir.ObjectRef]metav1.Condition{}
	for _, s := range b.result.Statuses {
		c := metav1.Condition{Type: meshv1alpha1.ConditionProgrammed, ObservedGeneration: s.Generation}
		msg, rejected := nackedSources[s.Ref]
		if !rejected {
			msg, rejected = nackedSources[ir.ObjectRef{}]
		}
		switch {
		case rejected:
			c.Status, c.Reason, c.Message = metav1.ConditionFalse, meshv1alpha1.ReasonRejected, msg
		case pending > 0:
			c.Status, c.Reason, c.Message = metav1.ConditionFalse, meshv1alpha1.ReasonPending, fmt.Sprintf("%d of %d connected proxies have not acknowledged the current configuration yet", pending, len(upToDate))
		default:
			c.Status, c.Reason, c.Message = metav1.ConditionTrue, meshv1alpha1.ReasonProgrammed, fmt.Sprintf("every connected proxy (%d) runs the current configuration", len(upToDate))
		}
		out[s.Ref] = c
	}
	return out
}
