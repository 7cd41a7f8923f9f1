package cli

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weft-mesh/weft/internal/workload"
	"github.com/weft-mesh/weft/internal/xds/translate"
)

// Change is one difference in what a workload's proxy is sent.
type Change struct {
	// Workload is "namespace/Kind/name" or, for a Pod, "namespace/name".
	Workload string `json:"workload"`
	// What is the route (route configuration and match) or cluster.
	What   string `json:"what"`
	Before string `json:"before,omitempty"`
	After  string `json:"after,omitempty"`
}

func (c Change) String() string {
	switch {
	case c.Before == "":
		return fmt.Sprintf("%s → %s: added: %s", c.Workload, c.What, c.After)
	case c.After == "":
		return fmt.Sprintf("%s → %s: removed (was %s)", c.Workload, c.What, c.Before)
	}
	return fmt.Sprintf("%s → %s: %s → %s", c.Workload, c.What, c.Before, c.After)
}

// Diff renders every meshed workload and pod of both manifest sets and
// lists what changes in their routes (weights, timeouts, retries, where a
// match sends) and clusters (limits, outlier detection).
func Diff(base, head *Manifests, opts translate.Options) ([]Change, error) {
	before, err := base.allFacts(opts)
	if err != nil {
		return nil, fmt.Errorf("base: %w", err)
	}
	after, err := head.allFacts(opts)
	if err != nil {
		return nil, fmt.Errorf("head: %w", err)
	}
	var out []Change
	for _, ref := range sortedUnion(before, after) {
		b, a := before[ref], after[ref]
		for _, k := range sortedUnion(b, a) {
			if b[k] != a[k] {
				out = append(out, Change{Workload: ref, What: k, Before: b[k], After: a[k]})
			}
		}
	}
	return out, nil
}

func sortedUnion[V any](a, b map[string]V) []string {
	keys := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// meshedRefs are the workloads and bare pods of the manifests that are in
// the mesh.
func (m *Manifests) meshedRefs() []string {
	var out []string
	for _, p := range m.Bundle.Pods {
		if workload.Of(p, m.namespaceLabels(p.Namespace)).Meshed {
			out = append(out, p.Namespace+"/"+p.Name)
		}
	}
	for _, u := range m.Workloads {
		ns := u.GetNamespace()
		if ns == "" {
			ns = "default"
		}
		ref := ns + "/" + u.GetKind() + "/" + u.GetName()
		p, err := m.podOf(ref)
		if err == nil && workload.Of(p, m.namespaceLabels(ns)).Meshed {
			out = append(out, ref)
		}
	}
	return out
}

// allFacts are, for every meshed workload and pod, what its proxy gets as
// key → summary, from one run of ingest and translation.
func (m *Manifests) allFacts(opts translate.Options) (map[string]map[string]string, error) {
	rendered, err := m.renderAll(m.meshedRefs(), opts)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]string{}
	for ref, r := range rendered {
		out[ref] = facts(r)
	}
	return out, nil
}

// facts are what one proxy gets, as key → summary.
func facts(r *Rendered) map[string]string {
	out := map[string]string{}
	for _, res := range r.Resources.Routes {
		rc := res.(*routev3.RouteConfiguration)
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				if rt.GetName() == translate.WarmRouteName {
					continue
				}
				key := short(rc.GetName() + " " + match(rt.GetMatch()))
				for _, part := range strings.Split(short(action(rt)), "; ") {
					label, value := "to", part
					for _, l := range []string{"weights", "timeout", "retries"} {
						if v, ok := strings.CutPrefix(part, l+" "); ok {
							label, value = l, v
						}
					}
					out[key+": "+label] = value
				}
			}
		}
	}
	for _, res := range r.Resources.Clusters {
		cl := res.(*clusterv3.Cluster)
		l := limits(cl)
		if l == "" {
			continue
		}
		key := "cluster " + short(cl.GetName())
		for _, part := range strings.Split(strings.TrimSuffix(strings.TrimPrefix(l, " ("), ")"), "; ") {
			if v, ok := strings.CutPrefix(part, "outlier detection"); ok {
				out[key+": outlier detection"] = strings.TrimPrefix(v, ": ")
				continue
			}
			out[key+": limits"] = part
		}
	}
	return out
}

var (
	clusterName = regexp.MustCompile(`outbound\|\d+\|\|([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.[a-z0-9.-]+`)
	routeName   = regexp.MustCompile(`\b([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.[a-z0-9.-]+:(\d+)`)
)

// short names Services as people do: checkout-v1, not
// outbound|80||checkout-v1.shop.svc.cluster.local.
func short(s string) string {
	s = clusterName.ReplaceAllString(s, "$1")
	return routeName.ReplaceAllString(s, "$1:$3")
}
