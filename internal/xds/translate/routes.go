package translate

import (
	"fmt"
	"math"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/ir"
)

// nonIdempotentMethods may change state on the server, so a request that
// failed after reaching it must not be sent again unless the policy says so.
const nonIdempotentMethods = "POST|PATCH|CONNECT"

// routeConfig is the route configuration clients use for one Service port:
// one virtual host answering to every name of the Service, with routes in
// the model's order.
func (b *builder) routeConfig(name string, svc *ir.Service, port *ir.Port, routes []*ir.Route) (*routev3.RouteConfiguration, error) {
	vh := &routev3.VirtualHost{
		Name:    ir.RouteConfigName(svc.Hostname, port.Port),
		Domains: domains(b.mesh.ClusterDomain, svc, port.Port),
	}
	if len(routes) == 0 {
		// Ingest always gives an HTTP port a default route; should it not,
		// the port still reaches its own Service.
		routes = []*ir.Route{{Name: "default", Source: svc.Source, Backends: []ir.Backend{{Cluster: port.Cluster, Weight: 1}}}}
	}
	for _, r := range routes {
		rs, err := b.routes(port, r)
		if err != nil {
			return nil, fmt.Errorf("route %q of %s port %d: %w", r.Name, svc.Key(), port.Port, err)
		}
		vh.Routes = append(vh.Routes, rs...)
	}
	rc := &routev3.RouteConfiguration{
		Name:             name,
		VirtualHosts:     []*routev3.VirtualHost{vh},
		ValidateClusters: wrapperspb.Bool(false),
	}
	return rc, validate(rc)
}

// domains are the names a client may put in the Host header (or gRPC
// authority) for a Service port: the short and long Service names and the
// cluster IPs, with and without the port.
func domains(clusterDomain string, svc *ir.Service, port int32) []string {
	names := []string{
		svc.Name,
		svc.Name + "." + svc.Namespace,
		svc.Name + "." + svc.Namespace + ".svc",
		svc.Hostname,
	}
	if clusterDomain != "" {
		names = append(names, svc.Name+"."+svc.Namespace+".svc."+clusterDomain)
	}
	out := make([]string, 0, 2*len(names)+2*len(svc.VIPs))
	seen := make(map[string]bool, cap(out))
	add := func(d string) {
		if d != "" && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	for _, n := range names {
		add(n)
		add(hostPort(n, port))
	}
	for _, vip := range svc.VIPs {
		add(vip)
		if strings.Contains(vip, ":") {
			// A Host header carries an IPv6 address in brackets.
			add("[" + vip + "]")
		}
		add(hostPort(vip, port))
	}
	return out
}

// pathKind says how a path match came to be, which decides how a prefix
// rewrite is expressed on it.
type pathKind int

const (
	pathAll     pathKind = iota // the prefix "/" (or no path condition)
	pathSegment                 // exactly the prefix, e.g. /foo of /foo
	pathBelow                   // below the prefix, e.g. /foo/ of /foo
	pathExact                   // an exact path
	pathRegex                   // a regular expression
)

type routeMatch struct {
	match *routev3.RouteMatch
	kind  pathKind
}

// routes turns one model route into Envoy routes: one per match (matches
// are OR'd), and two for a path prefix other than "/" because the Gateway
// API prefix matches whole segments: /foo matches /foo and /foo/bar but not
// /foobar. Plain prefix and exact matches say that in a form both Envoy and
// gRPC understand (gRPC rejects path_separated_prefix).
func (b *builder) routes(port *ir.Port, r *ir.Route) ([]*routev3.Route, error) {
	matches := r.Matches
	if len(matches) == 0 {
		matches = []ir.Match{{}}
	}
	var rms []routeMatch
	for _, m := range matches {
		rms = append(rms, b.routeMatches(r, m)...)
	}
	var out []*routev3.Route
	for _, rm := range rms {
		route := &routev3.Route{
			Name:                    r.Name,
			Match:                   rm.match,
			RequestHeadersToAdd:     b.headersToAdd(r, r.RequestHeaders, true),
			RequestHeadersToRemove:  b.headersToRemove(r, r.RequestHeaders, true),
			ResponseHeadersToAdd:    b.headersToAdd(r, r.ResponseHeaders, false),
			ResponseHeadersToRemove: b.headersToRemove(r, r.ResponseHeaders, false),
		}
		switch {
		case r.DirectResponse != nil:
			route.Action = b.directResponse(r, r.DirectResponse.Status, r.DirectResponse.Body)
		case r.Redirect != nil:
			route.Action = &routev3.Route_Redirect{Redirect: b.redirect(r, rm.kind)}
		default:
			ra, dr, err := b.routeAction(port, r, rm.kind)
			if err != nil {
				return nil, err
			}
			if dr != nil {
				route.Action = dr
			} else {
				route.Action = &routev3.Route_Route{Route: ra}
				if r.Fault != nil {
					cfg, err := faultConfig(r.Fault)
					if err != nil {
						return nil, err
					}
					if len(r.Fault.Headers) > 0 {
						// Faults only for requests with these headers: a
						// route of their own, first, since grpc-go's fault
						// filter does not read the filter's own headers
						// field; Envoy reads it the same way.
						faulty := proto.CloneOf(route)
						for _, h := range r.Fault.Headers {
							faulty.Match.Headers = append(faulty.Match.Headers, &routev3.HeaderMatcher{
								Name:                 h.Name,
								HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exactString(h.Value)},
							})
						}
						faulty.TypedPerFilterConfig = map[string]*anypb.Any{faultFilterName: cfg}
						out = append(out, faulty)
					} else {
						route.TypedPerFilterConfig = map[string]*anypb.Any{faultFilterName: cfg}
					}
				}
			}
		}
		out = append(out, route)
	}
	return out, nil
}

