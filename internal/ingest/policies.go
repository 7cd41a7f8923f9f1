package ingest

import (
	"cmp"
	"fmt"
	"path"
	"slices"
	"strings"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/identity"
	"github.com/weft-mesh/weft/internal/ir"
)

// buildTrafficSplits turns each apex Service's split into a weighted route
// on each of its ports. Precedence on one apex, highest first: an HTTPRoute
// or GRPCRoute in the apex's namespace attached to the apex (routes say
// more), then Weft's TrafficSplit, then SMI's TrafficSplit; among splits of
// one kind the oldest wins. Every loser is told which object won.
func (s *state) buildTrafficSplits() {
	splits := slices.Clone(s.b.TrafficSplits)
	slices.SortFunc(splits, func(a, b *meshv1alpha1.TrafficSplit) int { return olderFirst(a, b) })
	winner := map[string]ir.ObjectRef{}
	for _, ts := range splits {
		in := splitInput{v: s.verdict("TrafficSplit", ts), namespace: ts.Namespace, service: ts.Spec.Service}
		for _, b := range ts.Spec.Backends {
			in.backends = append(in.backends, splitBackend{service: b.Service, weight: uint32(max(b.Weight, 0))})
		}
		s.applySplit(in, winner)
	}
	for _, in := range s.smiSplits() {
		s.applySplit(in, winner)
	}
}

// splitInput is a split of either kind, its weights already checked.
type splitInput struct {
	v                  *verdict
	namespace, service string
	backends           []splitBackend
}

type splitBackend struct {
	service string
	weight  uint32
}

// describe names an object as "Kind namespace/name", SMI's TrafficSplit
// the way kubectl does, as TrafficSplit.split.smi-spec.io.
func describe(ref ir.ObjectRef) string {
	return kindName(ref) + " " + ref.Namespace + "/" + ref.Name
}

func kindName(ref ir.ObjectRef) string {
	if ref.Group == SMIGroup {
		return ref.Kind + "." + ref.Group
	}
	return ref.Kind
}

// applySplit puts one split on its apex unless an earlier one holds it.
func (s *state) applySplit(in splitInput, winner map[string]ir.ObjectRef) {
	v := in.v
	if !v.accepted() {
		return
	}
	apexKey := in.namespace + "/" + in.service
	apex := s.services[apexKey]
	// A route on the apex outranks every split, so each is told of it.
	if apex != nil {
		if route := s.producerRouteOn(apex); route != nil {
			v.reject(meshv1alpha1.ReasonOverridden, "%s routes Service %s and takes precedence over TrafficSplits; put the weights in its backendRefs or delete it", describe(*route), in.service)
			return
		}
	}
	if w, ok := winner[apexKey]; ok {
		if w.Group == v.ref.Group {
			v.reject(meshv1alpha1.ReasonConflicted, "%s, created earlier, already splits Service %s; only the oldest %s of an apex Service is in effect", describe(w), in.service, kindName(w))
		} else {
			v.reject(meshv1alpha1.ReasonOverridden, "%s splits Service %s and takes precedence over SMI TrafficSplits; delete one of the two", describe(w), in.service)
		}
		return
	}
	winner[apexKey] = v.ref
	if apex == nil {
		v.unresolved(meshv1alpha1.ReasonTargetNotFound, "spec.service: Service %s/%s does not exist", in.namespace, in.service)
		return
	}
	total := uint64(0)
	var shares []string
	for _, p := range apex.ir.Ports {
		var backends []ir.Backend
		positive := 0
		for i, b := range in.backends {
			bs := s.services[in.namespace+"/"+b.service]
			if bs == nil {
				if p == apex.ir.Ports[0] {
					v.unresolved(meshv1alpha1.ReasonBackendNotFound, "spec.backends[%d].service: Service %s/%s does not exist", i, in.namespace, b.service)
				}
				continue
			}
			bp := bs.port(p.Port)
			if bp == nil {
				v.unresolved(meshv1alpha1.ReasonBackendNotFound, "spec.backends[%d].service: Service %s/%s has no port %d, which the apex Service has", i, in.namespace, b.service, p.Port)
				continue
			}
			// A backend at weight 0 stays in the route: it gets no
			// traffic, but a proxyless client keeps its cluster warm
			// for the step out of 0 (see translate.WarmRouteName).
			backends = append(backends, ir.Backend{Cluster: bp.Cluster, Weight: b.weight, Service: bs.ir.Source, Port: bp.Port})
			if p == apex.ir.Ports[0] {
				shares = append(shares, fmt.Sprintf("%s %d", b.service, b.weight))
			}
			if b.weight > 0 {
				total += uint64(b.weight)
				positive++
			}
		}
		if positive == 0 {
			continue // nothing valid on this port: the apex keeps its own endpoints
		}
		p.Routes = []*ir.Route{{Name: "split", Source: v.ref, Backends: backends}}
	}
	if total == 0 && v.resolvedReason == "" {
		v.unresolved(meshv1alpha1.ReasonBackendNotFound, "spec.backends: no backend with weight > 0 resolves")
	}
	v.readyMsg = fmt.Sprintf("Service %s/%s is split by weight: %s", in.namespace, in.service, strings.Join(shares, ", "))
}

