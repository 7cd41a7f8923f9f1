package v1alpha1_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/internal/testenv"
)

// TestCRDValidation runs the samples and a table of bad inputs against a real
// API server with the generated CRDs installed.
func TestCRDValidation(t *testing.T) {
	env := testenv.Start(t)
	ctx := t.Context()
	for _, ns := range []string{"shop", "bad"} {
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("samples are accepted", func(t *testing.T) {
		for _, obj := range readSamples(t) {
			if err := env.Client.Create(ctx, obj); err != nil {
				t.Errorf("sample %s %s rejected: %v", obj.GetKind(), obj.GetName(), err)
			}
		}
	})

	t.Run("defaults are applied", func(t *testing.T) {
		obj := mustObject(t, `
apiVersion: mesh.weft.dev/v1alpha1
kind: MeshIdentity
metadata: {name: defaults}
spec:
  trustDomain: example.org
  issuerRef: {name: ca}
`)
		if err := env.Client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
		spec := obj.Object["spec"].(map[string]any)
		want := map[string]any{"duration": "24h", "keyAlgorithm": "ECDSA"}
		for k, v := range want {
			if spec[k] != v {
				t.Errorf("spec.%s defaulted to %v, want %v", k, spec[k], v)
			}
		}
		if mode := spec["mtls"].(map[string]any)["mode"]; mode != "Strict" {
			t.Errorf("spec.mtls.mode defaulted to %v, want Strict", mode)
		}
		if kind := spec["issuerRef"].(map[string]any)["kind"]; kind != "ClusterIssuer" {
			t.Errorf("spec.issuerRef.kind defaulted to %v, want ClusterIssuer", kind)
		}
	})

	for _, tc := range badInputs() {
		t.Run("rejects "+tc.name, func(t *testing.T) {
			obj := mustObject(t, tc.yaml)
			if obj.GetNamespace() == "" && obj.GetKind() != "MeshIdentity" {
				obj.SetNamespace("bad")
			}
			err := env.Client.Create(ctx, obj)
			if err == nil {
				t.Fatalf("accepted, want rejection mentioning %q", tc.want)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("error is not a validation error: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not mention %q", err.Error(), w)
				}
			}
		})
	}

	t.Run("printer columns", func(t *testing.T) {
		testPrinterColumns(ctx, t, env)
	})
}

type badInput struct {
	name string
	yaml string
	// want are substrings the error must contain: the field path and the
	// part of the message that says how to fix it.
	want []string
}

const ts = "apiVersion: mesh.weft.dev/v1alpha1\nkind: TrafficSplit\nmetadata: {name: x}\nspec:\n"
const rp = "apiVersion: mesh.weft.dev/v1alpha1\nkind: RetryPolicy\nmetadata: {name: x}\nspec:\n  targetRef: {name: checkout}\n"
const cb = "apiVersion: mesh.weft.dev/v1alpha1\nkind: CircuitBreaker\nmetadata: {name: x}\nspec:\n"
const mi = "apiVersion: mesh.weft.dev/v1alpha1\nkind: MeshIdentity\nmetadata: {name: x}\nspec:\n"
const ap = "apiVersion: mesh.weft.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: x}\nspec:\n  targetRef: {name: checkout}\n"
const fi = "apiVersion: mesh.weft.dev/v1alpha1\nkind: FaultInjection\nmetadata: {name: x}\nspec:\n"
const rl = "apiVersion: mesh.weft.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: x}\nspec:\n  targetRef: {name: checkout}\n"

