package ingest

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ir"
	"github.com/weft-mesh/weft/internal/workload"
)

// buildRateLimits puts each RateLimitPolicy on its Service, where the
// proxies serving it enforce it. Of two on one Service the oldest wins.
// Proxyless gRPC servers have no local rate limit: a policy whose Service
// is served only by them is not Ready, and one served partly by them says
// which pods do not enforce it.
func (s *state) buildRateLimits() {
	rls := slices.Clone(s.b.RateLimitPolicies)
	slices.SortFunc(rls, func(a, b *meshv1alpha1.RateLimitPolicy) int { return olderFirst(a, b) })
	winners := map[string]*meshv1alpha1.RateLimitPolicy{}
	for _, rl := range rls {
		v := s.verdict("RateLimitPolicy", rl)
		key := rl.Namespace + "/" + rl.Spec.TargetRef.Name
		if w, ok := winners[key]; ok {
			v.reject(meshv1alpha1.ReasonConflicted, "RateLimitPolicy %s, created earlier, already limits Service %s; only the oldest is in effect", w.Name, rl.Spec.TargetRef.Name)
			continue
		}
		winners[key] = rl
		st := s.httpTarget(v, rl.Namespace, rl.Spec.TargetRef.Name, "rate limits count requests, so they need one")
		if st == nil {
			continue
		}
		out := &ir.RateLimit{Source: v.ref, Limit: tokenBucket(rl.Spec.Limit), PerCaller: tokenBucket(rl.Spec.PerCaller)}
		if out.Limit != nil && out.PerCaller != nil && out.PerCaller.Interval%out.Limit.Interval != 0 {
			v.reject(meshv1alpha1.ReasonUnsupportedValue, "spec.perCaller.interval (%s) must be a multiple of spec.limit.interval (%s): the proxy refills every bucket on the shared one's clock", out.PerCaller.Interval.D(), out.Limit.Interval.D())
			continue
		}
		st.rateLimit = out
		v.readyMsg = describeRateLimit(out)
		envoy, proxyless := s.servingPods(st)
		switch {
		case len(envoy) == 0 && len(proxyless) > 0:
			v.degrade(meshv1alpha1.ReasonUnsupportedByProxyless, "every pod of Service %s is a proxyless gRPC server (%s), and gRPC has no local rate limit: nothing enforces it; give the pods a sidecar (weft.dev/inject: \"true\")", st.ir.Name, nameFew(proxyless))
		case len(proxyless) > 0:
			v.note(meshv1alpha1.ConditionProxylessCompatible, meshv1alpha1.ReasonUnsupportedByProxyless, fmt.Sprintf("proxyless gRPC servers of Service %s (%s) do not enforce it: gRPC has no local rate limit; the %d pods with a sidecar do", st.ir.Name, nameFew(proxyless), len(envoy)))
		}
	}
}

// servingPods are the running meshed pods a Service selects, by proxy
// kind (namespace/name).
func (s *state) servingPods(st *service) (envoy, proxyless []string) {
	if len(st.obj.Spec.Selector) == 0 {
		return nil, nil
	}
	sel := labels.SelectorFromSet(st.obj.Spec.Selector)
	var nsLabels map[string]string
	if ns := s.namespaces[st.obj.Namespace]; ns != nil {
		nsLabels = ns.Labels
	}
	if s.podsByNS == nil {
		// Once per build, and only when a RateLimitPolicy asks.
		s.podsByNS = map[string][]*corev1.Pod{}
		for _, pod := range s.b.Pods {
			s.podsByNS[pod.Namespace] = append(s.podsByNS[pod.Namespace], pod)
		}
	}
	for _, pod := range s.podsByNS[st.obj.Namespace] {
		if !sel.Matches(labels.Set(pod.Labels)) {
			continue
		}
		w := workload.Of(pod, nsLabels)
		switch {
		case !w.Meshed:
		case w.Mode == workload.ModeProxyless:
			proxyless = append(proxyless, pod.Namespace+"/"+pod.Name)
		default:
			envoy = append(envoy, pod.Namespace+"/"+pod.Name)
		}
	}
	slices.Sort(envoy)
	slices.Sort(proxyless)
	return envoy, proxyless
}

func tokenBucket(l *meshv1alpha1.RateLimit) *ir.TokenBucket {
	if l == nil {
		return nil
	}
	b := &ir.TokenBucket{Requests: uint32(l.Requests), Interval: ir.Duration(time.Second), Burst: uint32(l.Requests)}
	if l.Interval != nil {
		b.Interval = ir.Duration(l.Interval.Duration)
	}
	if l.Burst != nil {
		b.Burst = uint32(*l.Burst)
	}
	return b
}

func describeRateLimit(r *ir.RateLimit) string {
	var parts []string
	if b := r.Limit; b != nil {
		parts = append(parts, fmt.Sprintf("%d requests per %s (burst %d) per serving proxy", b.Requests, b.Interval.D(), b.Burst))
	}
	if b := r.PerCaller; b != nil {
		parts = append(parts, fmt.Sprintf("%d per %s (burst %d) for each caller identity", b.Requests, b.Interval.D(), b.Burst))
	}
	return "limits " + strings.Join(parts, ", and ")
}

// nameFew lists up to five names.
func nameFew(names []string) string {
	if len(names) <= 5 {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:5], ", "), len(names)-5)
}
