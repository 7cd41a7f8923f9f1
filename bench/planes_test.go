package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"google.golang.org/protobuf/types/known/structpb"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/weft-mesh/weft/internal/testenv"
)

// controlPlane is how to run one control plane and how its proxies
// introduce themselves.
type controlPlane struct {
	name   string
	binary string
	env    []string
	args   func(xdsAddr string, free func(*testing.B) string) []string
	// node and metadata are a proxy's node ID and metadata.
	node     func(p podInfo) string
	metadata func(p podInfo) *structpb.Struct
	// awaited is the route configuration a weight change of the first
	// HTTPRoute must reach every proxy in.
	awaited string
}

func weftPlane(binary string) controlPlane {
	return controlPlane{
		name:   "weft",
		binary: binary,
		args: func(xdsAddr string, free func(*testing.B) string) []string {
			return append([]string{
				"--xds-bind-address=" + xdsAddr,
				"--xds-insecure",
				"--enable-injection=false",
				"--enable-identity=false",
				"--metrics-bind-address=0",
				"--health-probe-bind-address=0",
				"--proxy-api-bind-address=0",
			}, strings.Fields(os.Getenv("WEFT_BENCH_WEFT_ARGS"))...)
		},
		node:     func(p podInfo) string { return p.name + ".bench" },
		metadata: func(podInfo) *structpb.Struct { return nil },
		awaited:  "s0.bench.svc.cluster.local:80",
	}
}

func istiodPlane(binary string) controlPlane {
	env := []string{
		"POD_NAMESPACE=istio-system",
		"POD_NAME=istiod-bench",
		"REVISION=default",
		// The proxies connect in plaintext, as they do to Weft with
		// --xds-insecure: no client identity to check.
		"XDS_AUTH=false",
		// No webhooks to patch: nothing is injected here.
		"INJECTION_WEBHOOK_CONFIG_NAME=",
		"VALIDATION_WEBHOOK_CONFIG_NAME=",
		// istiod admits 25 new streams a second on two cores and refuses
		// the rest after a second; Envoy (and the simulated proxies)
		// retry with back-off, which would stretch the start to 80 s at
		// 2000 proxies. Weft has no such limit. What is measured comes
		// after every proxy is in.
		"PILOT_MAX_REQUESTS_PER_SECOND=1000000",
	}
	env = append(env, strings.Fields(os.Getenv("WEFT_BENCH_ISTIOD_ENV"))...)
	return controlPlane{
		name:   "istiod",
		binary: binary,
		env:    env,
		node: func(p podInfo) string {
			return fmt.Sprintf("sidecar~%s~%s.bench~bench.svc.cluster.local", p.ip, p.name)
		},
		metadata: func(p podInfo) *structpb.Struct {
			s, err := structpb.NewStruct(map[string]any{
				"ISTIO_VERSION":     "1.28.0",
				"CLUSTER_ID":        "Kubernetes",
				"NAMESPACE":         "bench",
				"NAME":              p.name,
				"SERVICE_ACCOUNT":   "default",
				"INSTANCE_IPS":      p.ip,
				"INTERCEPTION_MODE": "REDIRECT",
				"WORKLOAD_NAME":     p.service,
				"LABELS":            map[string]any{"app": p.service},
				"MESH_ID":           "cluster.local",
			})
			if err != nil {
				panic(err)
			}
			return s
		},
		awaited: "80",
	}
}

// istiodArgs are pilot-discovery's flags: every port on loopback, the
// mesh config in a file of its own.
func istiodArgs(b *testing.B, kubeconfig string) func(xdsAddr string, free func(*testing.B) string) []string {
	dir := b.TempDir()
	mesh := filepath.Join(dir, "mesh")
	if err := os.WriteFile(mesh, []byte("defaultConfig:\n  discoveryAddress: istiod.istio-system.svc:15012\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	return func(xdsAddr string, free func(*testing.B) string) []string {
		return []string{
			"discovery",
			"--kubeconfig=" + kubeconfig,
			"--meshConfig=" + mesh,
			"--networksConfig=" + filepath.Join(dir, "no-networks"),
			"--grpcAddr=" + xdsAddr,
			"--httpAddr=" + free(b),
			"--httpsAddr=" + free(b),
			"--secureGRPCAddr=" + free(b),
			"--monitoringAddr=" + free(b),
			"--domain=cluster.local",
			"--log_output_level=default:warn",
		}
	}
}

func init() {
	// The benchmark's API client logs nothing worth reading.
	ctrllog.SetLogger(logr.Discard())
}

// clientFor is a client of the API server the control planes use.
func clientFor(b *testing.B, kubeconfig string) client.Client {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		b.Fatal(err)
	}
	// client-go's default limit (5 requests a second) would hold the
	// weight writes back and count the wait as propagation.
	cfg.QPS, cfg.Burst = 1000, 2000
	c, err := client.New(cfg, client.Options{Scheme: testenv.NewScheme()})
	if err != nil {
		b.Fatal(err)
	}
	return c
}
