package canary

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	rolloutsv1alpha1 "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"github.com/argoproj/argo-rollouts/rollout/trafficrouting/smi"
	"github.com/argoproj/argo-rollouts/utils/defaults"
	"github.com/argoproj/argo-rollouts/utils/record"
	flaggerv1 "github.com/fluxcd/flagger/pkg/apis/flagger/v1beta1"
	flaggergw "github.com/fluxcd/flagger/pkg/apis/gatewayapi/v1beta1"
	flaggerclient "github.com/fluxcd/flagger/pkg/client/clientset/versioned"
	"github.com/fluxcd/flagger/pkg/router"
	smiclient "github.com/servicemeshinterface/smi-sdk-go/pkg/gen/client/split/clientset/versioned"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/e2e/cluster"
	"github.com/weft-mesh/weft/internal/testenv"
)

const (
	appNS = "shop"
	port  = 8080
	// weftController is the controller name Weft writes in route status.
	weftController = gwapiv1.GatewayController(meshv1alpha1.GatewayControllerName)
)

// TestCanaryTools runs a canary and a rollback with each tool's own code.
// After each step the tool's own read-back must agree, and real calls from
// a proxyless gRPC client must follow the weights, while four other
// callers call the apex the whole time and no call may fail.
func TestCanaryTools(t *testing.T) {
	c := startBox(t)
	ctx := t.Context()
	if _, err := envtest.InstallCRDs(c.Config, envtest.CRDInstallOptions{Paths: []string{filepath.Join(testenv.RepoRoot(), "config", "smi")}, ErrorIfPathMissing: true}); err != nil {
		t.Fatal(err)
	}
	must(t, c.CreateNamespace(ctx, appNS))
	must(t, c.CreateNamespace(ctx, "front"))
	web, err := c.RunPod(ctx, cluster.PodSpec{Namespace: "front", Name: "web-0", ServiceAccount: "web", IP: "10.244.0.2"})
	must(t, err)
	k := &box{Cluster: c, web: web, nextIP: 10}

	t.Run("Argo Rollouts SMI (v1alpha1)", func(t *testing.T) {
		// A Rollout as the controller holds it: Argo Rollouts' SMI
		// reconciler reads its canary strategy and owns the split it
		// writes. The root Service defaults to the stable Service.
		ro := &rolloutsv1alpha1.Rollout{
			ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "checkout", UID: "5e1f0000-0000-4000-8000-000000000001"},
			Spec: rolloutsv1alpha1.RolloutSpec{Strategy: rolloutsv1alpha1.RolloutStrategy{Canary: &rolloutsv1alpha1.CanaryStrategy{
				StableService: "checkout", CanaryService: "checkout-canary",
				TrafficRouting: &rolloutsv1alpha1.RolloutTrafficRouting{SMI: &rolloutsv1alpha1.SMITrafficRouting{}},
			}}},
		}
		if v := defaults.GetSMIAPIVersion(); v != "v1alpha1" {
			t.Fatalf("Argo Rollouts' default SMI version is %s; the test expects v1alpha1", v)
		}
		client, err := smiclient.NewForConfig(c.Config)
		must(t, err)
		r, err := smi.NewReconciler(smi.ReconcilerConfig{
			Rollout: ro, Client: client, Recorder: record.NewFakeEventRecorder(),
			ControllerKind: rolloutsv1alpha1.SchemeGroupVersion.WithKind("Rollout"),
		})
		must(t, err)
		k.canary(t, "checkout", "checkout", "checkout-canary", func(w int) error {
			if err := r.SetWeight(int32(w)); err != nil {
				return err
			}
			// Argo Rollouts' own check after a step; for SMI it has
			// nothing to verify and must say so (nil), not fail.
			ok, err := r.VerifyWeight(int32(w))
			if err != nil || ok != nil && !*ok {
				return fmt.Errorf("VerifyWeight(%d) = %v, %w", w, ok, err)
			}
			return nil
		})

		// Mid-canary, the controller is killed and started again, as a
		// node failure would: calls keep flowing on the last weights, the
		// restarted controller pushes the SMI split it finds (not the apex
		// alone), and the tool's next step reaches the clients.
		must(t, r.SetWeight(50))
		conn, err := k.web.Conn(fmt.Sprintf("checkout.%s.svc.cluster.local:%d", appNS, port))
		must(t, err)
		k.follows(t, conn, "checkout", 50)
		stop := cluster.Background(t.Context(), conn, 4, 50000, 5*time.Second)
		k.KillController()
		must(t, k.StartController(t.Context()))
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			lctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			tl := cluster.Load(lctx, conn, 400, 4, 5*time.Second)
			cancel()
			if got := tl.Share("checkout-canary-"); tl.Failed() > 0 || got < shareBounds[50][0] || got > shareBounds[50][1] {
				t.Errorf("after the controller restart the calls left the 50%% split: %s", tl)
			}
		}
		must(t, r.SetWeight(0))
		k.follows(t, conn, "checkout", 0)
		tally, failed := cluster.TallyOf(stop())
		for _, c := range failed {
			t.Errorf("call at %s failed across the controller restart: %v", c.Start.Format("15:04:05.000"), c.Err)
		}
		t.Logf("across the controller restart: %s", tally)
	})

	t.Run("Flagger Gateway API (gatewayapi:v1, Service parent)", func(t *testing.T) { flaggerGatewayAPI(t, k) })
	t.Run("Argo Rollouts Gateway API plugin (its write, reproduced)", func(t *testing.T) { argoGatewayAPIPlugin(t, k) })

	for _, version := range []string{"v1alpha3", "v1alpha2", "v1alpha1"} {
		t.Run("Flagger SMI ("+version+")", func(t *testing.T) {
			name := "podinfo-" + version
			r := flaggerRouter(t, k, "smi:"+version)
			cn := &flaggerv1.Canary{
				ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: name, UID: ktypes.UID("f1a90000-0000-4000-8000-00000000000" + version[len(version)-1:])},
				Spec: flaggerv1.CanarySpec{
					TargetRef: flaggerv1.LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: name},
					Service:   flaggerv1.CanaryService{Port: port},
					Analysis:  &flaggerv1.CanaryAnalysis{StepWeight: 10, MaxWeight: 50},
				},
			}
			apex, primary, canary := cn.GetServiceNames()
			k.canary(t, apex, primary, canary, flaggerStep(t, r, cn, nil))
		})
	}
}

