package inject

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"

	goldenfile "github.com/weft-mesh/weft/internal/golden"
	"github.com/weft-mesh/weft/internal/identity"
	"github.com/weft-mesh/weft/internal/workload"
)

// TestBootstrapGolden keeps readable copies of the generated bootstraps: the
// patch goldens hold them as escaped strings, which are hard to review.
func TestBootstrapGolden(t *testing.T) {
	cfg := testConfig()
	ns, pod := loadCase(t, "namespace-label")
	res, err := Inject(pod, ns.Labels, cfg)
	if err != nil {
		t.Fatal(err)
	}
	initC := container(res.Pod, InitContainerName)
	boot, _ := env(initC, EnvProxyBootstrap)
	sds, _ := env(initC, EnvProxySDS)

	ns, pod = loadCase(t, "grpc-agent")
	res, err = Inject(pod, ns.Labels, cfg)
	if err != nil {
		t.Fatal(err)
	}
	grpc, _ := env(container(res.Pod, "cart"), EnvGRPCBootstrapConfig)

	for file, raw := range map[string]string{
		"bootstrap-envoy.json": boot.Value,
		"bootstrap-sds.json":   sds.Value,
		"bootstrap-grpc.json":  grpc.Value,
	} {
		var pretty bytes.Buffer
		if err := json.Indent(&pretty, []byte(raw), "", "  "); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		pretty.WriteByte('\n')
		goldenfile.Check(t, filepath.Join("testdata", file), pretty.Bytes())
	}
}

// TestPatchOrderLongArrays guards the sorting of patch operations where
// string order and index order differ (index 10 sorts before 9 as text).
func TestPatchOrderLongArrays(t *testing.T) {
	many := make([]corev1.EnvVar, 12)
	for i := range many {
		many[i] = corev1.EnvVar{Name: "V" + strings.Repeat("x", i), Value: "v"}
	}
	one := []corev1.EnvVar{{Name: "ONLY"}}
	for name, tc := range map[string]struct{ from, to []corev1.EnvVar }{
		"grow":   {one, many},
		"shrink": {many, one},
	} {
		t.Run(name, func(t *testing.T) {
			a := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Env: tc.from}}}}
			b := a.DeepCopy()
			b.Spec.Containers[0].Env = tc.to
			for range 20 { // map order varies between runs; so would a bad sort
				ops, err := createPatch(a, b)
				if err != nil {
					t.Fatal(err)
				}
				raw, _ := json.Marshal(ops)
				p, err := jsonpatchapply.DecodePatch(raw)
				if err != nil {
					t.Fatal(err)
				}
				orig, _ := json.Marshal(a)
				want, _ := json.Marshal(b)
				got, err := p.Apply(orig)
				if err != nil {
					t.Fatalf("patch does not apply: %v", err)
				}
				if !jsonpatchapply.Equal(got, want) {
					t.Fatalf("patched\n%s\nwant\n%s", got, want)
				}
			}
		})
	}
}

// TestSpliceNode checks that the per-pod shortcut renders exactly what
// marshalling the whole bootstrap would.
func TestSpliceNode(t *testing.T) {
	cfg := testConfig()
	in, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []xdsNode{
		{nodeID: "cart-7d9f8.shop", namespace: "shop", serviceAccount: "cart", owner: workload.Owner{Kind: "Deployment", Name: "cart"}},
		{nodeID: "$(WEFT_POD_NAME).batch", namespace: "batch", serviceAccount: "default", owner: workload.Owner{Kind: "Job", Name: "nightly"}},
	} {
		want, err := envoyBootstrap(cfg, w)
		if err != nil {
			t.Fatal(err)
		}
		spliced, err := spliceNode(envoyNode(cfg, w), envoyStats(w), in.staticBootstrap)
		if err != nil {
			t.Fatal(err)
		}
		got := &bootstrapv3.Bootstrap{}
		if err := protojson.Unmarshal([]byte(spliced), got); err != nil {
			t.Fatalf("spliced bootstrap is not a Bootstrap: %v\n%s", err, spliced)
		}
		if !proto.Equal(got, want) {
			t.Errorf("spliced bootstrap differs from the built one:\n%s\nwant\n%v", spliced, want)
		}
		if err := got.ValidateAll(); err != nil {
			t.Errorf("spliced bootstrap: %v", err)
		}
	}
}

func TestSupportsNativeSidecars(t *testing.T) {
	for v, want := range map[string]bool{
		"v1.28.9":              false,
		"v1.29.0":              true,
		"v1.29.1-gke.1589000":  true,
		"v1.37.2+k3s1":         true,
		"v1.27.16-eks-a18cd3a": false,
	} {
		got, err := SupportsNativeSidecars(v)
		if err != nil || got != want {
			t.Errorf("SupportsNativeSidecars(%q) = %v, %v; want %v", v, got, err, want)
		}
	}
	if _, err := SupportsNativeSidecars("unknown"); err == nil {
		t.Error("want an error for an unparsable version")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := testConfig().Validate(); err != nil {
		t.Fatalf("test config invalid: %v", err)
	}
	bad := testConfig()
	bad.ProxyImage = ""
	bad.XDSAddress = "weft-xds"
	bad.LogLevel = "loud"
	bad.ProxyUID = 0
	bad.TrustDomain = "Not A Domain"
	err := bad.Validate()
	for _, want := range []string{"proxy image must be set", "xds address", "log level", "proxy uid", "trust domain"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
}

// TestLongServiceAccount checks that the identity volume names the Secret
// the identity reconciler creates, including the shortened name it gives
// long service accounts.
func TestLongServiceAccount(t *testing.T) {
	ns, pod := loadCase(t, "namespace-label")
	pod.Spec.ServiceAccountName = strings.Repeat("very-long-service-account-", 4) + "name"
	res, err := Inject(pod, ns.Labels, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := identitySecretName(t, res.Pod), identity.CertificateName(pod.Spec.ServiceAccountName); got != want || len(want) > 63 {
		t.Errorf("identity secret %q, want %q", got, want)
	}
}

// TestDestinationServiceTag: the bootstrap's regex tags an inbound
// virtual host's statistics with its Service and leaves every other
// statistic alone. Envoy cuts the first group from the name and takes the
// second as the value.
func TestDestinationServiceTag(t *testing.T) {
	re := regexp.MustCompile(DestinationServiceTagRegex)
	for _, c := range []struct{ stat, want string }{
		{"vhost.checkout.vcluster.inbound|8080.upstream_rq_200", "checkout"},
		{"vhost.checkout-canary.vcluster.inbound|8080.upstream_rq_5xx", "checkout-canary"},
		{"vhost.checkout.vcluster.inbound|9090.upstream_rq_time", "checkout"},
		// Envoy's catch-all virtual cluster, and any other.
		{"vhost.checkout.vcluster.other.upstream_rq_200", ""},
		{"vhost.checkout.route.default.upstream_rq_200", ""},
		{"cluster.inbound|8080.upstream_rq_200", ""},
		{"http.inbound|8080.downstream_rq_2xx", ""},
		{"vhost.outbound|80||checkout.shop.svc.cluster.local.vcluster.inbound|80.upstream_rq_200", ""},
	} {
		m := re.FindStringSubmatch(c.stat)
		got := ""
		if m != nil {
			got = m[2]
			if m[1] != m[2]+"." {
				t.Errorf("%s: the regex cuts %q, not the virtual host's token", c.stat, m[1])
			}
		}
		if got != c.want {
			t.Errorf("%s: %s=%q, want %q", c.stat, StatsTagDestinationService, got, c.want)
		}
	}
}
