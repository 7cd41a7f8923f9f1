package inject

import (
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/xds"
)

// TestGRPCBootstrapAcceptedByGRPC hands the generated bootstrap to grpc-go's
// xDS resolver, which parses it exactly as a proxyless workload would. The
// server address is swapped for a closed local port so nothing leaves the
// machine; everything else is the injected text.
func TestGRPCBootstrapAcceptedByGRPC(t *testing.T) {
	ns, pod := loadCase(t, "grpc-agent")
	res, err := Inject(pod, ns.Labels, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	e, ok := env(container(res.Pod, "cart"), EnvGRPCBootstrapConfig)
	if !ok {
		t.Fatalf("no %s", EnvGRPCBootstrapConfig)
	}
	local := strings.Replace(e.Value, `"server_uri":"weft-xds.weft-system.svc:15010"`, `"server_uri":"127.0.0.1:1"`, 1)
	if local == e.Value {
		t.Fatal("bootstrap does not name the configured xDS server")
	}
	if err := buildXDSResolver(t, local); err != nil {
		t.Errorf("grpc-go rejects the bootstrap: %v", err)
	}

	// The same check fails on a broken bootstrap, so passing means something.
	broken := strings.Replace(local, `"refresh_interval":"60s"`, `"refresh_interval":"soon"`, 1)
	if err := buildXDSResolver(t, broken); err == nil {
		t.Error("grpc-go accepted a certificate provider with a bad refresh interval")
	}
}

func buildXDSResolver(t *testing.T, bootstrap string) error {
	t.Helper()
	builder, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		return err
	}
	r, err := builder.Build(resolver.Target{URL: url.URL{Scheme: "xds", Path: "/cart.shop.svc.cluster.local:8080"}}, nopClientConn{}, resolver.BuildOptions{})
	if err != nil {
		return err
	}
	r.Close()
	return nil
}

// nopClientConn is a resolver.ClientConn that ignores what the resolver
// reports; only whether Build succeeds matters here.
type nopClientConn struct{}

func (nopClientConn) UpdateState(resolver.State) error { return nil }
func (nopClientConn) ReportError(error)                {}
func (nopClientConn) NewAddress([]resolver.Address)    {}
func (nopClientConn) ParseServiceConfig(string) *serviceconfig.ParseResult {
	return &serviceconfig.ParseResult{}
}
