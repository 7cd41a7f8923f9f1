package cli

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/internal/ingest"
	"github.com/weft-mesh/weft/internal/ir"
	"github.com/weft-mesh/weft/internal/workload"
	"github.com/weft-mesh/weft/internal/xds/translate"
)

// Rendered is the configuration one workload's proxy would receive.
type Rendered struct {
	// Node is the node ID the proxy would connect as.
	Node string
	// Proxyless is true for a gRPC application without a sidecar.
	Proxyless bool
	Resources *translate.Resources
}

// Render works out what the proxy of a pod (pod: "namespace/name") or of a
// workload's pods (workload: "namespace/Kind/name", from the pod template)
// would be sent.
func Render(m *Manifests, pod, wl string, opts translate.Options) (*Rendered, error) {
	var ref string
	switch {
	case pod != "" && wl != "":
		return nil, fmt.Errorf("give --pod or --workload, not both")
	case pod != "":
		if !strings.Contains(pod, "/") {
			return nil, fmt.Errorf("--pod=%q: want NAMESPACE/NAME", pod)
		}
		if m.pod(pod) == nil {
			return nil, fmt.Errorf("--pod=%s: no such Pod in the manifests", pod)
		}
		ref = pod
	case wl != "":
		if _, err := m.podOf(wl); err != nil {
			return nil, err
		}
		ref = wl
	default:
		return nil, fmt.Errorf("render needs --pod NAMESPACE/NAME or --workload NAMESPACE/KIND/NAME")
	}
	out, err := m.renderAll([]string{ref}, opts)
	if err != nil {
		return nil, err
	}
	return out[ref], nil
}

// renderAll renders the proxies of several pods ("namespace/name") and
// workloads ("namespace/Kind/name") from one run of ingest and
// translation, with the workloads' pods added to a copy of the bundle.
// A ref that is not in the mesh is an error.
func (m *Manifests) renderAll(refs []string, opts translate.Options) (map[string]*Rendered, error) {
	bundle := m.Bundle
	bundle.Pods = slices.Clone(m.Bundle.Pods)
	targets := map[string]*corev1.Pod{}
	for _, ref := range refs {
		if strings.Count(ref, "/") == 2 {
			p, err := m.podOf(ref)
			if err != nil {
				return nil, err
			}
			bundle.Pods = append(bundle.Pods, p)
			targets[ref] = p
		} else if p := m.pod(ref); p != nil {
			targets[ref] = p
		} else {
			return nil, fmt.Errorf("%s: no such Pod in the manifests", ref)
		}
	}
	res := ingest.Build(&bundle)
	prep, err := translate.Prepare(res.Mesh, opts)
	if err != nil {
		return nil, err
	}
	groups := map[string]*ir.ProxyGroup{}
	for _, g := range res.Mesh.ProxyGroups {
		for _, n := range g.Members {
			groups[n] = g
		}
	}
	endpoints := map[string]types.Resource{}
	for _, e := range translate.Endpoints(res.Mesh) {
		endpoints[cachev3.GetResourceName(e)] = e
	}
	out := map[string]*Rendered{}
	for _, ref := range refs {
		target := targets[ref]
		w := workload.Of(target, m.namespaceLabels(target.Namespace))
		if !w.Meshed {
			return nil, fmt.Errorf("%s/%s is not in the mesh (%s): label its namespace weft.dev/inject=enabled or annotate it weft.dev/inject=true", target.Namespace, target.Name, w.Reason)
		}
		g := groups[w.NodeID]
		if g == nil {
			return nil, fmt.Errorf("%s is meshed but in no proxy group", w.NodeID)
		}
		r := &Rendered{Node: w.NodeID, Proxyless: w.Mode == workload.ModeProxyless}
		var cfg *translate.Config
		if r.Proxyless {
			cfg, err = prep.ForGRPC(g)
		} else {
			cfg, err = prep.ForGroup(g)
		}
		if err != nil {
			return nil, err
		}
		r.Resources = cfg.Resources()
		// The endpoints of the clusters the proxy has.
		for _, c := range r.Resources.Clusters {
			if e, ok := endpoints[cachev3.GetResourceName(c)]; ok {
				r.Resources.Endpoints = append(r.Resources.Endpoints, e)
			}
		}
		out[ref] = r
	}
	return out, nil
}

