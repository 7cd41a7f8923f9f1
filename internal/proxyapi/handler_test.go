package proxyapi_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	"github.com/weft-mesh/weft/internal/debugapi"
	"github.com/weft-mesh/weft/internal/proxyapi"
	"github.com/weft-mesh/weft/internal/xds/server"
	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

const clusterType = "type.googleapis.com/envoy.config.cluster.v3.Cluster"

// fakeSource is one replica's xDS server as the handler sees it.
type fakeSource struct {
	nodes map[string]server.NodeStatus
	cfg   map[string]map[string][]types.Resource
}

func (f *fakeSource) Nodes() map[string]server.NodeStatus { return f.nodes }
func (f *fakeSource) UpToDate(node string) bool {
	n := f.nodes[node]
	return n.Acked[clusterType] == n.Sent[clusterType]
}
func (f *fakeSource) Proxyless(string) bool { return false }
func (f *fakeSource) Config(node string) (map[string][]types.Resource, bool) {
	c, ok := f.cfg[node]
	return c, ok
}

// tlsPair is a client certificate from ca with a common name.
func tlsPair(t *testing.T, ca *xdstest.CA, commonName string) tls.Certificate {
	t.Helper()
	c, k, err := ca.IssueName(commonName)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

func newCA(t *testing.T, name string) *xdstest.CA {
	t.Helper()
	ca, err := xdstest.NewRoot(name, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// replica is one controller replica's proxy API on loopback.
type replica struct {
	srv *httptest.Server
	h   *proxyapi.Handler
}

// fixture is two replicas sharing one serving certificate, as the pods of
// the Deployment mount one Secret, and the API server's front proxy.
type fixture struct {
	a, b       *replica
	frontProxy tls.Certificate
	stranger   tls.Certificate
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	servingCA := newCA(t, "webhook CA")
	serving, servingKey, err := servingCA.IssueName("weft-webhook", "weft-webhook.weft-system.svc")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, b := range map[string][]byte{"tls.crt": serving, "tls.key": servingKey, "ca.crt": servingCA.PEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	frontCA := newCA(t, "front-proxy CA")
	f := &fixture{
		frontProxy: tlsPair(t, frontCA, "front-proxy-client"),
		stranger:   tlsPair(t, newCA(t, "someone else's CA"), "front-proxy-client"),
	}
	rh, err := proxyapi.ParseRequestHeader(&corev1.ConfigMap{Data: map[string]string{
		"requestheader-client-ca-file":   string(frontCA.PEM),
		"requestheader-allowed-names":    `["front-proxy-client"]`,
		"requestheader-username-headers": `["X-Remote-User"]`,
	}})
	if err != nil {
		t.Fatal(err)
	}
	newReplica := func(name string, src *fakeSource) *replica {
		certs := &proxyapi.ServingCerts{Dir: dir}
		h := &proxyapi.Handler{
			Source:     src,
			Replica:    name,
			Auth:       &proxyapi.Authenticator{FrontProxy: func(context.Context) (*proxyapi.RequestHeader, error) { return rh, nil }, Certs: certs},
			PeerClient: certs.PeerClient,
			Log:        logr.Discard(),
		}
		srv := httptest.NewUnstartedServer(h)
		srv.TLS = certs.TLSConfig()
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return &replica{srv: srv, h: h}
	}
	now := time.Now()
	f.a = newReplica("weft-controller-a", &fakeSource{nodes: map[string]server.NodeStatus{
		"web-0.front":  {Streams: 1, ConnectedAt: now, Agent: "envoy/1.37.0", Subscribed: map[string]bool{clusterType: true}, Sent: map[string]string{clusterType: "7"}, Acked: map[string]string{clusterType: "7"}},
		"gone-0.front": {Streams: 0},
	}, cfg: map[string]map[string][]types.Resource{"web-0.front": {clusterType: {&clusterv3.Cluster{Name: "outbound|8080||checkout.shop.svc.cluster.local"}}}}})
	f.b = newReplica("weft-controller-b", &fakeSource{nodes: map[string]server.NodeStatus{
		"api-0.shop": {
			Streams: 1, ConnectedAt: now, Agent: "envoy/1.37.0",
			Subscribed: map[string]bool{clusterType: true}, Sent: map[string]string{clusterType: "9"}, Acked: map[string]string{clusterType: "8"},
			Nack: &server.Nack{TypeURL: clusterType, Version: "9", Message: "invalid regex", Resources: []string{"outbound|8080||bad"}, At: now},
		},
	}, cfg: map[string]map[string][]types.Resource{"api-0.shop": {clusterType: {&clusterv3.Cluster{Name: "outbound|8080||bad"}}}}})
	f.a.h.Peers = peersOf(f.b)
	f.b.h.Peers = peersOf(f.a)
	return f
}

func peersOf(rs ...*replica) func(context.Context) ([]proxyapi.Peer, error) {
	return func(context.Context) ([]proxyapi.Peer, error) {
		var out []proxyapi.Peer
		for _, r := range rs {
			out = append(out, proxyapi.Peer{Name: r.h.Replica, URL: r.srv.URL})
		}
		return out, nil
	}
}

// get calls a replica as the API server's front proxy does (or with
// another client certificate, or none), for user alice.
func get(t *testing.T, r *replica, path string, client *tls.Certificate) (int, []byte) {
	t.Helper()
	cfg := &tls.Config{InsecureSkipVerify: true}
	if client != nil {
		cfg.Certificates = []tls.Certificate{*client}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, r.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Remote-User", "alice")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf strings.Builder
	if _, err := io.Copy(&buf, resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, []byte(buf.String())
}

const base = "/apis/debug.weft.dev/v1alpha1"

func TestOnlyTheFrontProxyAndReplicasGetIn(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		name   string
		client *tls.Certificate
		want   int
	}{
		{"no client certificate", nil, http.StatusUnauthorized},
		{"a certificate the front proxy CA did not sign", &f.stranger, http.StatusUnauthorized},
		{"the front proxy", &f.frontProxy, http.StatusOK},
	} {
		code, body := get(t, f.a, base+"/proxies", c.client)
		if code != c.want {
			t.Errorf("%s: HTTP %d, want %d: %s", c.name, code, c.want, body)
		}
	}
	code, body := get(t, f.a, base, &f.frontProxy)
	if code != http.StatusOK || !strings.Contains(string(body), `"name":"proxies"`) || !strings.Contains(string(body), `"name":"proxies/config"`) {
		t.Errorf("discovery: HTTP %d %s", code, body)
	}
	if code, body := get(t, f.a, base+"/namespaces/front/proxies", nil); code != http.StatusUnauthorized || !strings.Contains(string(body), `"kind":"Status"`) {
		t.Errorf("without credentials: HTTP %d %s, want a 401 Status", code, body)
	}
}

func TestListGathersEveryReplica(t *testing.T) {
	f := newFixture(t)
	for _, r := range []*replica{f.a, f.b} {
		code, body := get(t, r, base+"/proxies", &f.frontProxy)
		if code != http.StatusOK {
			t.Fatalf("HTTP %d %s", code, body)
		}
		var l debugapi.ProxyList
		if err := json.Unmarshal(body, &l); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range l.Items {
			got = append(got, p.Namespace+"/"+p.Name+"@"+p.Status.Replica)
		}
		if want := "front/web-0@weft-controller-a shop/api-0@weft-controller-b"; strings.Join(got, " ") != want {
			t.Errorf("asked %s: proxies %v, want %s (disconnected ones left out)", r.h.Replica, got, want)
		}
		if len(l.Replicas) != 2 || l.Replicas[0].Error != "" || l.Replicas[1].Error != "" {
			t.Errorf("asked %s: replicas %+v", r.h.Replica, l.Replicas)
		}
		api := l.Items[1].Status
		if api.Synced || api.Nack == nil || api.Nack.Message != "invalid regex" || api.Nack.Type != "Cluster" || len(api.Resources) != 1 || api.Resources[0].Sent != "9" || api.Resources[0].Acked != "8" {
			t.Errorf("asked %s: api-0 status %+v, want unsynced with its NACK", r.h.Replica, api)
		}
		if !l.Items[0].Status.Synced {
			t.Errorf("web-0 is not synced: %+v", l.Items[0].Status)
		}
	}
	code, body := get(t, f.a, base+"/namespaces/shop/proxies", &f.frontProxy)
	if code != http.StatusOK || strings.Contains(string(body), "web-0") || !strings.Contains(string(body), "api-0") {
		t.Errorf("namespace shop: HTTP %d %s", code, body)
	}
}

func TestGetFindsTheReplicaAProxyIsConnectedTo(t *testing.T) {
	f := newFixture(t)
	code, body := get(t, f.a, base+"/namespaces/shop/proxies/api-0", &f.frontProxy)
	var p debugapi.Proxy
	if err := json.Unmarshal(body, &p); code != http.StatusOK || err != nil || p.Status.Replica != "weft-controller-b" || p.Status.Node != "api-0.shop" {
		t.Errorf("HTTP %d %s", code, body)
	}
	code, body = get(t, f.a, base+"/namespaces/shop/proxies/api-0/config", &f.frontProxy)
	var cfg debugapi.ProxyConfig
	if err := json.Unmarshal(body, &cfg); code != http.StatusOK || err != nil {
		t.Fatalf("HTTP %d %s", code, body)
	}
	if _, ok := cfg.Resources["Cluster"]["outbound|8080||bad"]; !ok || cfg.Replica != "weft-controller-b" {
		t.Errorf("config %s", body)
	}
	code, body = get(t, f.a, base+"/namespaces/front/proxies/gone-0", &f.frontProxy)
	if code != http.StatusNotFound || !strings.Contains(string(body), "proxy front/gone-0 is not connected to the control plane") {
		t.Errorf("disconnected proxy: HTTP %d %s", code, body)
	}
}

func TestAReplicaThatDoesNotAnswerIsReported(t *testing.T) {
	f := newFixture(t)
	f.b.srv.Close()
	code, body := get(t, f.a, base+"/proxies", &f.frontProxy)
	var l debugapi.ProxyList
	if err := json.Unmarshal(body, &l); code != http.StatusOK || err != nil {
		t.Fatalf("HTTP %d %s", code, body)
	}
	if len(l.Items) != 1 || len(l.Replicas) != 2 || l.Replicas[1].Name != "weft-controller-b" || l.Replicas[1].Error == "" {
		t.Errorf("list with a replica down: %s", body)
	}
	code, body = get(t, f.a, base+"/namespaces/shop/proxies/api-0", &f.frontProxy)
	if code != http.StatusNotFound || !strings.Contains(string(body), "replicas that did not answer: weft-controller-b") {
		t.Errorf("get with a replica down: HTTP %d %s", code, body)
	}
}