// producerRouteOn returns a route in the Service's namespace attached to it.
func (s *state) producerRouteOn(st *service) *ir.ObjectRef {
	var best *ir.ObjectRef
	for _, p := range st.ir.Ports {
		t := s.tables[tableKey{service: st.ir.Key(), port: p.Port}]
		if t == nil || len(t.entries) == 0 {
			continue
		}
		ref := t.entries[0].route.Source
		if best == nil || compareRefs(ref, *best) < 0 {
			best = &ref
		}
	}
	return best
}

// httpTarget is the Service a request policy targets; when it does not
// exist, or has no port that carries requests, it says so on v (need says
// why the policy needs such a port) and returns nil.
func (s *state) httpTarget(v *verdict, ns, name, need string) *service {
	st := s.services[ns+"/"+name]
	if st == nil {
		v.unresolved(meshv1alpha1.ReasonTargetNotFound, "spec.targetRef: Service %s/%s does not exist", ns, name)
		return nil
	}
	if !slices.ContainsFunc(st.ir.Ports, func(p *ir.Port) bool { return p.Protocol.IsHTTP() }) {
		v.reject(meshv1alpha1.ReasonUnsupportedValue, "spec.targetRef: Service %s has no HTTP, HTTP2 or gRPC port; %s (name the port http-*, http2-* or grpc-*, or set appProtocol)", name, need)
		return nil
	}
	return st
}

// defaultRetryOn is what a RetryPolicy retries when retryOn is empty: the
// failures that happen before a server acted on the request.
var defaultRetryOn = []string{"cancelled", "connect-failure", "refused-stream", "retriable-status-codes", "unavailable"}

