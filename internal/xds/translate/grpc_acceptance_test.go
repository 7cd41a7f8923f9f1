package translate

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/weft-mesh/weft/internal/ir"
	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

// TestGRPCAcceptance serves ForGRPC and GRPCServerListener output from a
// go-control-plane ADS server to real grpc-go xDS clients and an xDS
// server in this process, so grpc-go's own resource parsing accepts what
// the translator produces, and calls must follow it: mTLS from the
// certificate provider instances with the server's SPIFFE ID checked, and
// the Service's access policy enforced by the server.
func TestGRPCAcceptance(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	serverID := "spiffe://cluster.local/ns/shop/sa/greeter"
	webID := "spiffe://cluster.local/ns/web/sa/web"
	intruderID := "spiffe://cluster.local/ns/web/sa/intruder"
	trust := filepath.Join(dir, "ca.crt")
	writePEM(t, trust, "CERTIFICATE", ca.der)

	// The ADS server. gRPC subscribes to resources by name, so the cache
	// must answer with the subset asked for: in its ADS mode
	// go-control-plane answers only when a request names every resource
	// of the type in the snapshot, which a gRPC client never does.
	cache := cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
	adsLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adsServer := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(adsServer, serverv3.NewServer(t.Context(), cache, nil))
	go func() { _ = adsServer.Serve(adsLis) }()
	t.Cleanup(adsServer.Stop)

	bootstrap := func(node, id string) []byte {
		cert, key := ca.issue(t, dir, id)
		b, err := json.Marshal(map[string]any{
			"xds_servers": []any{map[string]any{
				"server_uri":      adsLis.Addr().String(),
				"channel_creds":   []any{map[string]any{"type": "insecure"}},
				"server_features": []string{"xds_v3"},
			}},
			"node": map[string]any{"id": node},
			// One provider for certificate, key and trust bundle, as the
			// injector writes it.
			"certificate_providers": map[string]any{
				GRPCCertificateProvider: map[string]any{"plugin_name": "file_watcher", "config": map[string]any{
					"certificate_file": cert, "private_key_file": key, "ca_certificate_file": trust, "refresh_interval": "600s",
				}},
			},
			"server_listener_resource_name_template": GRPCServerListenerTemplate,
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	// The gRPC xDS server, a health service behind the mesh.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := int32(lis.Addr().(*net.TCPAddr).Port)
	serverCreds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := xds.NewGRPCServer(grpc.Creds(serverCreds), xds.BootstrapContentsForTesting(bootstrap("greeter-1.shop", serverID)))
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	mesh := acceptanceMesh(port, serverID, webID)
	p, err := Prepare(mesh, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if pr := p.Problems(); len(pr) > 0 {
		t.Fatalf("problems: %v", pr)
	}
	serverListener, err := p.GRPCServerListener(mesh.ProxyGroups[0], "127.0.0.1", port)
	if err != nil {
		t.Fatal(err)
	}
	setSnapshot(t, cache, "greeter-1.shop", &Resources{Listeners: []types.Resource{serverListener}})
	cfg, err := p.ForGRPC(mesh.ProxyGroups[1])
	if err != nil {
		t.Fatal(err)
	}
	client := withEndpoints(cfg, mesh)
	checkSnapshot(t, client)
	setSnapshot(t, cache, "web-1.web", client)
	setSnapshot(t, cache, "intruder-1.web", client)

	check := func(node, id, target string, patience time.Duration) error {
		t.Helper()
		resolver, err := xds.NewXDSResolverWithConfigForTesting(bootstrap(node, id))
		if err != nil {
			t.Fatal(err)
		}
		creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient("xds:///"+target, grpc.WithResolvers(resolver), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// The server serves once it has its listener; until then calls
		// fail with Unavailable, so wait for a definite answer.
		var last error
		err = wait.PollUntilContextTimeout(t.Context(), 10*time.Millisecond, patience, true, func(ctx context.Context) (bool, error) {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
			if err == nil {
				if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
					t.Errorf("%s: health %v", target, resp.GetStatus())
				}
				return true, nil
			}
			last = err
			if status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
				return false, err
			}
			return false, nil
		})
		if wait.Interrupted(err) && last != nil {
			return last
		}
		return err
	}

	host := "greeter.shop.svc.cluster.local:" + strconv.Itoa(int(port))
	if err := check("web-1.web", webID, host, 30*time.Second); err != nil {
		t.Errorf("allowed caller via %s: %v", host, err)
	}
	short := "greeter.shop:" + strconv.Itoa(int(port))
	if err := check("web-1.web", webID, short, 30*time.Second); err != nil {
		t.Errorf("allowed caller via %s: %v", short, err)
	}
	if err := check("intruder-1.web", intruderID, host, 30*time.Second); status.Code(err) != codes.PermissionDenied {
		t.Errorf("caller outside the access policy: got %v, want PermissionDenied", err)
	}
	// The impostor Service's endpoint presents greeter's certificate, which
	// is not the identity the Service names: the client must refuse it.
	impostor := "impostor.shop.svc.cluster.local:" + strconv.Itoa(int(port))
	if err := check("web-1.web", webID, impostor, 2*time.Second); err == nil {
		t.Errorf("call to a server with the wrong SPIFFE ID succeeded")
	} else {
		t.Logf("call to a server with the wrong SPIFFE ID: %v", err)
	}
}

func acceptanceMesh(port int32, serverID, webID string) *ir.Mesh {
	host := "greeter.shop.svc.cluster.local"
	cluster := ir.ClusterName(host, port)
	canaryHost := "greeter-canary.shop.svc.cluster.local"
	canaryCluster := ir.ClusterName(canaryHost, port)
	svcRef := ir.ObjectRef{Kind: "Service", Namespace: "shop", Name: "greeter"}
	policies := []*ir.AccessPolicy{{
		Source: ir.ObjectRef{Group: "mesh.weft.dev", Kind: "AccessPolicy", Namespace: "shop", Name: "web-only"},
		Action: ir.AccessAllow,
		Rules: []ir.AccessRule{{
			Principals: []ir.Principal{{Exact: webID}},
			Paths:      []ir.PathPattern{{Prefix: "/grpc.health.v1.Health/"}},
		}},
	}}
	timeout := ir.Duration(10 * time.Second)
	return &ir.Mesh{
		ClusterDomain: "cluster.local",
		Namespaces: []*ir.Namespace{
			{Name: "shop", MTLS: ir.MTLSStrict, TrustDomain: "cluster.local"},
			{Name: "web", MTLS: ir.MTLSStrict, TrustDomain: "cluster.local"},
		},
		Services: []*ir.Service{{
			Source: svcRef, Namespace: "shop", Name: "greeter", Hostname: host,
			VIPs: []string{"10.96.0.1"}, MTLS: ir.MTLSStrict, Identities: []string{serverID},
			LoadBalancer:   ir.LoadBalancer{Policy: ir.LBRoundRobin},
			AccessPolicies: policies,
			Ports: []*ir.Port{{
				Name: "grpc", Port: port, Protocol: ir.ProtocolGRPC, Cluster: cluster,
				Endpoints: []ir.Endpoint{{Address: "127.0.0.1", Port: port, Health: ir.HealthHealthy}},
				CircuitBreaker: &ir.CircuitBreaker{MaxRequests: new(uint32(100)), Outlier: &ir.OutlierDetection{
					FailurePercentage: &ir.FailurePercentage{Threshold: 90, MinimumHosts: 5, RequestVolume: 100},
					Interval:          ir.Duration(10 * time.Second), BaseEjectionTime: ir.Duration(30 * time.Second), MaxEjectionPercent: 10,
				}},
				Routes: []*ir.Route{
					{
						Name: "grpcroute/shop/greeter/rule-0", Source: svcRef,
						Matches:  []ir.Match{{Path: &ir.PathMatch{Type: ir.PathPrefix, Value: "/grpc.health.v1.Health/"}}},
						Backends: []ir.Backend{{Cluster: cluster, Weight: 3}, {Cluster: canaryCluster, Weight: 1}},
						Timeout:  &timeout,
						Retry:    &ir.Retry{Attempts: 2, RetryOn: []string{"unavailable"}, BaseInterval: ir.Duration(10 * time.Millisecond)},
					},
					{Name: "default", Source: svcRef, Backends: []ir.Backend{{Cluster: cluster, Weight: 1}}},
				},
			}},
		}, {
			Source: ir.ObjectRef{Kind: "Service", Namespace: "shop", Name: "greeter-canary"}, Namespace: "shop", Name: "greeter-canary", Hostname: canaryHost,
			VIPs: []string{"10.96.0.2"}, MTLS: ir.MTLSStrict, Identities: []string{serverID},
			LoadBalancer: ir.LoadBalancer{Policy: ir.LBRingHash, HashOn: &ir.HashOn{Header: "x-user"}},
			Ports: []*ir.Port{{
				Name: "grpc", Port: port, Protocol: ir.ProtocolGRPC, Cluster: canaryCluster,
				Endpoints: []ir.Endpoint{{Address: "127.0.0.1", Port: port, Health: ir.HealthHealthy}},
			}},
		}, {
			Source: ir.ObjectRef{Kind: "Service", Namespace: "shop", Name: "impostor"}, Namespace: "shop", Name: "impostor", Hostname: "impostor.shop.svc.cluster.local",
			VIPs: []string{"10.96.0.3"}, MTLS: ir.MTLSStrict, Identities: []string{"spiffe://cluster.local/ns/shop/sa/impostor"},
			LoadBalancer: ir.LoadBalancer{Policy: ir.LBLeastRequest},
			Ports: []*ir.Port{{
				Name: "grpc", Port: port, Protocol: ir.ProtocolGRPC, Cluster: ir.ClusterName("impostor.shop.svc.cluster.local", port),
				Endpoints: []ir.Endpoint{{Address: "127.0.0.1", Port: port, Health: ir.HealthHealthy}},
			}},
		}},
		ProxyGroups: []*ir.ProxyGroup{
			{
				Key: "shop/greeter/0001", Namespace: "shop", ServiceAccount: "greeter", Identity: serverID, MTLS: ir.MTLSStrict,
				Inbound: []*ir.InboundPort{{Port: port, Protocol: ir.ProtocolGRPC, Services: []ir.ObjectRef{svcRef}, AccessPolicies: policies}},
				Members: []string{"greeter-1.shop"},
			},
			{
				Key: "web/web/0001", Namespace: "web", ServiceAccount: "web", Identity: webID, MTLS: ir.MTLSStrict,
				Members: []string{"web-1.web", "intruder-1.web"},
			},
		},
	}
}

func setSnapshot(t *testing.T, cache cachev3.SnapshotCache, node string, r *Resources) {
	t.Helper()
	snap, err := cachev3.NewSnapshot("1", r.ByType())
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.SetSnapshot(t.Context(), node, snap); err != nil {
		t.Fatal(err)
	}
}

type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	der  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	ca, err := xdstest.NewRoot("test mesh CA", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{key: ca.Key, cert: ca.Cert, der: ca.Cert.Raw}
}

// issue writes a workload certificate for a SPIFFE ID and returns the
// certificate and key file names.
func (ca *testCA) issue(t *testing.T, dir, id string) (string, string) {
	t.Helper()
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		URIs:         []*url.URL{u},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, serial.String())
	writePEM(t, base+".crt", "CERTIFICATE", der)
	writePEM(t, base+".key", "PRIVATE KEY", keyDER)
	return base + ".crt", base + ".key"
}

func writePEM(t *testing.T, name, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(name, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