func (b *builder) routeMatches(r *ir.Route, m ir.Match) []routeMatch {
	base := &routev3.RouteMatch{}
	for _, h := range m.Headers {
		sm, ok := b.stringMatcher(r, h)
		if !ok {
			return nil
		}
		base.Headers = append(base.Headers, &routev3.HeaderMatcher{
			Name:                 strings.ToLower(h.Name),
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm},
		})
	}
	if m.Method != "" {
		base.Headers = append(base.Headers, &routev3.HeaderMatcher{
			Name:                 ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exactString(m.Method)},
		})
	}
	for _, q := range m.QueryParams {
		sm, ok := b.stringMatcher(r, q)
		if !ok {
			return nil
		}
		base.QueryParameters = append(base.QueryParameters, &routev3.QueryParameterMatcher{
			Name:                         q.Name,
			QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm},
		})
	}
	with := func(kind pathKind, set func(*routev3.RouteMatch)) routeMatch {
		rm := proto.CloneOf(base)
		set(rm)
		return routeMatch{match: rm, kind: kind}
	}
	prefix := func(v string) func(*routev3.RouteMatch) {
		return func(rm *routev3.RouteMatch) { rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: v} }
	}
	exact := func(v string) func(*routev3.RouteMatch) {
		return func(rm *routev3.RouteMatch) { rm.PathSpecifier = &routev3.RouteMatch_Path{Path: v} }
	}
	p := m.Path
	if p == nil {
		return []routeMatch{with(pathAll, prefix("/"))}
	}
	if !b.checkText(r, "path", p.Value) {
		return nil
	}
	switch p.Type {
	case ir.PathExact:
		return []routeMatch{with(pathExact, exact(p.Value))}
	case ir.PathRegex:
		if !b.checkRegex(r, p.Value) {
			return nil
		}
		return []routeMatch{with(pathRegex, func(rm *routev3.RouteMatch) {
			rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: p.Value}}
		})}
	default:
		segment := strings.TrimRight(p.Value, "/")
		if segment == "" {
			return []routeMatch{with(pathAll, prefix("/"))}
		}
		return []routeMatch{
			with(pathSegment, exact(segment)),
			with(pathBelow, prefix(segment+"/")),
		}
	}
}

