package webhooks_test

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/cli"
)

// TestCheckSeesTheWebhook runs `kubectl weft check`'s checks against the
// injector as the API server calls it: the webhook check has a pod
// injected (dry run) and learns the proxy version from it, and the
// meshed-pods check finds a pod that should have a sidecar but has none
// (its namespace was labelled after it was created) and names the fix.
func TestCheckSeesTheWebhook(t *testing.T) {
	env := startWebhookEnv(t)
	c := env.Client
	ctx := t.Context()
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: meshedNS, Labels: map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "late"}},
	} {
		if err := c.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	awaitWebhookActive(t, c)
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	opts := cli.DefaultCheckOptions()
	// The configuration as make manifests generates it, before
	// config/default renames it.
	opts.Webhook, opts.DryRunNamespace = "mutating-webhook-configuration", "late"
	check := func() map[string]cli.CheckResult {
		t.Helper()
		out := map[string]cli.CheckResult{}
		for _, r := range cli.Check(ctx, cli.CheckCluster{Client: c, ServerVersion: cs.Discovery().ServerVersion, Debug: cli.DebugAPI{REST: cs.Discovery().RESTClient()}}, opts) {
			out[r.Name] = r
		}
		return out
	}

	res := check()
	if wh := res["injection webhook"]; wh.Status != cli.CheckOK || !strings.Contains(wh.Detail, "with proxy "+testConfig().ProxyVersion) {
		t.Errorf("webhook check: %+v", wh)
	}
	if mp := res["meshed pods"]; mp.Status != cli.CheckOK {
		t.Errorf("meshed pods with none missing: %+v", mp)
	}

	// A pod from before its namespace joined the mesh.
	if err := c.Create(ctx, appPod("late", "legacy-0")); err != nil {
		t.Fatal(err)
	}
	var ns corev1.Namespace
	if err := c.Get(ctx, client.ObjectKey{Name: "late"}, &ns); err != nil {
		t.Fatal(err)
	}
	ns.Labels = map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}
	if err := c.Update(ctx, &ns); err != nil {
		t.Fatal(err)
	}
	mp := check()["meshed pods"]
	if mp.Status != cli.CheckFailed || !strings.Contains(mp.Detail, "late/legacy-0") || !strings.Contains(mp.Fix, "legacy-0") {
		t.Errorf("meshed pods with one not injected: %+v", mp)
	}
}
