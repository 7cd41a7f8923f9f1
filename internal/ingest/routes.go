package ingest

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ir"
)

const gatewayGroup = "gateway.networking.k8s.io"

// tableKey names the route list of one Service port as seen by clients of
// one namespace ("" for every client).
type tableKey struct {
	service  string
	port     int32
	consumer string
}

type routeTable struct {
	entries []routeEntry
}

type routeEntry struct {
	route   *ir.Route
	created metav1.Time
	rule    int
	match   int
}

// routeObject is what HTTPRoute and GRPCRoute have in common here.
type routeObject struct {
	meta    metav1.Object
	ref     ir.ObjectRef
	parents []gwapiv1.ParentReference
	grpc    bool
	// tcp marks a TCPRoute: it attaches to TCP ports and forwards whole
	// connections.
	tcp bool
	// reported says the route's status has an entry of ours, which must
	// go when the route no longer names a Service parent.
	reported bool
}

// reportedByUs says whether a route status lists a parent under Weft's
// controller name.
func reportedByUs(parents []gwapiv1.RouteParentStatus) bool {
	return slices.ContainsFunc(parents, func(p gwapiv1.RouteParentStatus) bool { return p.ControllerName == ControllerName })
}

// rule is one route rule turned into the model, before it is attached to a
// parent port.
type builtRule struct {
	matches  []ir.Match
	template ir.Route
	// problems name the fields that make the rule unusable, each with why;
	// a rule with problems is dropped (Gateway API's PartiallyInvalid).
	problems []string
	// notProxyless name the filters proxyless gRPC clients do not apply.
	notProxyless []string
}

// proxylessIgnores says what a proxyless gRPC client (grpc-go) does with a
// filter it does not implement; empty when it implements it.
func proxylessIgnores(t gwapiv1.HTTPRouteFilterType) string {
	switch t {
	case gwapiv1.HTTPRouteFilterRequestHeaderModifier, gwapiv1.HTTPRouteFilterResponseHeaderModifier:
		return "headers are not changed"
	case gwapiv1.HTTPRouteFilterURLRewrite:
		return "the request is not rewritten"
	case gwapiv1.HTTPRouteFilterRequestMirror:
		return "nothing is mirrored"
	case gwapiv1.HTTPRouteFilterRequestRedirect:
		return "matching calls fail with UNAVAILABLE instead of being redirected"
	}
	return ""
}

func (r *builtRule) filterApplied(field string, j int, t gwapiv1.HTTPRouteFilterType) {
	if why := proxylessIgnores(t); why != "" {
		r.notProxyless = append(r.notProxyless, fmt.Sprintf("%s.filters[%d] (%s: %s)", field, j, t, why))
	}
}