func (b *builder) stringMatcher(r *ir.Route, m ir.StringMatch) (*matcherv3.StringMatcher, bool) {
	if m.Name == "" || !validHeaderValue(m.Name) {
		b.problem(r.Source, ReasonInvalidValue, fmt.Sprintf("route %q matches a header or query parameter named %q; the match is left out", r.Name, m.Name))
		return nil, false
	}
	if m.Type == ir.MatchRegex {
		if !b.checkRegex(r, m.Value) {
			return nil, false
		}
		return regexString(m.Value), true
	}
	return exactString(m.Value), true
}

// checkRegex keeps a regular expression Envoy would reject (and so reject
// the whole route configuration) out of the configuration.
func (b *builder) checkRegex(r *ir.Route, re string) bool {
	if err := ir.CheckRegex(re); err != nil {
		b.problem(r.Source, ReasonInvalidRegex, fmt.Sprintf("route %q: regular expression %q: %v; the match is left out", r.Name, re, err))
		return false
	}
	return true
}

// checkText keeps a value with a line break or NUL, which Envoy refuses in
// paths and host names, out of the configuration.
func (b *builder) checkText(r *ir.Route, what, v string) bool {
	if validHeaderValue(v) {
		return true
	}
	b.problem(r.Source, ReasonInvalidValue, fmt.Sprintf("route %q has a %s with a line break or NUL; it is left out", r.Name, what))
	return false
}

func (b *builder) directResponse(r *ir.Route, status int, body string) *routev3.Route_DirectResponse {
	if status < 200 || status > 599 {
		b.problem(r.Source, ReasonInvalidValue, fmt.Sprintf("route %q answers with status %d, which is not 200-599; it answers 500 instead", r.Name, status))
		status = 500
	}
	dr := &routev3.DirectResponseAction{Status: uint32(status)}
	if body != "" {
		dr.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: body}}
	}
	return &routev3.Route_DirectResponse{DirectResponse: dr}
}

var redirectCodes = map[int]routev3.RedirectAction_RedirectResponseCode{
	301: routev3.RedirectAction_MOVED_PERMANENTLY,
	302: routev3.RedirectAction_FOUND,
	303: routev3.RedirectAction_SEE_OTHER,
	307: routev3.RedirectAction_TEMPORARY_REDIRECT,
	308: routev3.RedirectAction_PERMANENT_REDIRECT,
}

func (b *builder) redirect(r *ir.Route, kind pathKind) *routev3.RedirectAction {
	rd := r.Redirect
	out := &routev3.RedirectAction{}
	if b.checkText(r, "redirect hostname", rd.Hostname) {
		out.HostRedirect = rd.Hostname
	}
	if rd.Scheme != "" && b.checkText(r, "redirect scheme", rd.Scheme) {
		out.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: strings.ToLower(rd.Scheme)}
	}
	if rd.Port > 0 && rd.Port <= 65535 {
		out.PortRedirect = uint32(rd.Port)
	}
	code, ok := redirectCodes[rd.StatusCode]
	if !ok {
		if rd.StatusCode != 0 {
			b.problem(r.Source, ReasonInvalidValue, fmt.Sprintf("route %q redirects with status %d; 302 is used instead", r.Name, rd.StatusCode))
		}
		code = routev3.RedirectAction_FOUND
	}
	out.ResponseCode = code
	if p := rd.Path; p != nil {
		switch {
		case p.ReplaceFullPath != "":
			if b.checkText(r, "redirect path", p.ReplaceFullPath) {
				out.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: p.ReplaceFullPath}
			}
		case p.ReplacePrefixMatch != nil:
			if !b.checkText(r, "redirect prefix", *p.ReplacePrefixMatch) {
				break
			}
			if rw, ok := b.prefixRewrite(r, *p.ReplacePrefixMatch, kind); ok {
				out.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: rw}
			}
		}
	}
	return out
}

