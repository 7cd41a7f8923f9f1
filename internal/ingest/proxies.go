package ingest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/weft-mesh/weft/internal/ir"
	"github.com/weft-mesh/weft/internal/workload"
)

// buildProxyGroups groups meshed pods by what their configuration depends
// on: namespace, service account, and the inbound ports with their
// Services and policies. Pods of one Deployment land in one group.
func (s *state) buildProxyGroups() []*ir.ProxyGroup {
	// Index Services by one pair of their selector, so a pod is matched
	// only against Services that share a label with it.
	type candidate struct {
		st  *service
		sel labels.Selector
	}
	index := map[string][]candidate{} // namespace + "\x00" + k=v
	for _, key := range sortedKeys(s.services) {
		st := s.services[key]
		if len(st.obj.Spec.Selector) == 0 {
			continue
		}
		first := sortedKeys(st.obj.Spec.Selector)[0]
		k := st.obj.Namespace + "\x00" + first + "=" + st.obj.Spec.Selector[first]
		index[k] = append(index[k], candidate{st: st, sel: labels.SelectorFromSet(st.obj.Spec.Selector)})
	}
	groups := map[string]*ir.ProxyGroup{}
	for _, pod := range s.b.Pods {
		var nsLabels map[string]string
		if ns := s.namespaces[pod.Namespace]; ns != nil {
			nsLabels = ns.Labels
		}
		w := workload.Of(pod, nsLabels)
		if !w.Meshed {
			continue
		}
		sa := w.ServiceAccount
		var matched []*service
		podLabels := labels.Set(pod.Labels)
		for _, k := range sortedKeys(pod.Labels) {
			for _, c := range index[pod.Namespace+"\x00"+k+"="+pod.Labels[k]] {
				if c.sel.Matches(podLabels) {
					matched = append(matched, c.st)
				}
			}
		}
		inbound := s.inboundPorts(pod, matched)
		key := groupKey(pod.Namespace, sa, inbound)
		g := groups[key]
		if g == nil {
			g = &ir.ProxyGroup{Key: key, Namespace: pod.Namespace, ServiceAccount: sa, MTLS: s.mtls(pod.Namespace), Inbound: inbound}
			if td := s.meshNS[pod.Namespace]; td != nil && td.TrustDomain != "" {
				g.Identity = w.SpiffeID(td.TrustDomain)
			}
			groups[key] = g
		}
		g.Members = append(g.Members, w.NodeID)
	}
	out := make([]*ir.ProxyGroup, 0, len(groups))
	for _, key := range sortedKeys(groups) {
		g := groups[key]
		slices.Sort(g.Members)
		g.Members = slices.Compact(g.Members)
		out = append(out, g)
	}
	return out
}

func (s *state) inboundPorts(pod *corev1.Pod, candidates []*service) []*ir.InboundPort {
	byPort := map[int32]*ir.InboundPort{}
	slices.SortFunc(candidates, func(a, b *service) int { return strings.Compare(a.ir.Key(), b.ir.Key()) })
	for _, st := range candidates {
		for _, p := range st.ir.Ports {
			sp, _ := st.specPort(p.Port)
			target := containerPort(pod, sp)
			if target == 0 {
				continue
			}
			in := byPort[target]
			if in == nil {
				in = &ir.InboundPort{Port: target, Protocol: p.Protocol}
				byPort[target] = in
			} else if in.Protocol != p.Protocol {
				// Two Services disagree about the protocol: forward bytes.
				in.Protocol = ir.ProtocolTCP
			}
			if !slices.Contains(in.Services, st.ir.Source) {
				in.Services = append(in.Services, st.ir.Source)
			}
			for _, ap := range st.ir.AccessPolicies {
				if !slices.Contains(in.AccessPolicies, ap) {
					in.AccessPolicies = append(in.AccessPolicies, ap)
				}
			}
			if in.RateLimit == nil {
				in.RateLimit = st.rateLimit
			}
		}
	}
	out := make([]*ir.InboundPort, 0, len(byPort))
	for _, port := range sortedKeys(byPort) {
		in := byPort[port]
		slices.SortFunc(in.Services, compareRefs)
		sortAccessPolicies(in.AccessPolicies)
		out = append(out, in)
	}
	return out
}

// containerPort resolves a Service port's targetPort against a pod.
func containerPort(pod *corev1.Pod, sp corev1.ServicePort) int32 {
	if v := sp.TargetPort.IntValue(); v > 0 {
		return int32(v)
	}
	name := sp.TargetPort.StrVal
	if name == "" {
		return sp.Port
	}
	for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
		for _, cp := range c.Ports {
			if cp.Name == name && (cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP) {
				return cp.ContainerPort
			}
		}
	}
	return 0
}

// groupKey names a proxy group by namespace, service account and a digest
// of its inbound configuration.
func groupKey(ns, sa string, inbound []*ir.InboundPort) string {
	var b strings.Builder
	for _, in := range inbound {
		fmt.Fprintf(&b, "%d/%s;", in.Port, in.Protocol)
		for _, svc := range in.Services {
			fmt.Fprintf(&b, "s=%s;", svc)
		}
		for _, ap := range in.AccessPolicies {
			fmt.Fprintf(&b, "a=%s;", ap.Source)
		}
	}
	sum := sha256.Sum256([]byte(b.String()))
	return ns + "/" + sa + "/" + hex.EncodeToString(sum[:6])
}