func badInputs() []badInput {
	many := make([]string, 17)
	for i := range many {
		many[i] = fmt.Sprintf("  - {service: b%d, weight: 1}", i)
	}
	return []badInput{
		// TrafficSplit
		{"all weights zero", ts + "  service: a\n  backends:\n  - {service: b, weight: 0}\n  - {service: c, weight: 0}\n",
			[]string{"spec.backends", "at least one backend must have a weight greater than 0"}},
		{"duplicate backends", ts + "  service: a\n  backends:\n  - {service: b, weight: 1}\n  - {service: b, weight: 2}\n",
			[]string{"spec.backends[1]", "Duplicate value"}},
		{"more than 16 backends", ts + "  service: a\n  backends:\n" + strings.Join(many, "\n") + "\n",
			[]string{"spec.backends", "must have at most 16 items"}},
		{"no backends", ts + "  service: a\n  backends: []\n",
			[]string{"spec.backends", "should have at least 1 items"}},
		{"negative weight", ts + "  service: a\n  backends:\n  - {service: b, weight: -1}\n",
			[]string{"spec.backends[0].weight", "greater than or equal to 0"}},
		{"weight too large", ts + "  service: a\n  backends:\n  - {service: b, weight: 1000001}\n",
			[]string{"spec.backends[0].weight", "less than or equal to 1000000"}},
		{"apex name not a DNS label", ts + "  service: Check_Out\n  backends:\n  - {service: b, weight: 1}\n",
			[]string{"spec.service", "should match"}},

		// RetryPolicy
		{"negative perTryTimeout", rp + "  perTryTimeout: -1s\n",
			[]string{"spec.perTryTimeout", "should match"}},
		{"perTryTimeout longer than timeout", rp + "  perTryTimeout: 3s\n  timeout: 2s\n",
			[]string{"spec.perTryTimeout must not be longer than spec.timeout"}},
		{"zero timeout", rp + "  timeout: 0s\n",
			[]string{"spec.timeout", "must be between 1ms and 1h"}},
		{"unknown retryOn", rp + "  retryOn: [sometimes]\n",
			[]string{"spec.retryOn[0]", "Unsupported value", "gateway-error"}},
		{"too many attempts", rp + "  attempts: 11\n",
			[]string{"spec.attempts", "less than or equal to 10"}},
		{"target is a Deployment", strings.Replace(rp, "{name: checkout}", "{group: apps, kind: Deployment, name: checkout}", 1),
			[]string{"spec.targetRef", "targetRef must be a Service"}},
		{"status codes without retriable-status-codes", rp + "  retryOn: [5xx]\n  retriableStatusCodes: [503]\n",
			[]string{"spec.retriableStatusCodes needs 'retriable-status-codes' in spec.retryOn"}},
		{"status code out of range", rp + "  retryOn: [retriable-status-codes]\n  retriableStatusCodes: [700]\n",
			[]string{"spec.retriableStatusCodes[0]", "less than or equal to 599"}},
		{"backoff max below base", rp + "  backoff: {baseInterval: 100ms, maxInterval: 10ms}\n",
			[]string{"spec.backoff", "maxInterval must not be shorter than spec.backoff.baseInterval"}},
		{"retry budget of 0 percent", rp + "  budget: {percent: 0}\n",
			[]string{"spec.budget.percent", "greater than or equal to 1"}},

		// CircuitBreaker
		{"breaker without limits", cb + "  targetRef: {name: checkout}\n",
			[]string{"spec must set at least one of maxConnections"}},
		{"outlier detection without detectors", cb + "  targetRef: {name: checkout}\n  outlierDetection: {interval: 5s}\n",
			[]string{"spec.outlierDetection must set at least one detector"}},
		{"failure percentage above 100", cb + "  targetRef: {name: checkout}\n  outlierDetection:\n    failurePercentage: {threshold: 101}\n",
			[]string{"spec.outlierDetection.failurePercentage.threshold", "less than or equal to 100"}},
		{"max ejection above 100", cb + "  targetRef: {name: checkout}\n  outlierDetection:\n    consecutive5xxErrors: 5\n    maxEjectionPercent: 150\n",
			[]string{"spec.outlierDetection.maxEjectionPercent", "less than or equal to 100"}},
		{"port zero", cb + "  targetRef: {name: checkout, port: 0}\n  maxRequests: 5\n",
			[]string{"spec.targetRef.port", "greater than or equal to 1"}},
		{"breaker on a route", cb + "  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: checkout}\n  maxRequests: 5\n",
			[]string{"spec.targetRef", "targetRef must be a core Service"}},
		{"ejection time negative", cb + "  targetRef: {name: checkout}\n  outlierDetection:\n    consecutive5xxErrors: 5\n    baseEjectionTime: -30s\n",
			[]string{"spec.outlierDetection.baseEjectionTime", "should match"}},

		// MeshIdentity
		{"bad trust domain", mi + "  trustDomain: Cluster.Local!\n  issuerRef: {name: ca}\n",
			[]string{"spec.trustDomain", "must be a SPIFFE trust domain"}},
		{"renewBefore not shorter than duration", mi + "  trustDomain: cluster.local\n  issuerRef: {name: ca}\n  duration: 24h\n  renewBefore: 24h\n",
			[]string{"spec.renewBefore must be shorter than spec.duration"}},
		{"certificate lifetime under an hour", mi + "  trustDomain: cluster.local\n  issuerRef: {name: ca}\n  duration: 10m\n",
			[]string{"spec.duration", "must be between 1h and 8760h"}},
		{"unknown mTLS mode", mi + "  trustDomain: cluster.local\n  issuerRef: {name: ca}\n  mtls: {mode: Off}\n",
			[]string{"spec.mtls.mode", "Unsupported value", "Permissive"}},
		{"unknown issuer kind", mi + "  trustDomain: cluster.local\n  issuerRef: {name: ca, kind: Vault}\n",
			[]string{"spec.issuerRef.kind", "Unsupported value", "ClusterIssuer"}},

		// AccessPolicy
		{"no rules", ap + "  rules: []\n",
			[]string{"spec.rules", "should have at least 1 items"}},
		{"rule matching nothing", ap + "  rules:\n  - {}\n",
			[]string{"spec.rules[0]", "each rule needs at least one entry in from or to"}},
		{"source with two kinds", ap + "  rules:\n  - from:\n    - {namespace: ops, identity: spiffe://cluster.local/ns/ops/sa/x}\n",
			[]string{"spec.rules[0].from[0]", "set exactly one of serviceAccount, namespace or identity"}},
		{"identity not a SPIFFE ID", ap + "  rules:\n  - from:\n    - identity: https://example.org/web\n",
			[]string{"spec.rules[0].from[0].identity", "identity must be a SPIFFE ID"}},
		{"path without leading slash", ap + "  rules:\n  - to:\n    - paths: [api/*]\n",
			[]string{"spec.rules[0].to[0].paths[0]", "should match"}},
		{"unknown method", ap + "  rules:\n  - to:\n    - methods: [FETCH]\n",
			[]string{"spec.rules[0].to[0].methods[0]", "Unsupported value"}},
		{"unknown action", ap + "  action: Maybe\n  rules:\n  - from:\n    - namespace: ops\n",
			[]string{"spec.action", "Unsupported value", "Allow"}},
		// CircuitBreaker timeouts
		{"idle timeout too short", cb + "  targetRef: {name: postgres}\n  idleTimeout: 100ms\n",
			[]string{"spec.idleTimeout", "spec.idleTimeout must be between 1s and 24h"}},
		{"connect timeout too long", cb + "  targetRef: {name: postgres}\n  connectTimeout: 10m\n",
			[]string{"spec.connectTimeout", "spec.connectTimeout must be between 1ms and 5m"}},
		// RateLimitPolicy
		{"no limit", rl,
			[]string{"spec", "set spec.limit, spec.perCaller or both"}},
		{"zero requests", rl + "  limit: {requests: 0}\n",
			[]string{"spec.limit.requests", "should be greater than or equal to 1"}},
		{"burst below requests", rl + "  limit: {requests: 10, burst: 5}\n",
			[]string{"spec.limit", "burst must be at least requests"}},
		{"interval too short", rl + "  perCaller: {requests: 10, interval: 10ms}\n",
			[]string{"spec.perCaller.interval", "interval must be between 50ms and 24h"}},
		{"rate limit on a route", "apiVersion: mesh.weft.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: x}\nspec:\n  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: web}\n  limit: {requests: 1}\n",
			[]string{"spec.targetRef", "targetRef must be a core Service"}},
		// FaultInjection
		{"no fault", fi + "  targetRef: {name: checkout}\n",
			[]string{"spec", "set spec.delay, spec.abort or both"}},
		{"abort with both statuses", fi + "  abort: {httpStatus: 503, grpcStatus: UNAVAILABLE}\n",
			[]string{"spec.abort", "set exactly one of spec.abort.httpStatus and spec.abort.grpcStatus"}},
		{"abort with no status", fi + "  abort: {percent: 10}\n",
			[]string{"spec.abort", "set exactly one of spec.abort.httpStatus and spec.abort.grpcStatus"}},
		{"abort status out of range", fi + "  abort: {httpStatus: 700}\n",
			[]string{"spec.abort.httpStatus", "should be less than or equal to 599"}},
		{"unknown gRPC status", fi + "  abort: {grpcStatus: BROKEN}\n",
			[]string{"spec.abort.grpcStatus", "Unsupported value", "UNAVAILABLE"}},
		{"gRPC status OK", fi + "  abort: {grpcStatus: OK}\n",
			[]string{"spec.abort.grpcStatus", "Unsupported value"}},
		{"percent over 100", fi + "  delay: {fixed: 10ms, percent: 150}\n",
			[]string{"spec.delay.percent", "should be less than or equal to 100"}},
		{"delay too long", fi + "  delay: {fixed: 2h}\n",
			[]string{"spec.delay.fixed", "spec.delay.fixed must be between 1ms and 1h"}},
		{"delay not a duration", fi + "  delay: {fixed: soon}\n",
			[]string{"spec.delay.fixed", "should match"}},
		{"header name with a space", fi + "  delay: {fixed: 10ms}\n  headers:\n  - {name: 'x fault', value: on}\n",
			[]string{"spec.headers[0].name", "should match"}},
		{"target of another kind", fi + "  delay: {fixed: 10ms}\n  targetRef: {kind: Deployment, name: web}\n",
			[]string{"spec.targetRef", "targetRef must be a Service"}},
		{"empty to entry", ap + "  rules:\n  - to:\n    - {}\n",
			[]string{"spec.rules[0].to[0]", "each to entry needs ports, methods or paths"}},
		{"path with a dot-dot segment", ap + "  rules:\n  - to:\n    - paths: [/ok, /admin/../secret]\n",
			[]string{"spec.rules[0].to[0]", "paths: /admin/../secret is not a normalised path", "/a/../b as /b"}},
		{"path with merged slashes", ap + "  rules:\n  - to:\n    - paths: [/a//b]\n",
			[]string{"spec.rules[0].to[0]", "paths: /a//b is not a normalised path"}},
		{"path with an encoded dot", ap + "  rules:\n  - to:\n    - paths: ['/%2e%2e/x']\n",
			[]string{"spec.rules[0].to[0]", "paths: /%2e%2e/x is not a normalised path"}},
		{"path with an encoded slash", ap + "  rules:\n  - to:\n    - paths: ['/a%2Fb/*']\n",
			[]string{"spec.rules[0].to[0]", "paths: /a%2Fb/* is not a normalised path"}},
		{"path ending in a dot segment", ap + "  rules:\n  - to:\n    - paths: [/a/.]\n",
			[]string{"spec.rules[0].to[0]", "paths: /a/. is not a normalised path"}},
		{"path with a backslash", ap + "  rules:\n  - to:\n    - paths: ['/a\\\\b']\n",
			[]string{"spec.rules[0].to[0].paths[0]", "should match"}},
	}
}