// prefixRewrite expresses "replace the matched prefix" on one of the routes
// a segment prefix match became, so that /foo → /bar turns /foo into /bar
// and /foo/x into /bar/x, and / → /v2 turns /x into /v2/x.
func (b *builder) prefixRewrite(r *ir.Route, replacement string, kind pathKind) (string, bool) {
	withSlash := replacement
	if !strings.HasSuffix(withSlash, "/") {
		withSlash += "/"
	}
	switch kind {
	case pathAll, pathBelow:
		return withSlash, true
	case pathSegment, pathExact:
		if replacement == "" {
			return "/", true
		}
		return replacement, true
	}
	b.problem(r.Source, ReasonInvalidValue, fmt.Sprintf("route %q replaces a prefix match but matches a regular expression; the rewrite is left out", r.Name))
	return "", false
}

// routeAction forwards to the route's backends, or answers directly when
// none of them can be used.
func (b *builder) routeAction(port *ir.Port, r *ir.Route, kind pathKind) (*routev3.RouteAction, *routev3.Route_DirectResponse, error) {
	ra := &routev3.RouteAction{}
	var backends []ir.Backend
	var total uint64
	for _, be := range r.Backends {
		if _, ok := b.index[be.Cluster]; !ok {
			b.problem(r.Source, ReasonUnknownBackend, fmt.Sprintf("route %q sends to cluster %q, which no Service port has; that backend is left out", r.Name, be.Cluster))
			continue
		}
		if be.Weight == 0 && len(r.Backends) > 1 {
			continue
		}
		total += uint64(max(be.Weight, 1))
		backends = append(backends, be)
	}
	switch {
	case len(backends) == 0:
		// The Gateway API answers 500 when no backend is usable.
		return nil, b.directResponse(r, 500, ""), nil
	case total > math.MaxUint32:
		b.problem(r.Source, ReasonInvalidValue, fmt.Sprintf("route %q has backend weights summing to %d, more than 2^32-1; it answers 500", r.Name, total))
		return nil, b.directResponse(r, 500, ""), nil
	case len(backends) == 1:
		ra.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: backends[0].Cluster}
	default:
		wc := &routev3.WeightedCluster{}
		for _, be := range backends {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: be.Cluster, Weight: u32(be.Weight)})
		}
		ra.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	ra.HashPolicy = b.hashPolicies(backends)

	if rw := r.Rewrite; rw != nil {
		if rw.Hostname != "" && b.checkText(r, "host rewrite", rw.Hostname) {
			ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: rw.Hostname}
		}
		if p := rw.Path; p != nil {
			switch {
			case !b.checkText(r, "path rewrite", p.ReplaceFullPath):
			case p.ReplacePrefixMatch != nil && !b.checkText(r, "path rewrite", *p.ReplacePrefixMatch):
			case p.ReplaceFullPath != "":
				ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
					Pattern:      &matcherv3.RegexMatcher{Regex: "^/.*$"},
					Substitution: p.ReplaceFullPath,
				}
			case p.ReplacePrefixMatch != nil:
				if s, ok := b.prefixRewrite(r, *p.ReplacePrefixMatch, kind); ok {
					ra.PrefixRewrite = s
				}
			}
		}
	}

	for _, m := range r.Mirrors {
		if _, ok := b.index[m.Cluster]; !ok {
			b.problem(r.Source, ReasonUnknownBackend, fmt.Sprintf("route %q mirrors to cluster %q, which no Service port has; the mirror is left out", r.Name, m.Cluster))
			continue
		}
		pct := clampPercent(m.Percent)
		if pct == 0 {
			continue
		}
		mp := &routev3.RouteAction_RequestMirrorPolicy{Cluster: m.Cluster}
		if pct < 100 {
			mp.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
				Numerator:   uint32(math.Round(pct * 10000)),
				Denominator: typev3.FractionalPercent_MILLION,
			}}
		}
		ra.RequestMirrorPolicies = append(ra.RequestMirrorPolicies, mp)
	}

	// Envoy's default route timeout (15s) would cut long polls and
	// streams; a mesh should not add a limit the application did not ask
	// for, so the timeout is off unless the model sets one.
	var timeout *ir.Duration
	if r.Timeout != nil && *r.Timeout > 0 {
		timeout = r.Timeout
	}
	rp, err := b.retryPolicy(port, r.Retry)
	if err != nil {
		return nil, nil, err
	}
	if bt := r.BackendTimeout; bt != nil && *bt > 0 {
		switch {
		case rp != nil:
			// Each try is one backend request; the tighter of the
			// route's and the RetryPolicy's bound holds.
			if rp.PerTryTimeout == nil || rp.GetPerTryTimeout().AsDuration() > bt.D() {
				rp.PerTryTimeout = dur(bt.D())
			}
		case timeout == nil || *timeout > *bt:
			// Without retries the one backend request is the request.
			timeout = bt
		}
	}
	if port.Protocol == ir.ProtocolGRPC {
		// For gRPC the limit is on the whole stream, and a shorter
		// grpc-timeout sent by the client still wins; gRPC clients read
		// the same fields and apply them as their deadline.
		ra.Timeout = dur(0)
		msd := &routev3.RouteAction_MaxStreamDuration{GrpcTimeoutHeaderMax: dur(0)}
		if timeout != nil {
			msd.MaxStreamDuration = dur(timeout.D())
			msd.GrpcTimeoutHeaderMax = dur(timeout.D())
		}
		ra.MaxStreamDuration = msd
	} else if timeout != nil {
		ra.Timeout = dur(timeout.D())
	} else {
		ra.Timeout = dur(0)
	}

	ra.RetryPolicy = rp
	return ra, nil, nil
}