func (r *builtRule) problem(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// checkMatches reports every regular expression of a rule's matches that
// RE2 refuses: the proxy would refuse the whole route configuration. The
// path of a GRPCRoute match comes from its method.
func (r *builtRule) checkMatches(field string, grpc bool) {
	pathField := "path"
	if grpc {
		pathField = "method"
	}
	for j, m := range r.matches {
		if m.Path != nil && m.Path.Type == ir.PathRegex {
			if err := ir.CheckRegex(m.Path.Value); err != nil {
				r.problem("%s.matches[%d].%s: %q: %v", field, j, pathField, m.Path.Value, err)
			}
		}
		for _, h := range m.Headers {
			if h.Type == ir.MatchRegex {
				if err := ir.CheckRegex(h.Value); err != nil {
					r.problem("%s.matches[%d].headers[%s]: %q: %v", field, j, h.Name, h.Value, err)
				}
			}
		}
		for _, q := range m.QueryParams {
			if q.Type == ir.MatchRegex {
				if err := ir.CheckRegex(q.Value); err != nil {
					r.problem("%s.matches[%d].queryParams[%s]: %q: %v", field, j, q.Name, q.Value, err)
				}
			}
		}
	}
}

func (s *state) buildRoutes() {
	for _, r := range s.b.HTTPRoutes {
		obj := routeObject{meta: r, ref: ir.ObjectRef{Group: gatewayGroup, Kind: "HTTPRoute", Namespace: r.Namespace, Name: r.Name}, parents: r.Spec.ParentRefs, reported: reportedByUs(r.Status.Parents)}
		rv := &refProblems{}
		var rules []builtRule
		for i, rule := range r.Spec.Rules {
			rules = append(rules, s.httpRule(obj, i, rule, rv))
		}
		s.attachRoute(obj, rules, rv)
	}
	for _, r := range s.b.GRPCRoutes {
		obj := routeObject{meta: r, ref: ir.ObjectRef{Group: gatewayGroup, Kind: "GRPCRoute", Namespace: r.Namespace, Name: r.Name}, parents: r.Spec.ParentRefs, grpc: true, reported: reportedByUs(r.Status.Parents)}
		rv := &refProblems{}
		var rules []builtRule
		for i, rule := range r.Spec.Rules {
			rules = append(rules, s.grpcRule(obj, i, rule, rv))
		}
		s.attachRoute(obj, rules, rv)
	}
	for _, r := range s.b.TCPRoutes {
		obj := routeObject{meta: r, ref: ir.ObjectRef{Group: gatewayGroup, Kind: "TCPRoute", Namespace: r.Namespace, Name: r.Name}, parents: r.Spec.ParentRefs, tcp: true, reported: reportedByUs(r.Status.Parents)}
		rv := &refProblems{}
		var rules []builtRule
		for i, rule := range r.Spec.Rules {
			var out builtRule
			field := fmt.Sprintf("spec.rules[%d]", i)
			if i > 0 {
				// Nothing tells one connection from another: the first
				// rule takes them all.
				out.problem("%s: a TCPRoute on a Service port forwards every connection by its first rule, so this one would never apply; put its backends in spec.rules[0]", field)
			}
			s.setBackends(obj, field, &out.template, rule.BackendRefs, rv)
			rules = append(rules, out)
		}
		s.attachRoute(obj, rules, rv)
	}
}

// refProblems collects backend reference problems of a route.
type refProblems struct {
	reason string
	msgs   []string
}

func (p *refProblems) add(reason, msg string) {
	if p.reason == "" {
		p.reason = reason
	}
	p.msgs = append(p.msgs, msg)
}

func isServiceParent(p gwapiv1.ParentReference) bool {
	return p.Kind != nil && *p.Kind == "Service" && (p.Group == nil || *p.Group == "" || *p.Group == "core")
}

// attachRoute adds a route's rules to the route tables of its Service
// parents and records status for each such parent.
func (s *state) attachRoute(obj routeObject, rules []builtRule, refs *refProblems) {
	status := RouteStatus{Ref: obj.ref, Generation: obj.meta.GetGeneration()}
	for _, parent := range obj.parents {
		if !isServiceParent(parent) {
			continue // a Gateway parent belongs to a gateway controller
		}
		ps := gwapiv1.RouteParentStatus{ParentRef: parent, ControllerName: ControllerName}
		cond := func(t string, ok bool, reason, msg string) {
			st := metav1.ConditionTrue
			if !ok {
				st = metav1.ConditionFalse
			}
			ps.Conditions = append(ps.Conditions, metav1.Condition{Type: t, Status: st, Reason: reason, Message: msg, ObservedGeneration: obj.meta.GetGeneration()})
		}
		resolved := func() {
			if refs.reason == "" {
				cond(string(gwapiv1.RouteConditionResolvedRefs), true, string(gwapiv1.RouteReasonResolvedRefs), "every backend reference resolves")
			} else {
				cond(string(gwapiv1.RouteConditionResolvedRefs), false, refs.reason, strings.Join(refs.msgs, "; "))
			}
		}
		parentNS := obj.ref.Namespace
		if parent.Namespace != nil && *parent.Namespace != "" {
			parentNS = string(*parent.Namespace)
		}
		st := s.services[parentNS+"/"+string(parent.Name)]
		var ports []*ir.Port
		accepted, reason, msg := true, string(gwapiv1.RouteReasonAccepted), "attached to the Service"
		switch {
		case st == nil:
			accepted, reason, msg = false, string(gwapiv1.RouteReasonNoMatchingParent), fmt.Sprintf("parentRef Service %s/%s does not exist", parentNS, parent.Name)
		case parent.SectionName != nil:
			accepted, reason, msg = false, string(gwapiv1.RouteReasonUnsupportedValue), "parentRef sectionName is not supported for Service parents: use port"
		case parent.Port != nil:
			p := st.port(*parent.Port)
			if p == nil {
				accepted, reason, msg = false, string(gwapiv1.RouteReasonNoMatchingParent), fmt.Sprintf("Service %s/%s has no TCP port %d", parentNS, parent.Name, *parent.Port)
			} else {
				ports = []*ir.Port{p}
			}
		default:
			ports = st.ir.Ports
		}
		if accepted && obj.tcp && obj.ref.Namespace != parentNS {
			accepted, reason, msg = false, string(gwapiv1.RouteReasonUnsupportedValue), fmt.Sprintf("a TCPRoute must be in the namespace of its Service parent (%s): one outbound chain carries every client's connections to a TCP port, so a route for one namespace's clients cannot be told apart", parentNS)
			ports = nil
		}
		if accepted {
			var usable []*ir.Port
			for _, p := range ports {
				if portTakesRoute(p, obj) {
					usable = append(usable, p)
				}
			}
			if len(usable) == 0 {
				want := "an HTTP, HTTP2 or gRPC port (name it http-*, http2-* or grpc-*, or set appProtocol)"
				switch {
				case obj.grpc:
					want = "an HTTP2 or gRPC port (name it grpc-* or http2-*, or set appProtocol: grpc)"
				case obj.tcp:
					want = "a TCP port (any port not named or marked http, http2 or grpc); HTTP ports take HTTPRoutes"
				}
				accepted, reason, msg = false, string(gwapiv1.RouteReasonUnsupportedValue), fmt.Sprintf("Service %s/%s has no port this route can attach to: it needs %s", parentNS, parent.Name, want)
			}
			ports = usable
		}
		// Invalid rules are dropped and the rest programmed: the route is
		// Accepted while one rule is left, with PartiallyInvalid naming
		// what was dropped (Gateway API's "Drop Rule(s)" approach).
		dropped := droppedRules(rules)
		if accepted && dropped != "" {
			if len(rules) > 0 && !slices.ContainsFunc(rules, func(r builtRule) bool { return len(r.problems) == 0 }) {
				accepted, reason, msg = false, string(gwapiv1.RouteReasonUnsupportedValue), "every rule is invalid, so nothing is programmed: "+dropped
			} else {
				ps.Conditions = append(ps.Conditions, metav1.Condition{
					Type: string(gwapiv1.RouteConditionPartiallyInvalid), Status: metav1.ConditionTrue,
					Reason: string(gwapiv1.RouteReasonUnsupportedValue), Message: "Dropped " + dropped, ObservedGeneration: obj.meta.GetGeneration(),
				})
			}
		}
		cond(string(gwapiv1.RouteConditionAccepted), accepted, reason, msg)
		resolved()
		if accepted {
			if ignored := proxylessIgnored(rules, ports); ignored != "" {
				cond(ConditionProxylessCompatible, false, ReasonUnsupportedByProxyless, ignored)
			}
		}
		slices.SortFunc(ps.Conditions, func(a, b metav1.Condition) int { return strings.Compare(a.Type, b.Type) })
		status.Parents = append(status.Parents, ps)
		if st == nil {
			continue
		}
		consumer := ""
		if obj.ref.Namespace != parentNS {
			consumer = obj.ref.Namespace
		}
		for _, p := range ports {
			key := tableKey{service: st.ir.Key(), port: p.Port, consumer: consumer}
			t := s.tables[key]
			if t == nil {
				t = &routeTable{}
				s.tables[key] = t
			}
			for ri, r := range rules {
				if len(r.problems) > 0 {
					continue
				}
				matches := r.matches
				if len(matches) == 0 {
					matches = []ir.Match{{Path: &ir.PathMatch{Type: ir.PathPrefix, Value: "/"}}}
				}
				for mi, m := range matches {
					route := r.template
					route.Source = obj.ref
					route.Name = fmt.Sprintf("%s/%s/%s/rule-%d/match-%d", strings.ToLower(obj.ref.Kind), obj.ref.Namespace, obj.ref.Name, ri, mi)
					route.Matches = []ir.Match{m}
					t.entries = append(t.entries, routeEntry{route: &route, created: obj.meta.GetCreationTimestamp(), rule: ri, match: mi})
				}
			}
		}
	}
	// A route without Service parents gets a status only to clear the
	// entries an earlier version of it had from us.
	if len(status.Parents) > 0 || obj.reported {
		s.routes = append(s.routes, status)
	}
}

// droppedRules names the rules with problems and why, or is empty.
func droppedRules(rules []builtRule) string {
	var idx, why []string
	for i, r := range rules {
		if len(r.problems) > 0 {
			idx = append(idx, strconv.Itoa(i))
			why = append(why, r.problems...)
		}
	}
	if len(idx) == 0 {
		return ""
	}
	noun := "Rule "
	if len(idx) > 1 {
		noun = "Rules "
	}
	return noun + strings.Join(idx, ", ") + ": " + strings.Join(why, "; ")
}

// Route parent condition for what proxyless gRPC clients cannot do:
// present, False, when a rule uses a filter they do not apply on a port
// they can call (gRPC or HTTP/2); absent otherwise.
const (
	ConditionProxylessCompatible = meshv1alpha1.ConditionProxylessCompatible
	ReasonUnsupportedByProxyless = meshv1alpha1.ReasonUnsupportedByProxyless
)

// proxylessIgnored lists what proxyless clients would not do on the
// route's ports, in the rules that are programmed.
func proxylessIgnored(rules []builtRule, ports []*ir.Port) string {
	if !slices.ContainsFunc(ports, func(p *ir.Port) bool { return p.Protocol == ir.ProtocolGRPC || p.Protocol == ir.ProtocolHTTP2 }) {
		return ""
	}
	var out []string
	for _, r := range rules {
		if len(r.problems) == 0 {
			out = append(out, r.notProxyless...)
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "proxyless gRPC clients (grpc-go) do not apply " + strings.Join(out, "; ") + "; Envoy sidecars apply them, so callers of this Service behave differently by proxy kind"
}

func portTakesRoute(p *ir.Port, obj routeObject) bool {
	if obj.tcp {
		return !p.Protocol.IsHTTP()
	}
	if obj.grpc {
		return p.Protocol == ir.ProtocolGRPC || p.Protocol == ir.ProtocolHTTP2
	}
	return p.Protocol.IsHTTP()
}

func (s *state) httpRule(obj routeObject, i int, rule gwapiv1.HTTPRouteRule, refs *refProblems) builtRule {
	var out builtRule
	for _, m := range rule.Matches {
		out.matches = append(out.matches, httpMatch(m))
	}
	field := fmt.Sprintf("spec.rules[%d]", i)
	for j, f := range rule.Filters {
		if msg := s.applyHTTPFilter(obj, &out.template, f, refs); msg != "" {
			out.problem("%s.filters[%d]: %s", field, j, msg)
		} else {
			out.filterApplied(field, j, f.Type)
		}
	}
	if rule.Timeouts != nil && rule.Timeouts.Request != nil {
		d, err := time.ParseDuration(string(*rule.Timeouts.Request))
		switch {
		case err != nil:
			out.problem("%s.timeouts.request: %q is not a duration", field, *rule.Timeouts.Request)
		case d > 0:
			dd := ir.Duration(d)
			out.template.Timeout = &dd
		default:
			zero := ir.Duration(0) // 0s disables the timeout
			out.template.Timeout = &zero
		}
	}
	if rule.Timeouts != nil && rule.Timeouts.BackendRequest != nil {
		d, err := time.ParseDuration(string(*rule.Timeouts.BackendRequest))
		switch {
		case err != nil:
			out.problem("%s.timeouts.backendRequest: %q is not a duration", field, *rule.Timeouts.BackendRequest)
		case d > 0:
			// 0s means no limit per try, as the field's default.
			dd := ir.Duration(d)
			out.template.BackendTimeout = &dd
			out.notProxyless = append(out.notProxyless, field+".timeouts.backendRequest (under a RetryPolicy it bounds each try; grpc-go has no per-try timeout, so only the request timeout holds)")
		}
	}
	var backends []gwapiv1.BackendRef
	for j, b := range rule.BackendRefs {
		if len(b.Filters) > 0 {
			out.problem("%s.backendRefs[%d].filters: per-backend filters are not supported; put them on the rule", field, j)
		}
		backends = append(backends, b.BackendRef)
	}
	s.setBackends(obj, field, &out.template, backends, refs)
	out.checkMatches(field, false)
	return out
}

func (s *state) grpcRule(obj routeObject, i int, rule gwapiv1.GRPCRouteRule, refs *refProblems) builtRule {
	var out builtRule
	field := fmt.Sprintf("spec.rules[%d]", i)
	for _, m := range rule.Matches {
		out.matches = append(out.matches, grpcMatch(m))
	}
	for j, f := range rule.Filters {
		hf := gwapiv1.HTTPRouteFilter{
			Type:                   gwapiv1.HTTPRouteFilterType(f.Type),
			RequestHeaderModifier:  f.RequestHeaderModifier,
			ResponseHeaderModifier: f.ResponseHeaderModifier,
			RequestMirror:          f.RequestMirror,
			ExtensionRef:           f.ExtensionRef,
		}
		if msg := s.applyHTTPFilter(obj, &out.template, hf, refs); msg != "" {
			out.problem("%s.filters[%d]: %s", field, j, msg)
		} else {
			out.filterApplied(field, j, hf.Type)
		}
	}
	var backends []gwapiv1.BackendRef
	for j, b := range rule.BackendRefs {
		if len(b.Filters) > 0 {
			out.problem("%s.backendRefs[%d].filters: per-backend filters are not supported; put them on the rule", field, j)
		}
		backends = append(backends, b.BackendRef)
	}
	s.setBackends(obj, field, &out.template, backends, refs)
	out.checkMatches(field, true)
	return out
}

func httpMatch(m gwapiv1.HTTPRouteMatch) ir.Match {
	var out ir.Match
	if m.Path != nil {
		t := gwapiv1.PathMatchPathPrefix
		if m.Path.Type != nil {
			t = *m.Path.Type
		}
		v := "/"
		if m.Path.Value != nil {
			v = *m.Path.Value
		}
		switch t {
		case gwapiv1.PathMatchExact:
			out.Path = &ir.PathMatch{Type: ir.PathExact, Value: v}
		case gwapiv1.PathMatchRegularExpression:
			out.Path = &ir.PathMatch{Type: ir.PathRegex, Value: v}
		default:
			out.Path = &ir.PathMatch{Type: ir.PathPrefix, Value: v}
		}
	} else {
		out.Path = &ir.PathMatch{Type: ir.PathPrefix, Value: "/"}
	}
	for _, h := range m.Headers {
		t := ir.MatchExact
		if h.Type != nil && *h.Type == gwapiv1.HeaderMatchRegularExpression {
			t = ir.MatchRegex
		}
		out.Headers = append(out.Headers, ir.StringMatch{Name: strings.ToLower(string(h.Name)), Type: t, Value: h.Value})
	}
	for _, q := range m.QueryParams {
		t := ir.MatchExact
		if q.Type != nil && *q.Type == gwapiv1.QueryParamMatchRegularExpression {
			t = ir.MatchRegex
		}
		out.QueryParams = append(out.QueryParams, ir.StringMatch{Name: string(q.Name), Type: t, Value: q.Value})
	}
	if m.Method != nil {
		out.Method = string(*m.Method)
	}
	slices.SortFunc(out.Headers, func(a, b ir.StringMatch) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(out.QueryParams, func(a, b ir.StringMatch) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// grpcMatch turns a gRPC method match into a path match: gRPC calls are
// POSTs to /<service>/<method>.
func grpcMatch(m gwapiv1.GRPCRouteMatch) ir.Match {
	var out ir.Match
	if mm := m.Method; mm != nil {
		svc, method := "", ""
		if mm.Service != nil {
			svc = *mm.Service
		}
		if mm.Method != nil {
			method = *mm.Method
		}
		regex := mm.Type != nil && *mm.Type == gwapiv1.GRPCMethodMatchRegularExpression
		switch {
		case regex:
			out.Path = &ir.PathMatch{Type: ir.PathRegex, Value: "/" + cmp.Or(svc, "[^/]+") + "/" + cmp.Or(method, "[^/]+")}
		case svc != "" && method != "":
			out.Path = &ir.PathMatch{Type: ir.PathExact, Value: "/" + svc + "/" + method}
		case svc != "":
			out.Path = &ir.PathMatch{Type: ir.PathPrefix, Value: "/" + svc + "/"}
		case method != "":
			out.Path = &ir.PathMatch{Type: ir.PathRegex, Value: "/[^/]+/" + regexpQuote(method)}
		}
	}
	if out.Path == nil {
		out.Path = &ir.PathMatch{Type: ir.PathPrefix, Value: "/"}
	}
	for _, h := range m.Headers {
		t := ir.MatchExact
		if h.Type != nil && *h.Type == gwapiv1.GRPCHeaderMatchRegularExpression {
			t = ir.MatchRegex
		}
		out.Headers = append(out.Headers, ir.StringMatch{Name: strings.ToLower(string(h.Name)), Type: t, Value: h.Value})
	}
	slices.SortFunc(out.Headers, func(a, b ir.StringMatch) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func regexpQuote(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\.+*?()|[]{}^$`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// applyHTTPFilter sets a filter on a route template; it returns a message
// when the filter cannot be programmed.
func (s *state) applyHTTPFilter(obj routeObject, r *ir.Route, f gwapiv1.HTTPRouteFilter, refs *refProblems) string {
	switch f.Type {
	case gwapiv1.HTTPRouteFilterRequestHeaderModifier:
		if f.RequestHeaderModifier != nil {
			r.RequestHeaders = headerModifier(f.RequestHeaderModifier)
		}
	case gwapiv1.HTTPRouteFilterResponseHeaderModifier:
		if f.ResponseHeaderModifier != nil {
			r.ResponseHeaders = headerModifier(f.ResponseHeaderModifier)
		}
	case gwapiv1.HTTPRouteFilterRequestRedirect:
		rr := f.RequestRedirect
		if rr == nil {
			return "requestRedirect is missing"
		}
		red := &ir.Redirect{StatusCode: 302}
		if rr.StatusCode != nil {
			red.StatusCode = *rr.StatusCode
		}
		if rr.Scheme != nil {
			red.Scheme = *rr.Scheme
		}
		if rr.Hostname != nil {
			red.Hostname = string(*rr.Hostname)
		}
		if rr.Port != nil {
			red.Port = *rr.Port
		}
		red.Path = pathModifier(rr.Path)
		r.Redirect = red
	case gwapiv1.HTTPRouteFilterURLRewrite:
		if f.URLRewrite == nil {
			return "urlRewrite is missing"
		}
		rw := &ir.Rewrite{Path: pathModifier(f.URLRewrite.Path)}
		if f.URLRewrite.Hostname != nil {
			rw.Hostname = string(*f.URLRewrite.Hostname)
		}
		r.Rewrite = rw
	case gwapiv1.HTTPRouteFilterRequestMirror:
		m := f.RequestMirror
		if m == nil {
			return "requestMirror is missing"
		}
		cluster, ok := s.resolveBackend(obj, "requestMirror.backendRef", m.BackendRef, refs)
		if !ok {
			return ""
		}
		pct := 100.0
		switch {
		case m.Percent != nil:
			pct = float64(*m.Percent)
		case m.Fraction != nil:
			den := int32(100)
			if m.Fraction.Denominator != nil && *m.Fraction.Denominator > 0 {
				den = *m.Fraction.Denominator
			}
			pct = 100 * float64(m.Fraction.Numerator) / float64(den)
		}
		r.Mirrors = append(r.Mirrors, ir.Mirror{Cluster: cluster.Cluster, Percent: pct})
	case gwapiv1.HTTPRouteFilterExtensionRef:
		if e := f.ExtensionRef; e != nil {
			return s.extensionFault(obj, r, string(e.Group), string(e.Kind), string(e.Name))
		}
	default:
		return fmt.Sprintf("filter type %s is not supported by Weft", f.Type)
	}
	return ""
}

func headerModifier(f *gwapiv1.HTTPHeaderFilter) *ir.HeaderModifier {
	out := &ir.HeaderModifier{}
	for _, h := range f.Set {
		out.Set = append(out.Set, ir.Header{Name: string(h.Name), Value: h.Value})
	}
	for _, h := range f.Add {
		out.Add = append(out.Add, ir.Header{Name: string(h.Name), Value: h.Value})
	}
	out.Remove = slices.Clone(f.Remove)
	return out
}

func pathModifier(p *gwapiv1.HTTPPathModifier) *ir.PathRewrite {
	if p == nil {
		return nil
	}
	switch p.Type {
	case gwapiv1.FullPathHTTPPathModifier:
		if p.ReplaceFullPath != nil {
			return &ir.PathRewrite{ReplaceFullPath: *p.ReplaceFullPath}
		}
	case gwapiv1.PrefixMatchHTTPPathModifier:
		if p.ReplacePrefixMatch != nil {
			v := *p.ReplacePrefixMatch
			return &ir.PathRewrite{ReplacePrefixMatch: &v}
		}
	}
	return nil
}

// setBackends resolves a rule's backendRefs into weighted clusters. Invalid
// references are reported and dropped; a rule with no valid backend answers
// 500, as the Gateway API asks.
func (s *state) setBackends(obj routeObject, field string, r *ir.Route, refs []gwapiv1.BackendRef, problems *refProblems) {
	if r.Redirect != nil {
		return
	}
	valid, positive := 0, 0
	for j, b := range refs {
		w := int32(1)
		if b.Weight != nil {
			w = *b.Weight
		}
		be, ok := s.resolveBackend(obj, fmt.Sprintf("%s.backendRefs[%d]", field, j), b.BackendObjectReference, problems)
		if !ok {
			continue
		}
		valid++
		// A backend at weight 0 stays in the route: it gets no traffic,
		// but a proxyless client keeps its cluster warm for the step out
		// of 0 (see translate.WarmRouteName).
		be.Weight = uint32(max(w, 0))
		r.Backends = append(r.Backends, be)
		if w > 0 {
			positive++
		}
	}
	if positive == 0 {
		r.Backends = nil
		msg := "no backend"
		if len(refs) > 0 && valid == 0 {
			msg = "every backendRef of this rule is invalid"
		} else if len(refs) > 0 {
			msg = "every backend of this rule has weight 0"
		}
		r.DirectResponse = &ir.DirectResponse{Status: 500, Body: msg}
	}
}

// resolveBackend checks a Service backend reference and returns its cluster.
func (s *state) resolveBackend(obj routeObject, field string, b gwapiv1.BackendObjectReference, problems *refProblems) (ir.Backend, bool) {
	group, kind := "", "Service"
	if b.Group != nil {
		group = string(*b.Group)
	}
	if b.Kind != nil {
		kind = string(*b.Kind)
	}
	if (group != "" && group != "core") || kind != "Service" {
		problems.add(string(gwapiv1.RouteReasonInvalidKind), fmt.Sprintf("%s: kind %s in group %q is not supported; use a Service", field, kind, group))
		return ir.Backend{}, false
	}
	ns := obj.ref.Namespace
	if b.Namespace != nil && *b.Namespace != "" {
		ns = string(*b.Namespace)
	}
	if ns != obj.ref.Namespace && !isParent(obj, ns, string(b.Name)) && !s.referenceGranted(obj.ref, ns, string(b.Name)) {
		problems.add(string(gwapiv1.RouteReasonRefNotPermitted), fmt.Sprintf("%s: Service %s/%s is in another namespace and no ReferenceGrant in %s allows %s from %s", field, ns, b.Name, ns, obj.ref.Kind, obj.ref.Namespace))
		return ir.Backend{}, false
	}
	st := s.services[ns+"/"+string(b.Name)]
	if st == nil {
		problems.add(string(gwapiv1.RouteReasonBackendNotFound), fmt.Sprintf("%s: Service %s/%s does not exist", field, ns, b.Name))
		return ir.Backend{}, false
	}
	if b.Port == nil {
		problems.add(string(gwapiv1.RouteReasonUnsupportedValue), fmt.Sprintf("%s: port is required for a Service backend", field))
		return ir.Backend{}, false
	}
	p := st.port(*b.Port)
	if p == nil {
		problems.add(string(gwapiv1.RouteReasonBackendNotFound), fmt.Sprintf("%s: Service %s/%s has no TCP port %d", field, ns, b.Name, *b.Port))
		return ir.Backend{}, false
	}
	return ir.Backend{Cluster: p.Cluster, Service: serviceRef(ns, string(b.Name)), Port: p.Port}, true
}

func (s *state) referenceGranted(from ir.ObjectRef, toNS, toName string) bool {
	for _, g := range s.b.ReferenceGrants {
		if g.Namespace != toNS {
			continue
		}
		fromOK := slices.ContainsFunc(g.Spec.From, func(f gwapiv1.ReferenceGrantFrom) bool {
			return string(f.Group) == gatewayGroup && string(f.Kind) == from.Kind && string(f.Namespace) == from.Namespace
		})
		toOK := slices.ContainsFunc(g.Spec.To, func(t gwapiv1.ReferenceGrantTo) bool {
			return (t.Group == "" || t.Group == "core") && t.Kind == "Service" && (t.Name == nil || string(*t.Name) == toName)
		})
		if fromOK && toOK {
			return true
		}
	}
	return false
}

// finishRoutes orders each Service port's routes by Gateway API precedence
// and fills in the default route where nothing else routes a port.
func (s *state) finishRoutes() {
	for _, st := range s.services {
		for _, p := range st.ir.Ports {
			key := tableKey{service: st.ir.Key(), port: p.Port}
			if t := s.tables[key]; t != nil && len(t.entries) > 0 {
				p.Routes = append(orderRoutes(t.entries), s.defaultRoute(st, p))
				if !p.Protocol.IsHTTP() {
					s.tcpConflicts(st, p)
				}
			} else if len(p.Routes) == 0 {
				p.Routes = []*ir.Route{s.defaultRoute(st, p)}
			}
		}
	}
	for _, key := range sortedTableKeys(s.tables) {
		if key.consumer == "" {
			continue
		}
		st := s.services[key.service]
		p := st.port(key.port)
		routes := append(orderRoutes(s.tables[key].entries), s.defaultRoute(st, p))
		p.ConsumerRoutes = append(p.ConsumerRoutes, &ir.ConsumerRoutes{Namespace: key.consumer, Routes: routes})
	}
}

// tcpConflicts tells every TCPRoute on a TCP port but the one in force
// (the oldest) that it is not: one chain carries all of the port's
// connections, by one route.
func (s *state) tcpConflicts(st *service, p *ir.Port) {
	winner := p.Routes[0].Source
	for _, r := range p.Routes[1:] {
		if r.Source.Kind != "TCPRoute" || r.Source == winner {
			continue
		}
		msg := fmt.Sprintf("%s, created earlier, already routes port %d of Service %s/%s; a TCP port takes one TCPRoute, so this one does not apply there", describe(winner), p.Port, st.ir.Namespace, st.ir.Name)
		for i := range s.routes {
			rs := &s.routes[i]
			if rs.Ref != r.Source {
				continue
			}
			for j := range rs.Parents {
				ps := &rs.Parents[j]
				if string(ps.ParentRef.Name) != st.ir.Name || (ps.ParentRef.Port != nil && *ps.ParentRef.Port != p.Port) {
					continue
				}
				// By hand rather than meta.SetStatusCondition, which would
				// stamp the time: ingest has no clock.
				for k := range ps.Conditions {
					if ps.Conditions[k].Type == string(gwapiv1.RouteConditionAccepted) {
						ps.Conditions[k].Status, ps.Conditions[k].Reason, ps.Conditions[k].Message = metav1.ConditionFalse, "Conflicted", msg
					}
				}
			}
		}
	}
}

func sortedTableKeys(m map[tableKey]*routeTable) []tableKey {
	keys := make([]tableKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b tableKey) int {
		return cmp.Or(strings.Compare(a.service, b.service), cmp.Compare(a.port, b.port), strings.Compare(a.consumer, b.consumer))
	})
	return keys
}

// defaultRoute sends everything to the Service's own endpoints; it comes
// last, so requests no route matches still reach the Service.
func (s *state) defaultRoute(st *service, p *ir.Port) *ir.Route {
	return &ir.Route{
		Name:     "default",
		Source:   st.ir.Source,
		Backends: []ir.Backend{{Cluster: p.Cluster, Weight: 1, Service: st.ir.Source, Port: p.Port}},
	}
}

// orderRoutes sorts route entries by Gateway API precedence: exact paths,
// then regular expressions (longest first), then the longest prefixes; then method
// matches; then more header matches; then more query matches; then the
// oldest route; then rule and match order.
func orderRoutes(entries []routeEntry) []*ir.Route {
	slices.SortStableFunc(entries, func(a, b routeEntry) int {
		ma, mb := a.route.Matches[0], b.route.Matches[0]
		return cmp.Or(
			cmp.Compare(pathRank(ma.Path), pathRank(mb.Path)),
			-cmp.Compare(len(ma.Path.Value), len(mb.Path.Value)),
			cmp.Compare(boolRank(ma.Method != ""), boolRank(mb.Method != "")),
			-cmp.Compare(len(ma.Headers), len(mb.Headers)),
			-cmp.Compare(len(ma.QueryParams), len(mb.QueryParams)),
			compareTime(a.created, b.created),
			compareRefs(a.route.Source, b.route.Source),
			cmp.Compare(a.rule, b.rule),
			cmp.Compare(a.match, b.match),
		)
	})
	out := make([]*ir.Route, len(entries))
	for i, e := range entries {
		out[i] = e.route
	}
	return out
}

func pathRank(p *ir.PathMatch) int {
	switch p.Type {
	case ir.PathExact:
		return 0
	case ir.PathRegex:
		return 1
	default:
		return 2
	}
}

func boolRank(b bool) int {
	if b {
		return 0
	}
	return 1
}

func compareTime(a, b metav1.Time) int {
	switch {
	case a.Equal(&b):
		return 0
	case a.Before(&b):
		return -1
	default:
		return 1
	}
}

// isParent says whether a backend is one of the route's own Service
// parents: a consumer route may send traffic to the Service it already
// routes without a ReferenceGrant, since its clients may call it anyway.
func isParent(obj routeObject, ns, name string) bool {
	for _, p := range obj.parents {
		pns := obj.ref.Namespace
		if p.Namespace != nil && *p.Namespace != "" {
			pns = string(*p.Namespace)
		}
		if isServiceParent(p) && pns == ns && string(p.Name) == name {
			return true
		}
	}
	return false
}