func mustObject(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
		t.Fatalf("test input is not YAML: %v\n%s", err, doc)
	}
	return obj
}

func readSamples(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	dir := filepath.Join(testenv.RepoRoot(), "config", "samples")
	files, err := filepath.Glob(filepath.Join(dir, "mesh_*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples in %s: %v", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, mustObject(t, string(b)))
	}
	return out
}

// testPrinterColumns asks the API server for the Table form, as kubectl does,
// and runs the real kubectl built by hack/envtest.
func testPrinterColumns(ctx context.Context, t *testing.T, env *testenv.Env) {
	cfg := rest.CopyConfig(env.Config)
	cfg.GroupVersion = nil
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"namespaces/shop/trafficsplits":   {"Name", "Service", "Ready", "Reason", "Age"},
		"namespaces/shop/retrypolicies":   {"Name", "Target", "Attempts", "Ready", "Reason", "Age"},
		"namespaces/shop/circuitbreakers": {"Name", "Target", "Ready", "Reason", "Age"},
		"meshidentities":                  {"Name", "Trust Domain", "mTLS", "Identities", "Ready Identities", "Ready", "Reason", "Age"},
		"namespaces/shop/accesspolicies":  {"Name", "Target", "Action", "Ready", "Reason", "Age"},
	}
	for path, cols := range want {
		req, err := newTableRequest(ctx, strings.TrimSuffix(cfg.Host, "/")+"/apis/mesh.weft.dev/v1alpha1/"+path)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s %v: %s", path, resp.Status, err, body)
		}
		var table metav1.Table
		if err := json.Unmarshal(body, &table); err != nil {
			t.Fatalf("%s: decoding table: %v: %s", path, err, body)
		}
		var got []string
		for _, c := range table.ColumnDefinitions {
			got = append(got, c.Name)
		}
		if strings.Join(got, ",") != strings.Join(cols, ",") {
			t.Errorf("%s columns = %v, want %v", path, got, cols)
		}
		if len(table.Rows) == 0 {
			t.Errorf("%s: no rows; the sample should be listed", path)
		}
	}

	kubectl := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
	kubeconfig := writeKubeconfig(t, env)
	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig, "get", "ts,retrypolicy,circuitbreaker,accesspolicy", "-n", "shop")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl get: %v: %s", err, stderr.String())
	}
	for _, s := range []string{"trafficsplit.mesh.weft.dev/checkout-canary", "SERVICE", "checkout", "retrypolicy.mesh.weft.dev/checkout-retries", "ATTEMPTS", "circuitbreaker.mesh.weft.dev/checkout-breaker", "accesspolicy.mesh.weft.dev/checkout-callers", "ACTION", "Allow"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("kubectl get output lacks %q:\n%s", s, out.String())
		}
	}
	cmd = exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig, "get", "weft", "-A")
	out.Reset()
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl get weft: %v: %s", err, stderr.String())
	}
	if !strings.Contains(out.String(), "meshidentity.mesh.weft.dev/default") {
		t.Errorf("kubectl get weft (the category) lacks the MeshIdentity:\n%s", out.String())
	}
}

func writeKubeconfig(t *testing.T, env *testenv.Env) string {
	t.Helper()
	user, err := env.Environment().AddUser(envtest.User{Name: "kubectl-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newTableRequest(ctx context.Context, url string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	return req, nil
}