// flaggerRouter is the router Flagger's controller builds for a Canary
// with spec.provider set to provider, owner references on.
func flaggerRouter(t *testing.T, k *box, provider string) router.Interface {
	t.Helper()
	kube, err := kubernetes.NewForConfig(k.Config)
	must(t, err)
	fc, err := flaggerclient.NewForConfig(k.Config)
	must(t, err)
	return router.NewFactory(k.Config, kube, fc, "", "", zap.NewNop().Sugar(), fc, true).MeshRouter(provider, "")
}

// flaggerStep does what Flagger's controller does on the tick that moves a
// canary to weight w: reconcile the route or split (it creates it at
// canary weight 0 the first time), set the weights, and read them back
// before going on. In v1.36.1 the Gateway API router's tick that creates
// the HTTPRoute also returns an error (its update path runs on the empty
// object of the failed Get: "resource name may not be empty"); the next
// tick finds the route and succeeds, and so does the step. reconciled,
// when set, runs after each reconcile.
func flaggerStep(t *testing.T, r router.Interface, cn *flaggerv1.Canary, reconciled func()) func(w int) error {
	return func(w int) error {
		if err := r.Reconcile(cn); err != nil {
			t.Logf("Flagger's Reconcile: %v (its next tick retries)", err)
			if err := r.Reconcile(cn); err != nil {
				return err
			}
		}
		if reconciled != nil {
			reconciled()
		}
		// A status write between Flagger's read and its update makes
		// the update conflict; Flagger's next tick tries again.
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error { return r.SetRoutes(cn, 100-w, w, false) }); err != nil {
			return err
		}
		p, cw, _, err := r.GetRoutes(cn)
		if err != nil || p != 100-w || cw != w {
			return fmt.Errorf("GetRoutes after SetRoutes(%d, %d) = %d, %d: %w", 100-w, w, p, cw, err)
		}
		return nil
	}
}

// flaggerGatewayAPI is Flagger's gatewayapi:v1 provider with the apex
// Service as the route's parent (GAMMA): Flagger writes the HTTPRoute and
// its weights; Weft must accept the route and follow them.
func flaggerGatewayAPI(t *testing.T, k *box) {
	r := flaggerRouter(t, k, "gatewayapi:v1")
	name := "catalog"
	svcPort := flaggergw.PortNumber(port)
	cn := &flaggerv1.Canary{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: name, UID: "f1a90000-0000-4000-8000-0000000000a1"},
		Spec: flaggerv1.CanarySpec{
			TargetRef: flaggerv1.LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: name},
			Service: flaggerv1.CanaryService{Port: port, GatewayRefs: []flaggergw.ParentReference{{
				Group: ptr.To(flaggergw.Group("")), Kind: ptr.To(flaggergw.Kind("Service")), Name: flaggergw.ObjectName(name), Port: &svcPort,
			}}},
			// Every Canary has an analysis; the router reads it.
			Analysis: &flaggerv1.CanaryAnalysis{StepWeight: 10, MaxWeight: 50},
		},
	}
	apex, primary, canary := cn.GetServiceNames()
	k.canary(t, apex, primary, canary, flaggerStep(t, r, cn, func() { k.routeAccepted(t, apex) }))
}