// buildRetryPolicies puts retry policies and timeouts on routes. A policy on
// a route beats one on the Service; of two on the same target the oldest
// wins. A route's own timeout beats the policy's.
func (s *state) buildRetryPolicies() {
	policies := slices.Clone(s.b.RetryPolicies)
	slices.SortFunc(policies, func(a, b *meshv1alpha1.RetryPolicy) int { return olderFirst(a, b) })
	winners := map[ir.ObjectRef]*meshv1alpha1.RetryPolicy{}
	type applied struct {
		policy *meshv1alpha1.RetryPolicy
		ref    ir.ObjectRef
		retry  *ir.Retry
		// order is the policy's place oldest first: of two route-level
		// budgets on one backend port the older wins.
		order int
	}
	var serviceLevel, routeLevel []applied
	for order, rp := range policies {
		v := s.verdict("RetryPolicy", rp)
		tr := rp.Spec.TargetRef
		target := ir.ObjectRef{Group: tr.Group, Kind: tr.Kind, Namespace: rp.Namespace, Name: tr.Name}
		if w, ok := winners[target]; ok {
			v.reject(meshv1alpha1.ReasonConflicted, "RetryPolicy %s, created earlier, already targets %s %s; only the oldest is in effect", w.Name, tr.Kind, tr.Name)
			continue
		}
		winners[target] = rp
		retry := retryFromSpec(v.ref, rp.Spec)
		switch tr.Kind {
		case "Service":
			st := s.httpTarget(v, rp.Namespace, tr.Name, "retries need one")
			if st == nil {
				continue
			}
			if ignored := retryFieldsProxylessIgnores(rp.Spec); len(ignored) > 0 && slices.ContainsFunc(st.ir.Ports, func(p *ir.Port) bool { return p.Protocol == ir.ProtocolGRPC || p.Protocol == ir.ProtocolHTTP2 }) {
				v.note(meshv1alpha1.ConditionProxylessCompatible, meshv1alpha1.ReasonUnsupportedByProxyless, fmt.Sprintf("proxyless gRPC clients of Service %s retry on gRPC statuses only (cancelled, deadline-exceeded, internal, resource-exhausted, unavailable), with no per-try timeout and no budget; they ignore %s (Envoy sidecars apply them)", tr.Name, strings.Join(ignored, "; ")))
			}
			serviceLevel = append(serviceLevel, applied{rp, target, retry, order})
			if rp.Spec.Budget != nil {
				for _, p := range st.ir.Ports {
					p.RetryBudget = retryBudget(v.ref, rp.Spec.Budget)
				}
			}
		default:
			if !s.routeExists(target) {
				v.unresolved(meshv1alpha1.ReasonTargetNotFound, "spec.targetRef: %s %s/%s does not exist or has no Service parent", tr.Kind, rp.Namespace, tr.Name)
				continue
			}
			routeLevel = append(routeLevel, applied{rp, target, retry, order})
		}
	}
	own := map[*ir.Route]bool{}
	for _, st := range s.services {
		for _, p := range st.ir.Ports {
			for _, r := range p.Routes {
				own[r] = r.Timeout != nil
			}
			for _, c := range p.ConsumerRoutes {
				for _, r := range c.Routes {
					own[r] = r.Timeout != nil
				}
			}
		}
	}
	bySvc := map[string][]applied{}
	for _, a := range serviceLevel {
		key := a.ref.Namespace + "/" + a.ref.Name
		bySvc[key] = append(bySvc[key], a)
	}
	byRoute := map[ir.ObjectRef][]applied{}
	for _, a := range routeLevel {
		byRoute[routeKey(a.ref)] = append(byRoute[routeKey(a.ref)], a)
	}
	budgetOrder := map[*ir.Port]int{}
	for _, st := range s.services {
		onService := bySvc[st.ir.Key()]
		st.eachHTTPRoute(func(r *ir.Route) {
			for _, a := range onService {
				applyRetry(r, a.retry, a.policy, own[r])
			}
			for _, a := range byRoute[routeKey(r.Source)] {
				applyRetry(r, a.retry, a.policy, own[r])
				if a.policy.Spec.Budget != nil {
					s.setBudgetOnBackends(r, retryBudget(a.retry.Source, a.policy.Spec.Budget), a.order, budgetOrder)
				}
			}
		})
	}
}

// eachHTTPRoute calls fn with every route of the Service's HTTP-family
// ports, its consumers' routes included: where request policies apply.
func (st *service) eachHTTPRoute(fn func(*ir.Route)) {
	for _, p := range st.ir.Ports {
		if !p.Protocol.IsHTTP() {
			continue
		}
		for _, r := range p.Routes {
			fn(r)
		}
		for _, c := range p.ConsumerRoutes {
			for _, r := range c.Routes {
				fn(r)
			}
		}
	}
}

// routeKey identifies the route object a model route came from, as a
// policy's targetRef names it.
func routeKey(ref ir.ObjectRef) ir.ObjectRef {
	return ir.ObjectRef{Kind: ref.Kind, Namespace: ref.Namespace, Name: ref.Name}
}

// setBudgetOnBackends puts a route-level retry budget on the route's
// backend ports, unless an older policy's budget is there already (order
// records whose each port has), so that the outcome does not depend on the
// order routes are visited in. A backend at weight 0 gets none of the
// route's calls, and so none of its budget.
func (s *state) setBudgetOnBackends(r *ir.Route, b *ir.RetryBudget, order int, have map[*ir.Port]int) {
	for _, be := range r.Backends {
		if be.Weight == 0 {
			continue
		}
		if st := s.services[be.Service.Namespace+"/"+be.Service.Name]; st != nil {
			if p := st.port(be.Port); p != nil {
				if o, ok := have[p]; ok && o <= order {
					continue
				}
				p.RetryBudget, have[p] = b, order
			}
		}
	}
}