// hashPolicies key consistent hashing for the backends that use a ring
// hash; Envoy ignores them for other clusters.
func (b *builder) hashPolicies(backends []ir.Backend) []*routev3.RouteAction_HashPolicy {
	var out []*routev3.RouteAction_HashPolicy
	for _, be := range backends {
		svc := b.index[be.Cluster].svc
		lb := svc.LoadBalancer
		if lb.Policy != ir.LBRingHash || lb.HashOn == nil {
			continue
		}
		var hp *routev3.RouteAction_HashPolicy
		switch h := lb.HashOn; {
		case h.Header != "" && validHeaderValue(h.Header):
			hp = &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
				Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: strings.ToLower(h.Header)},
			}}
		case h.Cookie != "":
			c := &routev3.RouteAction_HashPolicy_Cookie{Name: h.Cookie}
			if h.CookieTTL > 0 {
				// With a TTL Envoy sets the cookie when the client has
				// none, so a session sticks from its first request.
				c.Ttl = dur(h.CookieTTL.D())
				c.Path = "/"
			}
			hp = &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: c}}
		case h.SourceIP:
			hp = &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
				ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true},
			}}
		default:
			continue
		}
		if !slices.ContainsFunc(out, func(o *routev3.RouteAction_HashPolicy) bool { return proto.Equal(o, hp) }) {
			out = append(out, hp)
		}
	}
	return out
}

