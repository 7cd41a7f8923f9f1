package proxyapi

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/encoding/protojson"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/internal/debugapi"
	"github.com/weft-mesh/weft/internal/xds/server"
)

// Source is what the handler reports on: the replica's xDS server.
type Source interface {
	Nodes() map[string]server.NodeStatus
	UpToDate(node string) bool
	Proxyless(node string) bool
	Config(node string) (map[string][]types.Resource, bool)
}

// Handler serves the debug.weft.dev API of one replica. A list gathers
// every replica's proxies; a get asks the other replicas when the proxy is
// not connected here.
type Handler struct {
	Source Source
	// Replica names this replica (its pod).
	Replica string
	// Auth lets in the API server's front proxy and the other replicas.
	Auth *Authenticator
	// Peers lists the other replicas; nil when there are none to ask.
	Peers func(ctx context.Context) ([]Peer, error)
	// PeerClient returns the HTTP client to call other replicas with.
	PeerClient func() (*http.Client, error)
	Log        logr.Logger
}

// Peer is another replica.
type Peer struct {
	Name string
	// URL is its base address, https://ip:port.
	URL string
}

const (
	prefix = "/apis/" + debugapi.Group + "/" + debugapi.Version
	// localParam asks a replica for its own proxies only: how replicas ask
	// each other.
	localParam  = "local"
	peerTimeout = 5 * time.Second
)

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeStatus(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "the debug API is read-only: get and list")
		return
	}
	user, err := h.Auth.Authenticate(r)
	if err != nil {
		h.Log.V(1).Info("refused a debug API request", "path", r.URL.Path, "reason", err.Error())
		writeStatus(w, http.StatusUnauthorized, "Unauthorized", err.Error())
		return
	}
	h.Log.V(1).Info("debug API request", "path", r.URL.Path, "user", user)
	local := r.URL.Query().Get(localParam) == "true"
	path := strings.TrimSuffix(r.URL.Path, "/")
	if path == "/apis/"+debugapi.Group {
		writeJSON(w, http.StatusOK, apiGroup())
		return
	}
	rest, ok := strings.CutPrefix(path, prefix)
	if !ok {
		writeStatus(w, http.StatusNotFound, "NotFound", "no such path: "+r.URL.Path)
		return
	}
	parts := strings.Split(strings.TrimPrefix(rest, "/"), "/")
	switch {
	case rest == "":
		writeJSON(w, http.StatusOK, resourceList())
	case len(parts) == 1 && parts[0] == debugapi.Resource:
		h.list(w, r, "", local)
	case len(parts) == 3 && parts[0] == "namespaces" && parts[2] == debugapi.Resource:
		h.list(w, r, parts[1], local)
	case len(parts) == 4 && parts[0] == "namespaces" && parts[2] == debugapi.Resource:
		h.get(w, r, parts[1], parts[3], "", local)
	case len(parts) == 5 && parts[0] == "namespaces" && parts[2] == debugapi.Resource && parts[4] == debugapi.ConfigSubresource:
		h.get(w, r, parts[1], parts[3], debugapi.ConfigSubresource, local)
	default:
		writeStatus(w, http.StatusNotFound, "NotFound", "no such path: "+r.URL.Path)
	}
}

func apiGroup() *metav1.APIGroup {
	gv := metav1.GroupVersionForDiscovery{GroupVersion: debugapi.GroupVersion, Version: debugapi.Version}
	return &metav1.APIGroup{
		TypeMeta:         metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"},
		Name:             debugapi.Group,
		Versions:         []metav1.GroupVersionForDiscovery{gv},
		PreferredVersion: gv,
	}
}

func resourceList() *metav1.APIResourceList {
	return &metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: debugapi.GroupVersion,
		APIResources: []metav1.APIResource{
			{Name: debugapi.Resource, SingularName: "proxy", Namespaced: true, Kind: "Proxy", Verbs: metav1.Verbs{"get", "list"}, Categories: []string{"weft"}},
			{Name: debugapi.Resource + "/" + debugapi.ConfigSubresource, Namespaced: true, Kind: "ProxyConfig", Verbs: metav1.Verbs{"get"}},
		},
	}
}