// applyRetry sets the retry and timeout of a route. Route-level policies
// are applied after Service-level ones, so they win; a route's own
// timeouts.request (own) wins over any policy's timeout.
func applyRetry(r *ir.Route, retry *ir.Retry, rp *meshv1alpha1.RetryPolicy, own bool) {
	if r.Redirect != nil || r.DirectResponse != nil {
		return
	}
	rc := *retry
	r.Retry = &rc
	if rp.Spec.Timeout != nil && !own {
		d := ir.Duration(rp.Spec.Timeout.Duration)
		r.Timeout = &d
	}
}

func retryFromSpec(source ir.ObjectRef, spec meshv1alpha1.RetryPolicySpec) *ir.Retry {
	r := &ir.Retry{Source: source, Attempts: 2, NonIdempotent: spec.RetryNonIdempotent}
	if spec.Attempts != nil {
		r.Attempts = uint32(*spec.Attempts)
	}
	if spec.PerTryTimeout != nil {
		r.PerTryTimeout = ir.Duration(spec.PerTryTimeout.Duration)
	}
	for _, on := range spec.RetryOn {
		r.RetryOn = append(r.RetryOn, string(on))
	}
	if len(r.RetryOn) == 0 {
		r.RetryOn = slices.Clone(defaultRetryOn)
		r.RetriableStatusCodes = []uint32{503}
	}
	slices.Sort(r.RetryOn)
	r.RetryOn = slices.Compact(r.RetryOn)
	for _, c := range spec.RetriableStatusCodes {
		r.RetriableStatusCodes = append(r.RetriableStatusCodes, uint32(c))
	}
	slices.Sort(r.RetriableStatusCodes)
	r.RetriableStatusCodes = slices.Compact(r.RetriableStatusCodes)
	if b := spec.Backoff; b != nil {
		r.BaseInterval = ir.Duration(b.BaseInterval.Duration)
		if b.MaxInterval != nil {
			r.MaxInterval = ir.Duration(b.MaxInterval.Duration)
		}
	}
	return r
}

func retryBudget(source ir.ObjectRef, b *meshv1alpha1.RetryBudget) *ir.RetryBudget {
	out := &ir.RetryBudget{Source: source, Percent: float64(cmp.Or(b.Percent, 20)), MinRetryConcurrency: 3}
	if b.MinRetryConcurrency != nil {
		out.MinRetryConcurrency = uint32(*b.MinRetryConcurrency)
	}
	return out
}

func (s *state) routeExists(ref ir.ObjectRef) bool {
	if s.routeIndex == nil {
		s.routeIndex = map[ir.ObjectRef]bool{}
		for _, r := range s.routes {
			s.routeIndex[ir.ObjectRef{Kind: r.Ref.Kind, Namespace: r.Ref.Namespace, Name: r.Ref.Name}] = true
		}
	}
	return s.routeIndex[ir.ObjectRef{Kind: ref.Kind, Namespace: ref.Namespace, Name: ref.Name}]
}

