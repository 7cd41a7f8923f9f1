// Command weft-demo runs Weft on one machine with no cluster: a local API
// server and etcd, the weft-controller binary, and proxyless gRPC
// workloads (a checkout Service with v1 and v2 backends and a web client),
// all inside a private network namespace. It then moves a canary through
// its steps (90/10 → 50/50 → 0/100 by default), printing the split the
// client actually observes; then hands checkout to a canary controller
// that writes an SMI TrafficSplit as Argo Rollouts does and steps it on the
// canary's success rate, promoting a healthy canary and rolling back a
// failing one; and keeps serving until interrupted so that the objects can
// be inspected and changed with kubectl.
//
// Run it with `make demo` (DEMO_ARGS passes flags). It shares its cluster
// in a box with the e2e tests (e2e/cluster), so the demo shows what the
// tests check.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/e2e/cluster"
)

type options struct {
	repoRoot, controller, assets string
	duration, hold, interval     time.Duration
	calls                        int
	steps                        [][2]int32
	// gated runs two canaries the way a canary tool does after the manual
	// steps: a healthy one promoted, a failing one rolled back.
	gated      bool
	gateSteps  []int32
	minSuccess float64
	// out receives what the demo prints (stdout).
	out io.Writer
}

func main() {
	var o options
	var steps string
	flag.StringVar(&o.repoRoot, "repo-root", ".", "Weft's source tree (CRDs, RBAC, samples).")
	flag.StringVar(&o.controller, "controller-binary", "bin/weft-controller", "The weft-controller executable to run.")
	flag.StringVar(&o.assets, "assets", os.Getenv("KUBEBUILDER_ASSETS"), "Directory with kube-apiserver, etcd and kubectl (hack/envtest/build.sh prints it).")
	flag.DurationVar(&o.duration, "duration", 0, "Stop after this long; 0 runs the canary once and then serves until Ctrl-C.")
	flag.StringVar(&steps, "steps", "90/10,50/50,0/100", "Canary weights v1/v2, in order.")
	flag.DurationVar(&o.hold, "hold", 6*time.Second, "How long each canary step lasts.")
	flag.DurationVar(&o.interval, "interval", 2*time.Second, "How often the observed split is printed.")
	flag.IntVar(&o.calls, "calls", 500, "Calls per observation.")
	flag.BoolVar(&o.gated, "gated", true, "After the manual steps, hand checkout to a canary controller: SMI TrafficSplit weights stepped on the canary's success rate, one canary promoted and a failing one rolled back.")
	var gateSteps string
	flag.StringVar(&gateSteps, "gate-steps", "10,25,50,100", "Canary weights of the gated canaries, in order.")
	flag.Float64Var(&o.minSuccess, "min-success", 99, "The gate: the canary's success rate (percent) over a step's hold must be at least this.")
	flag.Parse()
	o.out = os.Stdout
	var err error
	if o.steps, err = parseSteps(steps); err != nil {
		fmt.Fprintln(os.Stderr, "weft-demo:", err)
		os.Exit(2)
	}
	if o.gateSteps, err = parseWeights(gateSteps); err != nil {
		fmt.Fprintln(os.Stderr, "weft-demo: --gate-steps:", err)
		os.Exit(2)
	}

	sb, err := cluster.EnterSandbox(cluster.SandboxOptions{Hosts: cluster.SandboxHosts(), Expose: []string{"127.0.0.1:0"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "weft-demo:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	if err := run(ctx, o, sb); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		fmt.Fprintln(os.Stderr, "weft-demo:", err)
		os.Exit(1)
	}
}

func parseSteps(s string) ([][2]int32, error) {
	var out [][2]int32
	for step := range strings.SplitSeq(s, ",") {
		a, b, ok := strings.Cut(strings.TrimSpace(step), "/")
		v1, err1 := strconv.ParseInt(a, 10, 32)
		v2, err2 := strconv.ParseInt(b, 10, 32)
		if !ok || err1 != nil || err2 != nil || v1 < 0 || v2 < 0 || v1+v2 == 0 {
			return nil, fmt.Errorf("--steps: %q is not v1/v2 weights like 90/10", step)
		}
		out = append(out, [2]int32{int32(v1), int32(v2)})
	}
	return out, nil
}

func run(ctx context.Context, o options, sb *cluster.Sandbox) error {
	began := time.Now()
	say := func(format string, args ...any) {
		fmt.Fprintf(o.out, "[%6.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
	}
	root, err := filepath.Abs(o.repoRoot)
	if err != nil {
		return err
	}
	controller, err := filepath.Abs(o.controller)
	if err != nil {
		return err
	}
	say("cluster in a box on a private network namespace: local API server and etcd, weft-controller, proxyless gRPC pods")
	c, err := cluster.Start(ctx, cluster.Options{
		RepoRoot:         root,
		AssetsDir:        o.assets,
		ControllerBinary: controller,
		Logf:             func(format string, args ...any) { say(format, args...) },
	})
	if err != nil {
		return err
	}
	defer func() {
		say("stopping")
		c.Stop()
	}()
	kubeconfig, err := c.ExposeAPI(ctx, sb.Exposed[0])
	if err != nil {
		return err
	}

	const ns, port = "shop", 8080
	say("creating namespace %s: Services checkout, checkout-v1, checkout-v2 and their pods", ns)
	if err := c.CreateNamespace(ctx, ns); err != nil {
		return err
	}
	for name, sel := range map[string]map[string]string{
		"checkout":    {"app": "checkout"},
		"checkout-v1": {"app": "checkout", "version": "v1"},
		"checkout-v2": {"app": "checkout", "version": "v2"},
	} {
		if err := c.CreateService(ctx, ns, name, port, sel); err != nil {
			return err
		}
	}
	var pods []*cluster.Pod
	for i, p := range []struct{ name, version string }{{"checkout-v1-0", "v1"}, {"checkout-v1-1", "v1"}, {"checkout-v2-0", "v2"}} {
		pod, err := c.RunPod(ctx, cluster.PodSpec{
			Namespace: ns, Name: p.name, ServiceAccount: "checkout", IP: fmt.Sprintf("10.244.1.%d", i+10), Port: port,
			Labels: map[string]string{"app": "checkout", "version": p.version},
		})
		if err != nil {
			return err
		}
		pods = append(pods, pod)
	}
	for _, p := range pods {
		if err := p.WaitReady(ctx, time.Minute); err != nil {
			return err
		}
	}
	web, err := c.RunPod(ctx, cluster.PodSpec{Namespace: ns, Name: "web-0", ServiceAccount: "web", IP: "10.244.2.10"})
	if err != nil {
		return err
	}
	say("pods running: checkout-v1-0 checkout-v1-1 checkout-v2-0 (gRPC xDS servers), web-0 (gRPC xDS client)")

	var applied []string
	for _, f := range []string{"mesh_v1alpha1_trafficsplit.yaml", "mesh_v1alpha1_retrypolicy.yaml", "mesh_v1alpha1_circuitbreaker.yaml", "mesh_v1alpha1_accesspolicy.yaml"} {
		objs, err := c.ApplyFile(ctx, filepath.Join(root, "config", "samples", f))
		if err != nil {
			return err
		}
		for _, obj := range objs {
			applied = append(applied, fmt.Sprintf("%T %s", obj, obj.GetName()))
		}
	}
	say("applied config/samples: %s", strings.Join(applied, ", "))
	kubectl := filepath.Join(o.assets, "kubectl")
	if rel, err := filepath.Rel(root, kubectl); err == nil && !strings.HasPrefix(rel, "..") {
		kubectl = rel
	}
	inspect := fmt.Sprintf("export KUBECONFIG=%s; %s get ts,rp,cb,ap,mi,pods,svc -A", kubeconfig, kubectl)
	plugin := filepath.Join("bin", "kubectl-weft")
	fmt.Fprintf(o.out, "\nInspect the cluster from another terminal:\n  %s\n  %s proxy-status -A; %s proxy-config %s/%s; %s check\n\n", inspect, plugin, plugin, web.Spec.Namespace, web.Spec.Name, plugin)

	conn, err := web.Conn(fmt.Sprintf("checkout.%s.svc.cluster.local:%d", ns, port))
	if err != nil {
		return err
	}
	ts := &meshv1alpha1.TrafficSplit{}
	key := client.ObjectKey{Namespace: ns, Name: "checkout-canary"}
	observe := func(label string) {
		octx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		t := cluster.Load(octx, conn, o.calls, 4, 5*time.Second)
		if ctx.Err() != nil {
			return
		}
		line := fmt.Sprintf("%s → observed v1 %.1f%% v2 %.1f%% over %d calls", label, 100*t.Share("checkout-v1-"), 100*t.Share("checkout-v2-"), t.Calls)
		if f := t.Failed(); f > 0 {
			line += fmt.Sprintf(" (%d failed: %s)", f, strings.Join(t.Errors, "; "))
		}
		say("%s", line)
	}
	setWeights := func(v1, v2 int32) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := c.Client.Get(ctx, key, ts); err != nil {
				return err
			}
			for i := range ts.Spec.Backends {
				switch ts.Spec.Backends[i].Service {
				case "checkout-v1":
					ts.Spec.Backends[i].Weight = v1
				case "checkout-v2":
					ts.Spec.Backends[i].Weight = v2
				}
			}
			return c.Client.Update(ctx, ts)
		})
	}

	// programmed waits, as a canary controller would, until the
	// TrafficSplit's status says every workload runs its generation.
	programmed := func() string {
		start := time.Now()
		err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
			if err := c.Client.Get(ctx, key, ts); err != nil {
				return false, nil
			}
			cond := meta.FindStatusCondition(ts.Status.Conditions, meshv1alpha1.ConditionProgrammed)
			return cond != nil && cond.Status == metav1.ConditionTrue && cond.ObservedGeneration == ts.Generation, nil
		})
		if err != nil {
			return "not Programmed after 10s"
		}
		return fmt.Sprintf("Programmed %s after the write", time.Since(start).Round(time.Millisecond))
	}

	say("canary of checkout: %s", stepsString(o.steps))
	for _, step := range o.steps {
		if err := setWeights(step[0], step[1]); err != nil {
			return err
		}
		label := fmt.Sprintf("weights %d/%d", step[0], step[1])
		say("%s written; TrafficSplit %s", label, programmed())
		hold, cancel := context.WithTimeout(ctx, o.hold)
		wait.NonSlidingUntilWithContext(hold, func(context.Context) { observe(label) }, o.interval)
		cancel()
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if o.gated {
		g := &gate{o: o, root: root, c: c, say: say, observe: observe, canary: pods[2], ns: ns}
		if err := g.run(ctx); err != nil {
			return err
		}
		say("gated canaries done. Still serving; change the SMI split and watch the client follow it, e.g.:")
		fmt.Fprintf(o.out, "  %s; %s patch trafficsplits.split.smi-spec.io checkout -n %s --type merge -p '{\"spec\":{\"backends\":[{\"service\":\"checkout-v2\",\"weight\":\"30\"},{\"service\":\"checkout-v1\",\"weight\":\"70\"}]}}'\n", "export KUBECONFIG="+kubeconfig, kubectl, ns)
		fmt.Fprintln(o.out, "Press Ctrl-C to stop.")
		<-ctx.Done()
		return ctx.Err()
	}
	say("canary done. Still serving; change the split and watch the client follow it, e.g.:")
	fmt.Fprintf(o.out, "  %s; %s patch ts checkout-canary -n %s --type merge -p '{\"spec\":{\"backends\":[{\"service\":\"checkout-v1\",\"weight\":30},{\"service\":\"checkout-v2\",\"weight\":70}]}}'\n", "export KUBECONFIG="+kubeconfig, kubectl, ns)
	fmt.Fprintln(o.out, "Press Ctrl-C to stop.")
	last := ""
	wait.NonSlidingUntilWithContext(ctx, func(ctx context.Context) {
		if err := c.Client.Get(ctx, key, ts); err != nil {
			return
		}
		weights := make([]string, 0, len(ts.Spec.Backends))
		for _, b := range ts.Spec.Backends {
			weights = append(weights, strconv.Itoa(int(b.Weight)))
		}
		label := "weights " + strings.Join(weights, "/")
		// While serving, only a change of weights is worth a line.
		if label != last {
			observe(label)
			last = label
		}
	}, o.interval)
	return ctx.Err()
}

// parseWeights reads "10,25,50,100".
func parseWeights(s string) ([]int32, error) {
	var out []int32
	for _, f := range strings.Split(s, ",") {
		w, err := strconv.ParseInt(strings.TrimSpace(f), 10, 32)
		if err != nil || w < 0 || w > 100 {
			return nil, fmt.Errorf("%q: want weights from 0 to 100, comma-separated", f)
		}
		out = append(out, int32(w))
	}
	return out, nil
}

func stepsString(steps [][2]int32) string {
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = fmt.Sprintf("%d/%d", s[0], s[1])
	}
	return strings.Join(out, " → ")
}