// retryPolicy is the route's retry policy. On HTTP and HTTP/2 ports a
// request is retried only when its method is idempotent unless the policy
// allows otherwise: retriable_request_headers holds one matcher that
// accepts every :method except POST, PATCH and CONNECT. On gRPC ports the
// gRPC retry conditions are safe for every call (the server did not
// process a call that failed with them), so no method check is added.
func (b *builder) retryPolicy(port *ir.Port, r *ir.Retry) (*routev3.RetryPolicy, error) {
	if r == nil || r.Attempts == 0 || len(r.RetryOn) == 0 {
		return nil, nil
	}
	on := slices.Clone(r.RetryOn)
	var codes []uint32
	for _, c := range r.RetriableStatusCodes {
		if c >= 100 && c <= 599 {
			codes = append(codes, c)
		}
	}
	if len(codes) > 0 && !slices.Contains(on, "retriable-status-codes") {
		on = append(on, "retriable-status-codes")
	}
	prev, err := b.previousHosts()
	if err != nil {
		return nil, err
	}
	rp := &routev3.RetryPolicy{
		RetryOn:                       strings.Join(on, ","),
		NumRetries:                    u32(r.Attempts),
		RetriableStatusCodes:          codes,
		RetryHostPredicate:            []*routev3.RetryPolicy_RetryHostPredicate{prev},
		HostSelectionRetryMaxAttempts: 3,
	}
	if r.PerTryTimeout > 0 {
		rp.PerTryTimeout = dur(r.PerTryTimeout.D())
	}
	if r.BaseInterval > 0 {
		bo := &routev3.RetryPolicy_RetryBackOff{BaseInterval: dur(r.BaseInterval.D())}
		if r.MaxInterval > 0 {
			bo.MaxInterval = dur(max(r.MaxInterval, r.BaseInterval).D())
		}
		rp.RetryBackOff = bo
	}
	if !r.NonIdempotent && port.Protocol != ir.ProtocolGRPC {
		rp.RetriableRequestHeaders = []*routev3.HeaderMatcher{{
			Name:                 ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: regexString(nonIdempotentMethods)},
			InvertMatch:          true,
		}}
	}
	return rp, nil
}

// previousHosts makes a retry pick another endpoint than the ones that
// already failed.
func (b *builder) previousHosts() (*routev3.RetryPolicy_RetryHostPredicate, error) {
	if b.prevHosts == nil {
		cfg, err := toAny(&previoushostsv3.PreviousHostsPredicate{})
		if err != nil {
			return nil, err
		}
		b.prevHosts = &routev3.RetryPolicy_RetryHostPredicate{
			Name:       "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: cfg},
		}
	}
	return b.prevHosts, nil
}

// headersToAdd translates set (overwrite) and add (append). Envoy refuses
// to modify pseudo-headers and Host this way, so those are left out.
func (b *builder) headersToAdd(r *ir.Route, hm *ir.HeaderModifier, request bool) []*corev3.HeaderValueOption {
	if hm == nil {
		return nil
	}
	var out []*corev3.HeaderValueOption
	add := func(hs []ir.Header, action corev3.HeaderValueOption_HeaderAppendAction) {
		for _, h := range hs {
			if !b.modifiable(r, h.Name, request) {
				continue
			}
			if !validHeaderValue(h.Value) {
				b.problem(r.Source, ReasonUnsupportedHeader, fmt.Sprintf("route %q sets header %q to a value with a line break or NUL; that change is left out", r.Name, h.Name))
				continue
			}
			out = append(out, &corev3.HeaderValueOption{
				Header:       &corev3.HeaderValue{Key: strings.ToLower(h.Name), Value: h.Value},
				AppendAction: action,
			})
		}
	}
	add(hm.Set, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)
	add(hm.Add, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)
	return out
}

func (b *builder) headersToRemove(r *ir.Route, hm *ir.HeaderModifier, request bool) []string {
	if hm == nil {
		return nil
	}
	var out []string
	for _, h := range hm.Remove {
		if b.modifiable(r, h, request) {
			out = append(out, strings.ToLower(h))
		}
	}
	return out
}

func (b *builder) modifiable(r *ir.Route, name string, request bool) bool {
	n := strings.ToLower(name)
	if n == "" || strings.HasPrefix(n, ":") || (request && n == "host") || !validHeaderValue(n) {
		b.problem(r.Source, ReasonUnsupportedHeader, fmt.Sprintf("route %q modifies header %q, which cannot be modified; that change is left out", r.Name, name))
		return false
	}
	return true
}