// argoGatewayAPIPlugin steps an HTTPRoute the way Argo Rollouts' Gateway
// API plugin does. The plugin's module is not served by the Go module
// proxy, so its write is reproduced from its source
// (argoproj-labs/rollouts-plugin-trafficrouter-gatewayapi,
// pkg/plugin/httproute.go, setHTTPRouteWeight, at commit dd80a9f): get
// the route named in the Rollout, set every backendRef named after the
// canary Service to the desired weight and every one named after the
// stable Service to 100 minus it, and Update the whole object.
func argoGatewayAPIPlugin(t *testing.T, k *box) {
	apex, stable, canary := "ledger", "ledger-stable", "ledger-canary"
	gvPort := gwapiv1.PortNumber(port)
	// The route a user writes for the plugin (GAMMA: the apex Service as
	// parent), stable at 100.
	route := &gwapiv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "ledger-route"},
		Spec: gwapiv1.HTTPRouteSpec{
			CommonRouteSpec: gwapiv1.CommonRouteSpec{ParentRefs: []gwapiv1.ParentReference{{
				Group: ptr.To(gwapiv1.Group("")), Kind: ptr.To(gwapiv1.Kind("Service")), Name: gwapiv1.ObjectName(apex), Port: &gvPort,
			}}},
			Rules: []gwapiv1.HTTPRouteRule{{BackendRefs: []gwapiv1.HTTPBackendRef{
				{BackendRef: gwapiv1.BackendRef{BackendObjectReference: gwapiv1.BackendObjectReference{Name: gwapiv1.ObjectName(stable), Port: &gvPort}, Weight: ptr.To[int32](100)}},
				{BackendRef: gwapiv1.BackendRef{BackendObjectReference: gwapiv1.BackendObjectReference{Name: gwapiv1.ObjectName(canary), Port: &gvPort}, Weight: ptr.To[int32](0)}},
			}}},
		},
	}
	created := false
	k.canary(t, apex, stable, canary, func(w int) error {
		ctx := t.Context()
		if !created {
			if err := k.Client.Create(ctx, route); err != nil {
				return err
			}
			created = true
			k.routeAccepted(t, route.Name)
		}
		desired := int32(w)
		rest := 100 - desired
		// Weft's status writes move the route's resourceVersion, so the
		// plugin's update may conflict; Argo Rollouts then requeues the
		// Rollout and the plugin reads the route again.
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var got gwapiv1.HTTPRoute
			if err := k.Client.Get(ctx, client.ObjectKeyFromObject(route), &got); err != nil {
				return err
			}
			for i := range got.Spec.Rules {
				for j := range got.Spec.Rules[i].BackendRefs {
					ref := &got.Spec.Rules[i].BackendRefs[j]
					switch string(ref.Name) {
					case canary:
						ref.Weight = &desired
					case stable:
						ref.Weight = &rest
					}
				}
			}
			return k.Client.Update(ctx, &got)
		})
	})
}

