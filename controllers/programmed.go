package controllers

import (
	"context"
	"maps"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/internal/ir"
	"github.com/weft-mesh/weft/internal/status"
	"github.com/weft-mesh/weft/internal/xds/publish"
	"github.com/weft-mesh/weft/internal/xds/server"
)

// checkPause is the least time between two checks of the proxies' state.
// A check asks every connected proxy whether it is up to date (a few
// milliseconds at 2000 proxies) and writes only the conditions that
// changed.
const checkPause = 25 * time.Millisecond

// programmedWatcher follows ACKs and NACKs: it records propagation times and
// keeps every object's Programmed condition current.
type programmedWatcher struct {
	r *MeshReconciler
	// prev are the Programmed conditions of the last check, worked out
	// from the rebuild prevOf.
	prev   map[ir.ObjectRef]metav1.Condition
	prevOf *publish.Published
}

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
		// from the ACKs themselves, so the pause does not lengthen them;
		// it does delay Programmed after the last ACK, by up to the pause.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(checkPause):
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
	programmed := last.Programmed(proxies{r.XDS, connected, upToDate}, w.prev)
	if last == w.prevOf && maps.Equal(programmed, w.prev) {
		// The same rebuild and the same conditions: the writer has this
		// status already (checks come every 25 ms while ACKs arrive).
		return
	}
	w.prev, w.prevOf = programmed, last
	r.Status.Submit(ctx, status.Build(last.Result, last.Problems, programmed))
}

// proxies answers publish's questions from the xDS server, asking it about
// each connected node once per check.
type proxies struct {
	xds       *server.Server
	connected map[string]bool
	upToDate  func(string) bool
}

func (p proxies) Connected(node string) bool    { return p.connected[node] }
func (p proxies) UpToDate(node string) bool     { return p.upToDate(node) }
func (p proxies) Nacks() map[string]server.Nack { return p.xds.Nacks() }
