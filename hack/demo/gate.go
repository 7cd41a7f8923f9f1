package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/e2e/cluster"
)

// gate runs canaries the way Argo Rollouts does with its SMI router: it
// owns an SMI TrafficSplit of checkout, steps the canary's weight, holds
// each step while the client calls, and reads the canary's success rate
// over the hold (from the canary pod's own count of calls and failures,
// as an analysis reads the workload's metrics). At or above the gate it
// goes on, and at 100 the canary is promoted; below, it rolls back to 0.
type gate struct {
	o       options
	root    string // the repository, absolute
	c       *cluster.Cluster
	say     func(format string, args ...any)
	observe func(label string)
	canary  *cluster.Pod
	ns      string
	split   *unstructured.Unstructured
}

// Outcomes of a gated canary.
const (
	promoted   = "promoted"
	rolledBack = "rolled back"
)

func (g *gate) run(ctx context.Context) error {
	g.say("handing checkout to a canary controller: installing SMI's TrafficSplit CRD (config/smi) into the running control plane")
	if _, err := envtest.InstallCRDs(g.c.Config, envtest.CRDInstallOptions{Paths: []string{filepath.Join(g.root, "config", "smi")}, ErrorIfPathMissing: true}); err != nil {
		return err
	}
	if err := g.writeSplit(ctx, 0); err != nil {
		return err
	}
	// The Weft TrafficSplit outranks an SMI split on the same apex; once
	// it is gone the SMI split (at canary weight 0) is in force.
	if err := g.c.Client.Delete(ctx, &meshv1alpha1.TrafficSplit{ObjectMeta: metav1.ObjectMeta{Namespace: g.ns, Name: "checkout-canary"}}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	g.say("wrote split.smi-spec.io/v1alpha1 TrafficSplit checkout as Argo Rollouts does (checkout-v2 0, checkout-v1 100) and deleted TrafficSplit checkout-canary")
	if err := g.accepted(ctx, 0, g.split.GetResourceVersion()); err != nil {
		return err
	}
	g.observe("canary at 0%")

	g.say("canary 1: checkout-v2 is healthy; steps %v, gate: success rate ≥ %.1f%%", g.o.gateSteps, g.o.minSuccess)
	outcome, err := g.canaryRun(ctx)
	if err != nil {
		return err
	}
	g.say("canary 1 %s", outcome)

	if err := g.setWeight(ctx, 0); err != nil {
		return err
	}
	g.canary.Behaviour.SetFailures(5, codes.Unavailable)
	g.say("canary 2: a new checkout-v2 that fails one call in five (UNAVAILABLE); back to 0%%, same steps and gate. The RetryPolicy of config/samples retries UNAVAILABLE, so the client hardly sees the failures; the canary's own counts do")
	g.observe("canary at 0%")
	outcome, err = g.canaryRun(ctx)
	if err != nil {
		return err
	}
	g.say("canary 2 %s", outcome)
	g.observe("after canary 2")
	g.canary.Behaviour.SetFailures(0, codes.OK)
	return nil
}

// canaryRun steps through the gate steps and returns the outcome.
func (g *gate) canaryRun(ctx context.Context) (string, error) {
	for _, w := range g.o.gateSteps {
		if err := g.setWeight(ctx, w); err != nil {
			return "", err
		}
		calls0, failed0 := g.canary.Behaviour.Calls(), g.canary.Behaviour.Failed()
		label := fmt.Sprintf("canary at %d%%", w)
		hold, cancel := context.WithTimeout(ctx, g.o.hold)
		wait.NonSlidingUntilWithContext(hold, func(context.Context) { g.observe(label) }, g.o.interval)
		cancel()
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		calls, failed := g.canary.Behaviour.Calls()-calls0, g.canary.Behaviour.Failed()-failed0
		if calls == 0 {
			g.say("gate at %d%%: the canary served no calls; rolling back", w)
			return rolledBack, g.setWeight(ctx, 0)
		}
		rate := 100 * float64(calls-failed) / float64(calls)
		if rate < g.o.minSuccess {
			g.say("gate at %d%%: the canary succeeded on %.1f%% of %d calls, below %.1f%%: rolling back to 0%%", w, rate, calls, g.o.minSuccess)
			if err := g.setWeight(ctx, 0); err != nil {
				return "", err
			}
			g.observe("rolled back to 0%")
			return rolledBack, nil
		}
		g.say("gate at %d%%: the canary succeeded on %.1f%% of %d calls → next step", w, rate, calls)
	}
	return promoted, nil
}

// writeSplit creates the SMI split, canary first and stable last, weights
// as quantities, as Argo Rollouts' SMI reconciler writes it.
func (g *gate) writeSplit(ctx context.Context, canary int32) error {
	g.split = &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
		"metadata": map[string]any{"namespace": g.ns, "name": "checkout"},
		"spec":     map[string]any{"service": "checkout", "backends": backends(canary)},
	}}
	// Right after the CRD is installed its discovery may lag a moment.
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		err := g.c.Client.Create(ctx, g.split)
		return err == nil || apierrors.IsAlreadyExists(err), nil
	})
}

// setWeight merge-patches the weights as Argo Rollouts' SetWeight does.
func (g *gate) setWeight(ctx context.Context, canary int32) error {
	patch := fmt.Sprintf(`{"spec":{"backends":[{"service":"checkout-v2","weight":"%d"},{"service":"checkout-v1","weight":"%d"}]}}`, canary, 100-canary)
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(g.split.GroupVersionKind())
	obj.SetNamespace(g.ns)
	obj.SetName("checkout")
	if err := g.c.Client.Patch(ctx, obj, client.RawPatch(ktypes.MergePatchType, []byte(patch))); err != nil {
		return err
	}
	g.say("canary weight %d%% written", canary)
	return g.accepted(ctx, canary, obj.GetResourceVersion())
}

// accepted waits for Weft's Event on the split that says it routes by the
// new weights (kubectl events --for trafficsplit.split.smi-spec.io/checkout
// shows the same), and prints it.
func (g *gate) accepted(ctx context.Context, canary int32, resourceVersion string) error {
	want := fmt.Sprintf("checkout-v2 %d, checkout-v1 %d", canary, 100-canary)
	start := time.Now()
	var note string
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		var evs eventsv1.EventList
		if err := g.c.Client.List(ctx, &evs, client.InNamespace(g.ns)); err != nil {
			return false, nil //nolint:nilerr // the API server may be busy: ask again
		}
		for _, e := range evs.Items {
			if e.Regarding.Kind == "TrafficSplit" && e.Regarding.Name == "checkout" && e.Regarding.ResourceVersion == resourceVersion &&
				e.Reason == meshv1alpha1.ReasonAccepted && strings.HasSuffix(e.Note, want) {
				note = e.Note
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("no Accepted event from Weft for weights %s: %w", want, err)
	}
	g.say("Weft (Event on the split, %s later): Accepted: %s", time.Since(start).Round(time.Millisecond), note)
	return nil
}

func backends(canary int32) []any {
	return []any{
		map[string]any{"service": "checkout-v2", "weight": fmt.Sprint(canary)},
		map[string]any{"service": "checkout-v1", "weight": fmt.Sprint(100 - canary)},
	}
}