// pod is the Pod "namespace/name" of the manifests, or nil.
func (m *Manifests) pod(ref string) *corev1.Pod {
	ns, name, _ := strings.Cut(ref, "/")
	for _, p := range m.Bundle.Pods {
		if p.Namespace == ns && p.Name == name {
			return p
		}
	}
	return nil
}

// namespaceLabels are the labels of a Namespace of the manifests.
func (m *Manifests) namespaceLabels(name string) map[string]string {
	for _, ns := range m.Bundle.Namespaces {
		if ns.Name == name {
			return ns.Labels
		}
	}
	return nil
}

// podOf makes the pod a workload's template describes.
func (m *Manifests) podOf(ref string) (*corev1.Pod, error) {
	parts := strings.Split(ref, "/")
	if len(parts) != 3 {
		return nil, fmt.Errorf("--workload=%q: want NAMESPACE/KIND/NAME, e.g. shop/Deployment/web", ref)
	}
	for _, u := range m.Workloads {
		ns := u.GetNamespace()
		if ns == "" {
			ns = "default"
		}
		if ns != parts[0] || !strings.EqualFold(u.GetKind(), parts[1]) || u.GetName() != parts[2] {
			continue
		}
		tmpl, ok := u.Object["spec"].(map[string]any)["template"].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s has no pod template", ref)
		}
		p := &corev1.Pod{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(tmpl, p); err != nil {
			return nil, fmt.Errorf("%s: pod template: %w", ref, err)
		}
		p.Namespace, p.Name = ns, u.GetName()+"-0"
		p.Status.Phase = corev1.PodRunning
		return p, nil
	}
	return nil, fmt.Errorf("--workload=%s: no such workload in the manifests", ref)
}

// YAML is every resource as Envoy's JSON form, by type.
func (r *Rendered) YAML() ([]byte, error) {
	doc := map[string]any{"node": r.Node, "proxyless": r.Proxyless}
	for name, list := range map[string][]types.Resource{
		"listeners": r.Resources.Listeners, "routes": r.Resources.Routes, "clusters": r.Resources.Clusters,
		"endpoints": r.Resources.Endpoints,
	} {
		var items []any
		for _, res := range list {
			b, err := protojson.Marshal(res)
			if err != nil {
				return nil, err
			}
			var v any
			if err := yaml.Unmarshal(b, &v); err != nil {
				return nil, err
			}
			items = append(items, v)
		}
		doc[name] = items
	}
	return yaml.Marshal(doc)
}

