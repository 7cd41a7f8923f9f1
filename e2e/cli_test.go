package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/e2e/cluster"
	"github.com/weft-mesh/weft/internal/cli"
	"github.com/weft-mesh/weft/internal/cli/command"
	"github.com/weft-mesh/weft/internal/debugapi"
)

// kubectlWeft runs the plugin as a user would, with a kubeconfig, and
// returns its exit code, stdout and stderr.
func kubectlWeft(kubeconfig string, args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := command.Run(append([]string{"--kubeconfig", kubeconfig}, args...), strings.NewReader(""), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// testKubectlWeft drives proxy-status, proxy-config, check and analyze
// against the box: the API server forwards the debug.weft.dev API to the
// controller process through the aggregation layer, and RBAC decides who
// may read it.
func (b *box) testKubectlWeft(t *testing.T) {
	admin := b.KubeconfigPath()
	b.versions(t, "cli", 1, 1)
	b.reachable(t, "cli", b.web, b.batch)
	ts := b.split(t, "cli", "cli", 70, 30)

	// Both client pods are connected and took their configuration.
	var list debugapi.ProxyList
	eventually(t, 30*time.Second, "proxy-status lists web-0 and batch-0, synced", func() (bool, string) {
		code, out, errOut := kubectlWeft(admin, "proxy-status", "-A", "-o", "json")
		if code != 0 {
			return false, fmt.Sprintf("exit %d: %s", code, errOut)
		}
		list = debugapi.ProxyList{}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return false, err.Error()
		}
		synced := 0
		for _, p := range list.Items {
			if p.Namespace == frontNS && (p.Name == "web-0" || p.Name == "batch-0") && p.Status.Synced {
				synced++
			}
		}
		return synced == 2, out
	})
	for _, p := range list.Items {
		if p.Namespace != frontNS {
			continue
		}
		if p.Status.Kind != debugapi.KindProxyless || p.Status.Replica != cluster.ControllerPodName || !strings.HasPrefix(p.Status.Agent, "gRPC Go") || len(p.Status.Resources) < 3 {
			t.Errorf("proxy %s/%s: %+v, want a proxyless gRPC client on %s with listeners, clusters and endpoints (routes come inline)", p.Namespace, p.Name, p.Status, cluster.ControllerPodName)
		}
	}
	if len(list.Replicas) != 1 || list.Replicas[0].Error != "" {
		t.Errorf("replicas %+v", list.Replicas)
	}

	code, out, errOut := kubectlWeft(admin, "proxy-status", "-n", frontNS)
	t.Logf("kubectl weft proxy-status -n front:\n%s", out)
	if code != 0 || !strings.Contains(out, "web-0") || !strings.Contains(out, "batch-0") || strings.Count(out, "SYNCED") < 6 || strings.Contains(out, "NAMESPACE") {
		t.Errorf("proxy-status -n front: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = kubectlWeft(admin, "proxy-status", frontNS+"/web-0")
	if code != 0 || !strings.Contains(out, "Status:   Synced") || !strings.Contains(out, "Identity: spiffe://cluster.local/ns/front/sa/web") {
		t.Errorf("proxy-status front/web-0: exit %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = kubectlWeft(admin, "proxy-status", "-n", appNS, "no-such-pod")
	if code != 2 || !strings.Contains(errOut, "shop/no-such-pod "+debugapi.NotConnected) {
		t.Errorf("proxy-status of a pod without a proxy: exit %d, stderr %s", code, errOut)
	}

	// What web-0 is served now carries the split's weights.
	want := fmt.Sprintf("weights outbound|%d||cli-v1.shop.svc.cluster.local 70, outbound|%d||cli-v2.shop.svc.cluster.local 30", port, port)
	code, out, errOut = kubectlWeft(admin, "proxy-config", "-n", frontNS, "web-0")
	if code != 0 || !strings.Contains(out, "Served by "+cluster.ControllerPodName) || !strings.Contains(out, want) || !strings.Contains(out, "(proxyless gRPC)") {
		t.Errorf("proxy-config web-0: exit %d, want %q in\n%s%s", code, want, out, errOut)
	}
	b.setWeights(t, ts, 20, 80)
	b.waitProgrammed(t, ts)
	want = fmt.Sprintf("weights outbound|%d||cli-v1.shop.svc.cluster.local 20, outbound|%d||cli-v2.shop.svc.cluster.local 80", port, port)
	code, out, _ = kubectlWeft(admin, "proxy-config", frontNS+"/web-0")
	if code != 0 || !strings.Contains(out, want) {
		t.Errorf("proxy-config after the weights changed: exit %d, want %q in\n%s", code, want, out)
	}
	code, out, _ = kubectlWeft(admin, "proxy-config", frontNS+"/web-0", "-o", "json")
	var cfg debugapi.ProxyConfig
	if err := json.Unmarshal([]byte(out), &cfg); code != 0 || err != nil || len(cfg.Resources["Cluster"]) == 0 {
		t.Errorf("proxy-config -o json: exit %d, %v", code, err)
	}

	// The API server decides who may read proxies: RBAC, not the port.
	alice, err := b.AddUser("alice")
	must(t, err)
	code, _, errOut = kubectlWeft(alice, "proxy-status", "-A")
	if code != 2 || !strings.Contains(errOut, "forbidden") || !strings.Contains(errOut, "weft-proxy-reader") {
		t.Errorf("proxy-status without RBAC: exit %d, stderr %s", code, errOut)
	}
	must(t, b.Client.Create(t.Context(), &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "alice-reads-proxies"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "weft-proxy-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "alice"}},
	}))
	eventually(t, 10*time.Second, "alice reads proxies once bound to weft-proxy-reader", func() (bool, string) {
		code, out, errOut := kubectlWeft(alice, "proxy-status", "-A")
		return code == 0 && strings.Contains(out, "web-0"), out + errOut
	})
	// Straight to the controller's port, without the API server's front
	// proxy certificate, nobody gets in.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, fmt.Sprintf("https://%s:%d/apis/debug.weft.dev/v1alpha1/proxies", cluster.ControllerPodIP, cluster.ProxyAPIPort), nil)
	must(t, err)
	req.Header.Set("X-Remote-User", "system:admin")
	resp, err := hc.Do(req)
	must(t, err)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("direct call to the proxy status API: HTTP %d, want 401", resp.StatusCode)
	}

	// check: everything of the box passes but the injection webhook, which
	// the box does not install (it injects pods itself).
	var results []cli.CheckResult
	eventually(t, 30*time.Second, "check settles with only the webhook failing", func() (bool, string) {
		code, out, errOut := kubectlWeft(admin, "check", "-o", "json")
		results = nil
		if err := json.Unmarshal([]byte(out), &results); err != nil {
			return false, fmt.Sprintf("exit %d: %v: %s%s", code, err, out, errOut)
		}
		for _, r := range results {
			if r.Status != cli.CheckOK && r.Name != "injection webhook" {
				return false, out
			}
		}
		return code == 1, out
	})
	names := map[string]cli.CheckResult{}
	for _, r := range results {
		names[r.Name] = r
	}
	for _, n := range []string{"Kubernetes API", "Gateway API CRDs", "cert-manager CRDs", "issuer of MeshIdentity " + cluster.MeshIdentityName, "MeshIdentity " + cluster.MeshIdentityName, "controller", "xDS serving certificate", "proxy status API", "injection webhook", "meshed pods", "proxies"} {
		if _, ok := names[n]; !ok {
			t.Errorf("check did not run %q: %+v", n, results)
		}
	}
	if wh := names["injection webhook"]; wh.Status != cli.CheckFailed || !strings.Contains(wh.Detail, "weft-injector") || wh.Fix == "" {
		t.Errorf("webhook check: %+v, want a failure naming the missing configuration, with a fix", wh)
	}
	if p := names["proxies"]; !strings.Contains(p.Detail, "all synced") {
		t.Errorf("proxies check: %+v", p)
	}
	_, out, _ = kubectlWeft(admin, "check")
	t.Logf("kubectl weft check:\n%s", out)
	code, out, _ = kubectlWeft(admin, "check", "--pre")
	if code != 0 || strings.Contains(out, "controller") || !strings.Contains(out, "✔ Gateway API CRDs: v1.") {
		t.Errorf("check --pre: exit %d\n%s", code, out)
	}

	// analyze reads the cluster: a split whose backend does not exist is
	// an error on that split, with the reason its status in the cluster
	// gives.
	bad := &meshv1alpha1.TrafficSplit{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "cli-missing-backend"},
		Spec:       meshv1alpha1.TrafficSplitSpec{Service: "cli-v1", Backends: []meshv1alpha1.TrafficSplitBackend{{Service: "cli-v3", Weight: 100}}},
	}
	must(t, b.Client.Create(t.Context(), bad))
	var ready *metav1.Condition
	eventually(t, 10*time.Second, "the controller reports the missing backend", func() (bool, string) {
		must(t, b.Client.Get(t.Context(), client.ObjectKeyFromObject(bad), bad))
		ready = meta.FindStatusCondition(bad.Status.Conditions, meshv1alpha1.ConditionReady)
		return ready != nil && ready.Status == metav1.ConditionFalse, fmt.Sprintf("%+v", bad.Status.Conditions)
	})
	code, out, errOut = kubectlWeft(admin, "analyze", "-n", appNS)
	found := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		found = found || len(f) > 5 && f[2] == appNS+"/cli-missing-backend" && f[4] == meshv1alpha1.ConditionReady && f[5] == ready.Reason && strings.Contains(line, "cli-v3")
	}
	if code != 1 || !found {
		t.Errorf("analyze -n shop: exit %d, want the cluster's Ready=False %s on cli-missing-backend:\n%s%s", code, ready.Reason, out, errOut)
	}
	if strings.Contains(out, "front/") {
		t.Errorf("analyze -n shop reports objects of other namespaces:\n%s", out)
	}
	must(t, b.Client.Delete(t.Context(), bad))
}