// buildCircuitBreakers sets connection limits and outlier detection on
// Service ports. A policy on one port beats one on the whole Service; of two
// on the same port the oldest wins.
func (s *state) buildCircuitBreakers() {
	cbs := slices.Clone(s.b.CircuitBreakers)
	// Port-specific policies first, so that they claim their port before a
	// Service-wide one does.
	slices.SortFunc(cbs, func(a, b *meshv1alpha1.CircuitBreaker) int {
		pa, pb := a.Spec.TargetRef.Port != nil, b.Spec.TargetRef.Port != nil
		if pa != pb {
			if pa {
				return -1
			}
			return 1
		}
		return olderFirst(a, b)
	})
	claimedBy := map[string]ir.ObjectRef{}
	for _, cb := range cbs {
		v := s.verdict("CircuitBreaker", cb)
		st := s.services[cb.Namespace+"/"+cb.Spec.TargetRef.Name]
		if st == nil {
			v.unresolved(meshv1alpha1.ReasonTargetNotFound, "spec.targetRef: Service %s/%s does not exist", cb.Namespace, cb.Spec.TargetRef.Name)
			continue
		}
		ports := st.ir.Ports
		if tp := cb.Spec.TargetRef.Port; tp != nil {
			p := st.port(*tp)
			if p == nil {
				v.unresolved(meshv1alpha1.ReasonTargetNotFound, "spec.targetRef.port: Service %s has no TCP port %d", st.ir.Name, *tp)
				continue
			}
			ports = []*ir.Port{p}
		}
		irc := circuitBreaker(v.ref, cb.Spec)
		applied := 0
		grpcPorts := false
		var conflicts []string
		for _, p := range ports {
			key := p.Cluster
			if owner, ok := claimedBy[key]; ok {
				if cb.Spec.TargetRef.Port != nil {
					conflicts = append(conflicts, fmt.Sprintf("port %d is limited by CircuitBreaker %s, created earlier", p.Port, owner.Name))
				}
				continue
			}
			claimedBy[key] = v.ref
			p.CircuitBreaker = irc
			applied++
			grpcPorts = grpcPorts || p.Protocol == ir.ProtocolGRPC || p.Protocol == ir.ProtocolHTTP2
		}
		if ignored := breakerFieldsProxylessIgnores(cb.Spec); applied > 0 && grpcPorts && len(ignored) > 0 {
			v.note(meshv1alpha1.ConditionProxylessCompatible, meshv1alpha1.ReasonUnsupportedByProxyless, fmt.Sprintf("proxyless gRPC clients of Service %s apply maxRequests and outlierDetection.failurePercentage only; they ignore %s (Envoy sidecars apply every field)", st.ir.Name, strings.Join(ignored, ", ")))
		}
		if applied == 0 {
			if len(conflicts) == 0 {
				conflicts = append(conflicts, "every port of the Service is limited by older or port-specific CircuitBreakers")
			}
			v.reject(meshv1alpha1.ReasonConflicted, "%s", strings.Join(conflicts, "; "))
		}
	}
}

// breakerFieldsProxylessIgnores names the fields set that grpc-go's xDS
// client does not apply (it reads max_requests and failure-percentage
// ejection only).
func breakerFieldsProxylessIgnores(spec meshv1alpha1.CircuitBreakerSpec) []string {
	var out []string
	add := func(set bool, field string) {
		if set {
			out = append(out, "spec."+field)
		}
	}
	add(spec.MaxConnections != nil, "maxConnections")
	add(spec.MaxPendingRequests != nil, "maxPendingRequests")
	add(spec.MaxRetries != nil, "maxRetries")
	add(spec.ConnectTimeout != nil, "connectTimeout")
	add(spec.IdleTimeout != nil, "idleTimeout")
	if od := spec.OutlierDetection; od != nil {
		add(od.Consecutive5xxErrors != nil, "outlierDetection.consecutive5xxErrors")
		add(od.ConsecutiveGatewayErrors != nil, "outlierDetection.consecutiveGatewayErrors")
	}
	return out
}

// retryFieldsProxylessIgnores names the RetryPolicy fields set that
// grpc-go's xDS retries do not apply: it retries on gRPC status
// conditions only, with no per-try timeout and no budget.
func retryFieldsProxylessIgnores(spec meshv1alpha1.RetryPolicySpec) []string {
	var out []string
	if spec.PerTryTimeout != nil {
		out = append(out, "spec.perTryTimeout")
	}
	if spec.Budget != nil {
		out = append(out, "spec.budget")
	}
	if len(spec.RetriableStatusCodes) > 0 {
		out = append(out, "spec.retriableStatusCodes")
	}
	var conds []string
	for _, c := range spec.RetryOn {
		switch c {
		case "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable":
		default:
			conds = append(conds, string(c))
		}
	}
	if len(conds) > 0 {
		out = append(out, "spec.retryOn "+strings.Join(conds, ", "))
	}
	return out
}