// localProxies are the proxies connected to this replica, in namespace ns
// (all when empty).
func (h *Handler) localProxies(ns string) []debugapi.Proxy {
	var out []debugapi.Proxy
	for node, st := range h.Source.Nodes() {
		if st.Streams == 0 {
			continue
		}
		pod, pns, ok := server.NodeIDParts(node)
		if !ok || (ns != "" && pns != ns) {
			continue
		}
		out = append(out, h.proxy(node, pod, pns, st))
	}
	return out
}

func (h *Handler) kind(node string, st server.NodeStatus) string {
	if h.Source.Proxyless(node) || strings.HasPrefix(strings.ToLower(st.Agent), "grpc") {
		return debugapi.KindProxyless
	}
	return debugapi.KindEnvoy
}

func (h *Handler) proxy(node, pod, ns string, st server.NodeStatus) debugapi.Proxy {
	p := debugapi.Proxy{
		TypeMeta:   metav1.TypeMeta{Kind: "Proxy", APIVersion: debugapi.GroupVersion},
		ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: ns, CreationTimestamp: metav1.NewTime(st.ConnectedAt)},
		Status: debugapi.ProxyStatus{
			Node:     node,
			Kind:     h.kind(node, st),
			Replica:  h.Replica,
			Agent:    st.Agent,
			Identity: st.Identity,
			Streams:  st.Streams,
			Synced:   h.Source.UpToDate(node),
		},
	}
	if !st.AckedAt.IsZero() {
		t := metav1.NewTime(st.AckedAt)
		p.Status.LastAck = &t
	}
	for typ := range st.Subscribed {
		p.Status.Resources = append(p.Status.Resources, debugapi.ResourceStatus{Type: ShortType(typ), Sent: st.Sent[typ], Acked: st.Acked[typ]})
	}
	slices.SortFunc(p.Status.Resources, func(a, b debugapi.ResourceStatus) int { return typeOrder(a.Type) - typeOrder(b.Type) })
	if n := st.Nack; n != nil {
		p.Status.Nack = &debugapi.Nack{Type: ShortType(n.TypeURL), Version: n.Version, Message: n.Message, Resources: n.Resources, At: metav1.NewTime(n.At)}
	}
	return p
}

// typeOrder puts types in the order Envoy needs them.
func typeOrder(t string) int {
	for i, o := range []string{"Listener", "RouteConfiguration", "Cluster", "ClusterLoadAssignment", "Secret"} {
		if o == t {
			return i
		}
	}
	return 99
}

// ShortType is a type URL's message name: Listener, Cluster, ...
func ShortType(typeURL string) string {
	if i := strings.LastIndexByte(typeURL, '.'); i >= 0 {
		return typeURL[i+1:]
	}
	return typeURL
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request, ns string, local bool) {
	items := h.localProxies(ns)
	list := &debugapi.ProxyList{
		TypeMeta: metav1.TypeMeta{Kind: "ProxyList", APIVersion: debugapi.GroupVersion},
		Replicas: []debugapi.Replica{{Name: h.Replica, Proxies: len(items)}},
	}
	if !local {
		for _, res := range h.askPeers(r.Context(), r.URL.Path) {
			rep := debugapi.Replica{Name: res.peer.Name}
			var pl debugapi.ProxyList
			if res.err == nil {
				res.err = decode(res, &pl)
			}
			if res.err != nil {
				rep.Error = res.err.Error()
			} else {
				rep.Proxies = len(pl.Items)
				items = append(items, pl.Items...)
			}
			list.Replicas = append(list.Replicas, rep)
		}
	}
	// A proxy that moved between replicas may still be listed by the one
	// it left; the newest stream is the one in use.
	slices.SortFunc(items, func(a, b debugapi.Proxy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), b.CreationTimestamp.Compare(a.CreationTimestamp.Time))
	})
	items = slices.CompactFunc(items, func(a, b debugapi.Proxy) bool { return a.Namespace == b.Namespace && a.Name == b.Name })
	list.Items = items
	if list.Items == nil {
		list.Items = []debugapi.Proxy{}
	}
	writeJSON(w, http.StatusOK, list)
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request, ns, name, sub string, local bool) {
	node := name + "." + ns
	if st, ok := h.Source.Nodes()[node]; ok && st.Streams > 0 {
		if sub == "" {
			writeJSON(w, http.StatusOK, h.proxy(node, name, ns, st))
			return
		}
		cfg, err := h.config(node, name, ns, st)
		if err != nil {
			writeStatus(w, http.StatusInternalServerError, "InternalError", err.Error())
			return
		}
		writeJSON(w, http.StatusOK, cfg)
		return
	}
	var unreachable []string
	if !local {
		for _, res := range h.askPeers(r.Context(), r.URL.Path) {
			switch {
			case res.err != nil:
				unreachable = append(unreachable, res.peer.Name+": "+res.err.Error())
			case res.code == http.StatusOK:
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write(res.body)
				return
			case res.code != http.StatusNotFound:
				unreachable = append(unreachable, fmt.Sprintf("%s: HTTP %d", res.peer.Name, res.code))
			}
		}
	}
	msg := fmt.Sprintf("proxy %s/%s %s", ns, name, debugapi.NotConnected)
	if len(unreachable) > 0 {
		msg += " (replicas that did not answer: " + strings.Join(unreachable, "; ") + ")"
	}
	writeStatus(w, http.StatusNotFound, "NotFound", msg)
}

