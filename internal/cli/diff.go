package cli

import (
	"fmt"
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
	refs := map[string]bool{}
	for _, m := range []*Manifests{base, head} {
		for _, r := range m.meshedRefs() {
			refs[r] = true
		}
	}
	var out []Change
	for _, ref := range slices.Sorted(func(yield func(string) bool) {
		for r := range refs {
			if !yield(r) {
				return
			}
		}
	}) {
		before, err := base.facts(ref, opts)
		if err != nil {
			return nil, fmt.Errorf("base: %w", err)
		}
		after, err := head.facts(ref, opts)
		if err != nil {
			return nil, fmt.Errorf("head: %w", err)
		}
		keys := map[string]bool{}
		for k := range before {
			keys[k] = true
		}
		for k := range after {
			keys[k] = true
		}
		for _, k := range slices.Sorted(func(yield func(string) bool) {
			for k := range keys {
				if !yield(k) {
					return
				}
			}
		}) {
			if before[k] != after[k] {
				out = append(out, Change{Workload: ref, What: k, Before: before[k], After: after[k]})
			}
		}
	}
	return out, nil
}

// meshedRefs are the workloads and bare pods of the manifests that are in
// the mesh.
func (m *Manifests) meshedRefs() []string {
	labels := map[string]map[string]string{}
	for _, ns := range m.Bundle.Namespaces {
		labels[ns.Name] = ns.Labels
	}
	var out []string
	for _, p := range m.Bundle.Pods {
		if workload.Of(p, labels[p.Namespace]).Meshed {
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
		if err == nil && workload.Of(p, labels[ns]).Meshed {
			out = append(out, ref)
		}
	}
	return out
}

// facts are what a workload's proxy gets, as key → summary; none when the
// workload is not in these manifests or not meshed.
func (m *Manifests) facts(ref string, opts translate.Options) (map[string]string, error) {
	if !slices.Contains(m.meshedRefs(), ref) {
		return nil, nil
	}
	c := *m
	c.Bundle.Pods = slices.Clone(m.Bundle.Pods)
	pod, wl := ref, ""
	if strings.Count(ref, "/") == 2 {
		pod, wl = "", ref
	}
	r, err := Render(&c, pod, wl, opts)
	if err != nil {
		return nil, err
	}
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
	return out, nil
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
