package publish

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ir"
	"github.com/weft-mesh/weft/internal/xds/server"
	"github.com/weft-mesh/weft/internal/xds/translate"
)

// resourceKey is one xDS resource: names are unique within a type only.
type resourceKey struct {
	typeURL, name string
}

// resourceSources maps the mesh-wide xDS resources (clusters and route
// configurations) to the objects a user would fix when a proxy refuses
// them. A proxy's own listeners are its group's (see Blame).
func resourceSources(m *ir.Mesh) map[resourceKey][]ir.ObjectRef {
	out := map[resourceKey][]ir.ObjectRef{}
	add := func(typeURL, name string, ref ir.ObjectRef) {
		if !reportable(ref) {
			return
		}
		k := resourceKey{typeURL, name}
		if !slices.Contains(out[k], ref) {
			out[k] = append(out[k], ref)
		}
	}
	for _, s := range m.Services {
		for _, p := range s.Ports {
			if p.CircuitBreaker != nil {
				add(resourcev3.ClusterType, p.Cluster, p.CircuitBreaker.Source)
			}
			if p.RetryBudget != nil {
				add(resourcev3.ClusterType, p.Cluster, p.RetryBudget.Source)
			}
			routes := func(name string, rs []*ir.Route) {
				for _, rt := range rs {
					add(resourcev3.RouteType, name, rt.Source)
					if rt.Retry != nil {
						add(resourcev3.RouteType, name, rt.Retry.Source)
					}
					if rt.Fault != nil {
						add(resourcev3.RouteType, name, rt.Fault.Source)
					}
				}
			}
			routes(ir.RouteConfigName(s.Hostname, p.Port), p.Routes)
			for _, c := range p.ConsumerRoutes {
				routes(translate.ConsumerRouteConfigName(s.Hostname, p.Port, c.Namespace), c.Routes)
			}
		}
	}
	return out
}

// reportable says whether Weft reports status on the object: its own
// policies and the Gateway API routes.
func reportable(ref ir.ObjectRef) bool {
	return ref.Group == meshv1alpha1.GroupVersion.Group || ref.Kind == "HTTPRoute" || ref.Kind == "GRPCRoute"
}

// Blame lists the objects behind the resources a node refused, by the
// exact names of the resources in the rejected response: a refused
// cluster or route configuration is the policies and routes that shaped
// it; a refused listener of the node's own is its group's access
// policies. Nil means no object is known to be at fault.
func (p *Published) Blame(node string, nack server.Nack) []ir.ObjectRef {
	var out []ir.ObjectRef
	add := func(refs ...ir.ObjectRef) {
		for _, r := range refs {
			if reportable(r) && !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
	}
	for _, name := range nack.Resources {
		if nack.TypeURL == resourcev3.ListenerType && name != translate.OutboundListener {
			if g := p.Nodes[node]; g != nil {
				for _, in := range g.Inbound {
					if in == nil {
						continue
					}
					for _, ap := range in.AccessPolicies {
						add(ap.Source)
					}
					if in.RateLimit != nil {
						add(in.RateLimit.Source)
					}
				}
			}
			continue
		}
		add(p.sources()[resourceKey{nack.TypeURL, name}]...)
	}
	slices.SortFunc(out, func(a, b ir.ObjectRef) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// Proxies is what Programmed needs to know of the xDS server.
type Proxies interface {
	// Connected says whether a node has an open stream.
	Connected(node string) bool
	// UpToDate says whether a node acknowledged its current configuration.
	UpToDate(node string) bool
	// Nacks are the outstanding rejections by node.
	Nacks() map[string]server.Nack
}

// Programmed works out the Programmed condition of every policy and
// route of the ingest result: True once every connected proxy that has configuration
// acknowledged its current one; False with the proxy's error when one
// refused resources the policy shaped (or, when no object is known to be
// at fault, on every policy); False and Pending while some have not
// answered.
//
// prev are the conditions of the last call. An object already Programmed
// at its current generation stays so, with the same message, while later
// changes of other objects propagate: a push of one route does not take
// every other object back to Pending, and a status is written only when
// an object's own state changes (not at every ACK of a push).
func (p *Published) Programmed(px Proxies, prev map[ir.ObjectRef]metav1.Condition) map[ir.ObjectRef]metav1.Condition {
	nacks := px.Nacks()
	connected, pending := 0, 0
	rejected := map[ir.ObjectRef]string{}
	var unattributed string
	for _, node := range slices.Sorted(maps.Keys(p.Nodes)) {
		if !px.Connected(node) {
			continue
		}
		connected++
		if !px.UpToDate(node) {
			pending++
		}
		nack, ok := nacks[node]
		if !ok {
			continue
		}
		msg := fmt.Sprintf("proxy %s rejected its configuration: %s", node, nack.Message)
		blamed := p.Blame(node, nack)
		for _, ref := range blamed {
			if _, seen := rejected[ref]; !seen {
				rejected[ref] = msg
			}
		}
		if len(blamed) == 0 && unattributed == "" {
			unattributed = msg
		}
	}
	out := make(map[ir.ObjectRef]metav1.Condition, len(p.Result.Statuses)+len(p.Result.Routes))
	set := func(ref ir.ObjectRef, gen int64, waiting metav1.ConditionStatus) {
		c := metav1.Condition{Type: meshv1alpha1.ConditionProgrammed, ObservedGeneration: gen}
		msg, isRejected := rejected[ref]
		if !isRejected && unattributed != "" {
			msg, isRejected = unattributed, true
		}
		was, had := prev[ref]
		switch {
		case isRejected:
			c.Status, c.Reason, c.Message = metav1.ConditionFalse, meshv1alpha1.ReasonRejected, msg
		case had && was.Status == metav1.ConditionTrue && was.ObservedGeneration == gen:
			c = was
		case pending > 0:
			// No counts in the message: it would change, and be written,
			// at every ACK of a push.
			c.Status, c.Reason, c.Message = waiting, meshv1alpha1.ReasonPending, "waiting for the connected proxies to acknowledge the current configuration"
		default:
			c.Status, c.Reason, c.Message = metav1.ConditionTrue, meshv1alpha1.ReasonProgrammed, fmt.Sprintf("every connected proxy (%d) runs the current configuration", connected)
		}
		out[ref] = c
	}
	for _, s := range p.Result.Statuses {
		set(s.Ref, s.Generation, metav1.ConditionFalse)
	}
	// A route's Programmed is Unknown while the push is under way, as the
	// Gateway API has it for a Gateway's (reason Pending).
	for _, rs := range p.Result.Routes {
		set(rs.Ref, rs.Generation, metav1.ConditionUnknown)
	}
	return out
}