// routeAccepted waits until Weft accepts the route on its Service parent.
func (b *box) routeAccepted(t *testing.T, name string) {
	t.Helper()
	eventually(t, 20*time.Second, "HTTPRoute "+name+" Accepted by Weft", func() (bool, string) {
		var r gwapiv1.HTTPRoute
		if err := b.Client.Get(t.Context(), client.ObjectKey{Namespace: appNS, Name: name}, &r); err != nil {
			return false, err.Error()
		}
		for _, p := range r.Status.Parents {
			if p.ControllerName == weftController && meta.IsStatusConditionTrue(p.Conditions, string(gwapiv1.RouteConditionAccepted)) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", r.Status.Parents)
	})
}

// box is the cluster and the client pod the scenarios call from.
type box struct {
	*cluster.Cluster
	web    *cluster.Pod
	nextIP int
}

// canary creates the Services a tool expects (apex, stable and canary),
// one pod behind each of stable and canary, and then steps the canary with
// step(w): 0, 10, 50, 100 and back to 0. An apex of its own selects both
// tracks, as an application's Service does before a tool takes it over, so
// that the first step shows when the tool's split or route is in force;
// an apex that is the stable Service (Argo Rollouts' SMI default) selects
// the stable pods.
func (b *box) canary(t *testing.T, apex, stable, canary string, step func(canaryWeight int) error) {
	ctx := t.Context()
	stableLabels := map[string]string{"app": apex, "track": "stable"}
	canaryLabels := map[string]string{"app": apex, "track": "canary"}
	apexLabels := map[string]string{"app": apex}
	if stable == apex {
		apexLabels = stableLabels
	}
	must(t, b.CreateService(ctx, appNS, apex, port, apexLabels))
	if stable != apex {
		must(t, b.CreateService(ctx, appNS, stable, port, stableLabels))
	}
	must(t, b.CreateService(ctx, appNS, canary, port, canaryLabels))
	b.backend(t, apex+"-stable-0", apex, stableLabels)
	b.backend(t, apex+"-canary-0", apex, canaryLabels)
	conn, err := b.web.Conn(fmt.Sprintf("%s.%s.svc.cluster.local:%d", apex, appNS, port))
	must(t, err)
	share := func(n int) cluster.Tally {
		lctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		return cluster.Load(lctx, conn, n, 4, 5*time.Second)
	}
	eventually(t, 20*time.Second, "the apex answers", func() (bool, string) {
		tl := share(20)
		return tl.Failed() == 0 && tl.Calls == 20, tl.String()
	})

	// The tool's first write moves the apex's calls to the stable
	// Service's cluster. The continuous callers start once it is in force:
	// grpc-go switches a channel's route selection a moment before its
	// balancer has the newly named cluster, and calls picked in between
	// fail with "unknown cluster selected for RPC" (a client race, see
	// docs/progressive-delivery.md). Weight steps after that do not name
	// new clusters (a zero-weight backend is kept warm), so they are the
	// ones checked under load.
	must(t, step(0))
	b.follows(t, conn, apex, 0)
	lctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	stop := cluster.Background(lctx, conn, 4, 50000, 5*time.Second)
	for _, w := range []int{0, 10, 50, 100, 0} {
		if err := step(w); err != nil {
			t.Fatalf("step to %d%%: %v", w, err)
		}
		b.follows(t, conn, apex, w)
	}
	tally, failed := cluster.TallyOf(stop())
	for _, c := range failed {
		t.Errorf("call at %s failed during the canary: %v", c.Start.Format("15:04:05.000"), c.Err)
	}
	t.Logf("under continuous calls through 0 → 10 → 50 → 100 → 0: %s", tally)
	if tally.Calls < 100 || tally.Share(apex+"-canary-") == 0 {
		t.Errorf("the continuous callers should have made calls on both versions: %s", tally)
	}
}

// follows waits until samples of 400 calls to the apex land on its canary
// pods within the bounds of weight w, none failing.
func (b *box) follows(t *testing.T, conn grpc.ClientConnInterface, apex string, w int) {
	t.Helper()
	bounds := shareBounds[w]
	start := time.Now()
	eventually(t, 10*time.Second, fmt.Sprintf("calls follow canary weight %d%%", w), func() (bool, string) {
		lctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		tl := cluster.Load(lctx, conn, 400, 4, 5*time.Second)
		got := tl.Share(apex + "-canary-")
		return tl.Failed() == 0 && got >= bounds[0] && got <= bounds[1], tl.String()
	})
	t.Logf("canary at %d%%: calls followed within %s", w, time.Since(start).Round(time.Millisecond))
}

// shareBounds are the canary's accepted shares of 400 calls at each
// weight: about ±3.5 standard deviations of the binomial around it.
var shareBounds = map[int][2]float64{0: {0, 0}, 10: {0.05, 0.16}, 50: {0.41, 0.59}, 100: {1, 1}}

// backend runs a serving pod and waits until it is ready.
func (b *box) backend(t *testing.T, name, sa string, labels map[string]string) {
	t.Helper()
	b.nextIP++
	p, err := b.RunPod(t.Context(), cluster.PodSpec{Namespace: appNS, Name: name, ServiceAccount: sa, IP: fmt.Sprintf("10.244.1.%d", b.nextIP), Port: port, Labels: labels})
	must(t, err)
	must(t, p.WaitReady(t.Context(), 30*time.Second))
}

// startBox builds weft-controller and starts the cluster in a box.
func startBox(t *testing.T) *cluster.Cluster {
	t.Helper()
	bin := os.Getenv("WEFT_CONTROLLER_BINARY")
	if bin != "" && !filepath.IsAbs(bin) {
		bin = filepath.Join(testenv.RepoRoot(), bin)
	}
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "weft-controller")
		must(t, cluster.BuildController(testenv.RepoRoot(), bin))
	}
	c, err := cluster.Start(t.Context(), cluster.Options{RepoRoot: testenv.RepoRoot(), ControllerBinary: bin, WorkDir: t.TempDir(), Logf: t.Logf})
	must(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(c.ControllerLog()); err == nil {
				if len(b) > 16<<10 {
					b = b[len(b)-16<<10:]
				}
				t.Logf("weft-controller log (last 16 KiB):\n%s", b)
			}
		}
		c.Stop()
	})
	return c
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	last := ""
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		ok, msg := cond()
		last = msg
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: not within %s; last: %s", what, timeout, last)
	}
}