func circuitBreaker(source ir.ObjectRef, spec meshv1alpha1.CircuitBreakerSpec) *ir.CircuitBreaker {
	u := func(p *int32) *uint32 {
		if p == nil {
			return nil
		}
		v := uint32(*p)
		return &v
	}
	out := &ir.CircuitBreaker{
		Source:             source,
		MaxConnections:     u(spec.MaxConnections),
		MaxPendingRequests: u(spec.MaxPendingRequests),
		MaxRequests:        u(spec.MaxRequests),
		MaxRetries:         u(spec.MaxRetries),
	}
	if spec.ConnectTimeout != nil {
		out.ConnectTimeout = ir.Duration(spec.ConnectTimeout.Duration)
	}
	if spec.IdleTimeout != nil {
		out.IdleTimeout = ir.Duration(spec.IdleTimeout.Duration)
	}
	if od := spec.OutlierDetection; od != nil {
		o := &ir.OutlierDetection{
			Consecutive5xx:     u(od.Consecutive5xxErrors),
			ConsecutiveGateway: u(od.ConsecutiveGatewayErrors),
			Interval:           ir.Duration(10e9),
			BaseEjectionTime:   ir.Duration(30e9),
			MaxEjectionPercent: 10,
		}
		if od.Interval != nil {
			o.Interval = ir.Duration(od.Interval.Duration)
		}
		if od.BaseEjectionTime != nil {
			o.BaseEjectionTime = ir.Duration(od.BaseEjectionTime.Duration)
		}
		if od.MaxEjectionPercent != nil {
			o.MaxEjectionPercent = uint32(*od.MaxEjectionPercent)
		}
		if fp := od.FailurePercentage; fp != nil {
			o.FailurePercentage = &ir.FailurePercentage{
				Threshold:     uint32(fp.Threshold),
				MinimumHosts:  uint32(cmp.Or(fp.MinimumHosts, 5)),
				RequestVolume: uint32(cmp.Or(fp.RequestVolume, 50)),
			}
		}
		out.Outlier = o
	}
	return out
}