func (h *Handler) config(node, name, ns string, st server.NodeStatus) (*debugapi.ProxyConfig, error) {
	cfg := &debugapi.ProxyConfig{
		TypeMeta:   metav1.TypeMeta{Kind: "ProxyConfig", APIVersion: debugapi.GroupVersion},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, CreationTimestamp: metav1.NewTime(st.ConnectedAt)},
		Node:       node,
		Kind:       h.kind(node, st),
		Replica:    h.Replica,
		Resources:  map[string]map[string]json.RawMessage{},
	}
	res, _ := h.Source.Config(node)
	for typ, rs := range res {
		m := map[string]json.RawMessage{}
		for _, r := range rs {
			b, err := protojson.Marshal(r)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", ShortType(typ), cachev3.GetResourceName(r), err)
			}
			m[cachev3.GetResourceName(r)] = b
		}
		cfg.Resources[ShortType(typ)] = m
	}
	return cfg, nil
}

type peerResult struct {
	peer Peer
	code int
	body []byte
	err  error
}

func decode(res peerResult, into any) error {
	if res.code != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", res.code, strings.TrimSpace(string(res.body)))
	}
	return json.Unmarshal(res.body, into)
}

// askPeers sends the same request to every other replica, for its own
// proxies only, and waits for all of them (each bounded by peerTimeout).
func (h *Handler) askPeers(ctx context.Context, path string) []peerResult {
	if h.Peers == nil {
		return nil
	}
	peers, err := h.Peers(ctx)
	if err != nil {
		return []peerResult{{peer: Peer{Name: "(other replicas)"}, err: fmt.Errorf("listing replicas: %w", err)}}
	}
	if len(peers) == 0 {
		return nil
	}
	hc, err := h.PeerClient()
	if err != nil {
		return []peerResult{{peer: Peer{Name: "(other replicas)"}, err: err}}
	}
	out := make([]peerResult, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Go(func() {
			out[i] = fetch(ctx, hc, p, path)
		})
	}
	wg.Wait()
	return out
}

func fetch(ctx context.Context, hc *http.Client, p Peer, path string) peerResult {
	res := peerResult{peer: p}
	ctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	u := p.URL + path + "?" + url.Values{localParam: {"true"}}.Encode()
	// The address is another replica's, from the Service's endpoints; the
	// path is the one the API server forwarded.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil) //nolint:gosec // see above
	if err != nil {
		res.err = err
		return res
	}
	resp, err := hc.Do(req) //nolint:gosec // see above
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	res.code = resp.StatusCode
	res.body, res.err = io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return res
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"encoding the response failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func writeStatus(w http.ResponseWriter, code int, reason, msg string) {
	writeJSON(w, code, &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Reason:   metav1.StatusReason(reason),
		Message:  msg,
		Code:     int32(code),
	})
}

var errNoCredentials = errors.New("no client certificate from the API server's front proxy or another controller replica")