// Summary is the configuration as a person reads it: outbound routes with
// their weights, timeouts and retries, clusters with their limits and
// outlier detection, and endpoints.
func (r *Rendered) Summary() string {
	var b strings.Builder
	kind := "Envoy sidecar"
	if r.Proxyless {
		kind = "proxyless gRPC"
	}
	fmt.Fprintf(&b, "%s (%s)\n", r.Node, kind)
	fmt.Fprintf(&b, "\nListeners:\n")
	for _, res := range r.Resources.Listeners {
		l := res.(*listenerv3.Listener)
		fmt.Fprintf(&b, "  %s\n", l.GetName())
	}
	fmt.Fprintf(&b, "\nRoutes:\n")
	for _, rc := range r.routeConfigs() {
		fmt.Fprintf(&b, "  %s\n", rc.GetName())
		// An inbound route configuration has a virtual host per Service
		// its requests may be addressed to.
		multi := len(rc.GetVirtualHosts()) > 1
		for _, vh := range rc.GetVirtualHosts() {
			indent := "    "
			if multi {
				if len(vh.GetDomains()) == 1 && vh.GetDomains()[0] == "*" {
					fmt.Fprintf(&b, "    any other host\n")
				} else {
					fmt.Fprintf(&b, "    host %s\n", vh.GetName())
				}
				indent = "      "
			}
			for _, rt := range vh.GetRoutes() {
				if rt.GetName() == translate.WarmRouteName {
					continue
				}
				fmt.Fprintf(&b, "%s%s → %s\n", indent, match(rt.GetMatch()), action(rt))
			}
		}
	}
	fmt.Fprintf(&b, "\nClusters:\n")
	for _, res := range r.Resources.Clusters {
		c := res.(*clusterv3.Cluster)
		fmt.Fprintf(&b, "  %s%s\n", c.GetName(), limits(c))
	}
	if len(r.Resources.Endpoints) > 0 {
		fmt.Fprintf(&b, "\nEndpoints:\n")
		for _, res := range r.Resources.Endpoints {
			e := res.(*endpointv3.ClusterLoadAssignment)
			var addrs []string
			for _, le := range e.GetEndpoints() {
				for _, lb := range le.GetLbEndpoints() {
					sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
					addrs = append(addrs, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
				}
			}
			sort.Strings(addrs)
			if len(addrs) == 0 {
				addrs = []string{"(none ready)"}
			}
			fmt.Fprintf(&b, "  %s: %s\n", e.GetClusterName(), strings.Join(addrs, ", "))
		}
	}
	return b.String()
}

// routeConfigs are the route configurations sent by RDS and those carried
// inline by listeners (a proxyless client's API listeners), by name, each
// once.
func (r *Rendered) routeConfigs() []*routev3.RouteConfiguration {
	var out []*routev3.RouteConfiguration
	for _, res := range r.Resources.Routes {
		out = append(out, res.(*routev3.RouteConfiguration))
	}
	for _, res := range r.Resources.Listeners {
		var hcm hcmv3.HttpConnectionManager
		api := res.(*listenerv3.Listener).GetApiListener().GetApiListener()
		if api == nil || api.UnmarshalTo(&hcm) != nil {
			continue
		}
		if rc := hcm.GetRouteConfig(); rc != nil {
			out = append(out, rc)
		}
	}
	slices.SortStableFunc(out, func(a, b *routev3.RouteConfiguration) int { return strings.Compare(a.GetName(), b.GetName()) })
	// A proxyless client has one listener per name a Service is dialled
	// by, each carrying the same route configuration.
	return slices.CompactFunc(out, func(a, b *routev3.RouteConfiguration) bool { return proto.Equal(a, b) })
}

func match(m *routev3.RouteMatch) string {
	var parts []string
	switch {
	case m.GetPath() != "":
		parts = append(parts, "path "+m.GetPath())
	case m.GetSafeRegex() != nil:
		parts = append(parts, "path ~ "+m.GetSafeRegex().GetRegex())
	case m.GetPathSeparatedPrefix() != "":
		parts = append(parts, "prefix "+m.GetPathSeparatedPrefix())
	default:
		parts = append(parts, "prefix "+m.GetPrefix())
	}
	for _, h := range m.GetHeaders() {
		parts = append(parts, "header "+h.GetName())
	}
	return strings.Join(parts, ", ")
}

func action(rt *routev3.Route) string {
	if dr := rt.GetDirectResponse(); dr != nil {
		return fmt.Sprintf("respond %d", dr.GetStatus())
	}
	if rd := rt.GetRedirect(); rd != nil {
		return "redirect"
	}
	ra := rt.GetRoute()
	if ra == nil {
		return "(no action)"
	}
	var parts []string
	if c := ra.GetCluster(); c != "" {
		parts = append(parts, c)
	}
	if wc := ra.GetWeightedClusters(); wc != nil {
		var ws []string
		for _, c := range wc.GetClusters() {
			ws = append(ws, fmt.Sprintf("%s %d", c.GetName(), c.GetWeight().GetValue()))
		}
		parts = append(parts, "weights "+strings.Join(ws, ", "))
	}
	if t := ra.GetTimeout(); t != nil && t.AsDuration() > 0 {
		parts = append(parts, "timeout "+t.AsDuration().String())
	}
	if rp := ra.GetRetryPolicy(); rp != nil {
		s := fmt.Sprintf("retries %d on %s", rp.GetNumRetries().GetValue(), rp.GetRetryOn())
		if pt := rp.GetPerTryTimeout(); pt != nil {
			s += ", per try " + pt.AsDuration().String()
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func limits(c *clusterv3.Cluster) string {
	var parts []string
	for _, t := range c.GetCircuitBreakers().GetThresholds() {
		parts = append(parts, fmt.Sprintf("max connections %d, pending %d, requests %d, retries %d",
			t.GetMaxConnections().GetValue(), t.GetMaxPendingRequests().GetValue(), t.GetMaxRequests().GetValue(), t.GetMaxRetries().GetValue()))
	}
	if od := c.GetOutlierDetection(); od != nil {
		s := "outlier detection"
		if v := od.GetConsecutive_5Xx(); v != nil {
			s += fmt.Sprintf(": %d consecutive 5xx", v.GetValue())
		}
		if v := od.GetBaseEjectionTime(); v != nil {
			s += ", ejected " + v.AsDuration().String()
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, "; ") + ")"
}