// buildAccessPolicies compiles AccessPolicies into SPIFFE principals on
// their Service. Deny policies are checked first; any Allow policy on a
// Service denies every caller no Allow policy lists.
func (s *state) buildAccessPolicies() {
	aps := slices.Clone(s.b.AccessPolicies)
	slices.SortFunc(aps, func(a, b *meshv1alpha1.AccessPolicy) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	for _, ap := range aps {
		v := s.verdict("AccessPolicy", ap)
		st := s.services[ap.Namespace+"/"+ap.Spec.TargetRef.Name]
		if st == nil {
			v.unresolved(meshv1alpha1.ReasonTargetNotFound, "spec.targetRef: Service %s/%s does not exist", ap.Namespace, ap.Spec.TargetRef.Name)
			continue
		}
		if st.ir.MTLS == ir.MTLSDisabled {
			v.degrade(meshv1alpha1.ReasonMTLSDisabled, "no MeshIdentity selects namespace %s, so callers have no verified identity: Allow rules with callers match nobody until mTLS is on", ap.Namespace)
		}
		out := &ir.AccessPolicy{Source: v.ref, Action: ir.AccessAllow}
		if ap.Spec.Action == meshv1alpha1.ActionDeny {
			out.Action = ir.AccessDeny
		}
		for i, rule := range ap.Spec.Rules {
			r := ir.AccessRule{}
			for _, f := range rule.From {
				switch {
				case f.ServiceAccount != nil:
					ns := cmp.Or(f.ServiceAccount.Namespace, ap.Namespace)
					r.Principals = append(r.Principals, ir.Principal{Exact: identity.SpiffeID(s.trustDomain(ns), ns, f.ServiceAccount.Name)})
				case f.Namespace != nil:
					r.Principals = append(r.Principals, ir.Principal{Prefix: fmt.Sprintf("spiffe://%s/ns/%s/sa/", s.trustDomain(*f.Namespace), *f.Namespace)})
				case f.Identity != nil:
					r.Principals = append(r.Principals, ir.Principal{Exact: *f.Identity})
				}
			}
			for j, to := range rule.To {
				for _, port := range to.Ports {
					targets := st.resolveTargetPort(port)
					if len(targets) == 0 {
						v.unresolved(meshv1alpha1.ReasonTargetNotFound, "spec.rules[%d].to[%d].ports: Service %s has no port %d with endpoints", i, j, st.ir.Name, port)
					}
					for _, t := range targets {
						r.Ports = append(r.Ports, uint32(t))
					}
				}
				for _, m := range to.Methods {
					r.Methods = append(r.Methods, string(m))
				}
				for k, p := range to.Paths {
					if n := NormalizePath(p); n != p {
						// Admission refuses these; one that got in anyway
						// (stored before the rule, or analysed offline) is
						// matched in the form requests arrive in, so a
						// Deny still fires.
						v.degrade(meshv1alpha1.ReasonPathNotNormalized, "spec.rules[%d].to[%d].paths[%d]: %q is matched as %q: the proxy normalises request paths (merges //, resolves . and .., decodes %%2E, %%2F and %%5C) before matching; write %q", i, j, k, p, n, n)
						p = n
					}
					if prefix, ok := strings.CutSuffix(p, "*"); ok {
						r.Paths = append(r.Paths, ir.PathPattern{Prefix: prefix})
					} else {
						r.Paths = append(r.Paths, ir.PathPattern{Exact: p})
					}
				}
			}
			sortRule(&r)
			out.Rules = append(out.Rules, r)
		}
		st.ir.AccessPolicies = append(st.ir.AccessPolicies, out)
	}
	for _, st := range s.services {
		sortAccessPolicies(st.ir.AccessPolicies)
	}
}

func sortRule(r *ir.AccessRule) {
	slices.SortFunc(r.Principals, func(a, b ir.Principal) int {
		return cmp.Or(strings.Compare(a.Exact, b.Exact), strings.Compare(a.Prefix, b.Prefix))
	})
	r.Principals = slices.Compact(r.Principals)
	slices.Sort(r.Ports)
	r.Ports = slices.Compact(r.Ports)
	slices.Sort(r.Methods)
	r.Methods = slices.Compact(r.Methods)
	slices.SortFunc(r.Paths, func(a, b ir.PathPattern) int {
		return cmp.Or(strings.Compare(a.Exact, b.Exact), strings.Compare(a.Prefix, b.Prefix))
	})
	r.Paths = slices.Compact(r.Paths)
}

func sortAccessPolicies(aps []*ir.AccessPolicy) {
	slices.SortFunc(aps, func(a, b *ir.AccessPolicy) int {
		if a.Action != b.Action {
			if a.Action == ir.AccessDeny {
				return -1
			}
			return 1
		}
		return compareRefs(a.Source, b.Source)
	})
}

// resolveTargetPort maps a Service port to the container ports it reaches.
func (st *service) resolveTargetPort(port int32) []int32 {
	sp, ok := st.specPort(port)
	if !ok {
		return nil
	}
	if sp.TargetPort.IntValue() > 0 {
		return []int32{int32(sp.TargetPort.IntValue())}
	}
	if sp.TargetPort.StrVal == "" {
		return []int32{port}
	}
	return st.targetPorts[port]
}

// NormalizePath is an AccessPolicy path as the proxy sees requests for it:
// %2E, %2F and %5C decoded (the inbound listener unescapes slashes), a
// backslash read as a slash, slashes merged and dot segments resolved. A
// trailing "*" (a prefix) and a trailing slash are kept.
func NormalizePath(p string) string {
	body, star := strings.CutSuffix(p, "*")
	r := strings.NewReplacer("%2e", ".", "%2E", ".", "%2f", "/", "%2F", "/", "%5c", "/", "%5C", "/", "\\", "/")
	body = r.Replace(body)
	trailing := strings.HasSuffix(body, "/") || strings.HasSuffix(body, "/.") || strings.HasSuffix(body, "/..")
	clean := path.Clean("/" + body)
	if trailing && clean != "/" {
		clean += "/"
	}
	if star {
		clean += "*"
	}
	return clean
}
