package translate

import (
	"fmt"
	"slices"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetworkv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/weft-mesh/weft/internal/ir"
)

const (
	httpRBACDeny     = "weft.rbac.deny"
	httpRBACAllow    = "weft.rbac.allow"
	networkRBACDeny  = "weft.rbac.deny"
	networkRBACAllow = "weft.rbac.allow"
)

// accessRules turns the access policies of an inbound port into RBAC rule
// sets: deny (nil without Deny policies) is checked first, then allow (nil
// without Allow policies). An allow set with no policies is kept: once any
// Allow policy protects a port, a caller no rule names is refused.
//
// Each chain serves one port, so a rule's Ports are decided here: a rule
// naming other ports is left out of this port's rules, and one naming this
// port needs no port condition.
//
// On a TCP port nothing is known about methods and paths. A Deny rule
// keeps its callers and ports and drops its HTTP conditions (it refuses
// more, never less); an Allow rule with HTTP conditions is dropped (it
// allows less, never more).
func (b *builder) accessRules(ip *ir.InboundPort, http bool) (deny, allow *rbacconfigv3.RBAC) {
	for _, ap := range ip.AccessPolicies {
		if ap == nil {
			continue
		}
		set := &deny
		action := rbacconfigv3.RBAC_DENY
		if ap.Action != ir.AccessDeny {
			set, action = &allow, rbacconfigv3.RBAC_ALLOW
		}
		if *set == nil {
			*set = &rbacconfigv3.RBAC{Action: action, Policies: map[string]*rbacconfigv3.Policy{}}
		}
		for i, rule := range ap.Rules {
			if len(rule.Ports) > 0 && !slices.Contains(rule.Ports, uint32(ip.Port)) {
				continue
			}
			httpOnly := len(rule.Methods) > 0 || len(rule.Paths) > 0
			if !http && httpOnly && ap.Action != ir.AccessDeny {
				continue
			}
			policy, ok := b.rbacPolicy(ap, rule, http)
			if !ok {
				continue
			}
			(*set).Policies[fmt.Sprintf("%s/%s/rule-%d", ap.Source.Namespace, ap.Source.Name, i)] = policy
		}
	}
	return deny, allow
}

func (b *builder) rbacPolicy(ap *ir.AccessPolicy, rule ir.AccessRule, http bool) (*rbacconfigv3.Policy, bool) {
	p := &rbacconfigv3.Policy{}
	for _, pr := range rule.Principals {
		var sm *matcherv3.StringMatcher
		switch {
		case pr.Exact != "":
			sm = exactString(pr.Exact)
		case pr.Prefix != "":
			sm = prefixString(pr.Prefix)
		default:
			continue
		}
		p.Principals = append(p.Principals, &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Authenticated_{
			Authenticated: &rbacconfigv3.Principal_Authenticated{PrincipalName: sm},
		}})
	}
	if len(rule.Principals) > 0 && len(p.Principals) == 0 {
		b.problem(ap.Source, ReasonInvalidValue, "a rule names callers, none of them with an exact or prefix SPIFFE ID; the rule is left out")
		return nil, false
	}
	if len(p.Principals) == 0 {
		p.Principals = []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_Any{Any: true}}}
	}

	var and []*rbacconfigv3.Permission
	if http {
		var methods, paths []*rbacconfigv3.Permission
		for _, m := range rule.Methods {
			if m == "" {
				continue
			}
			methods = append(methods, &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Header{Header: &routev3.HeaderMatcher{
				Name:                 ":method",
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exactString(m)},
			}}})
		}
		for _, pp := range rule.Paths {
			var sm *matcherv3.StringMatcher
			switch {
			case pp.Exact != "":
				sm = exactString(pp.Exact)
			case pp.Prefix != "":
				sm = prefixString(pp.Prefix)
			default:
				continue
			}
			paths = append(paths, &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
				Rule: &matcherv3.PathMatcher_Path{Path: sm},
			}}})
		}
		if (len(rule.Methods) > 0 && len(methods) == 0) || (len(rule.Paths) > 0 && len(paths) == 0) {
			b.problem(ap.Source, ReasonInvalidValue, "a rule lists methods or paths that are all empty; the rule is left out")
			return nil, false
		}
		if len(methods) > 0 {
			and = append(and, anyOf(methods))
		}
		if len(paths) > 0 {
			and = append(and, anyOf(paths))
		}
	}
	switch len(and) {
	case 0:
		p.Permissions = []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_Any{Any: true}}}
	case 1:
		p.Permissions = and
	default:
		p.Permissions = []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_AndRules{AndRules: &rbacconfigv3.Permission_Set{Rules: and}}}}
	}
	return p, true
}

func anyOf(ps []*rbacconfigv3.Permission) *rbacconfigv3.Permission {
	if len(ps) == 1 {
		return ps[0]
	}
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_OrRules{OrRules: &rbacconfigv3.Permission_Set{Rules: ps}}}
}

// httpRBACFilters are the HTTP filters that enforce the port's policies,
// deny first.
func (b *builder) httpRBACFilters(ip *ir.InboundPort) ([]*hcmv3.HttpFilter, error) {
	deny, allow := b.accessRules(ip, true)
	var out []*hcmv3.HttpFilter
	for _, r := range []struct {
		name  string
		rules *rbacconfigv3.RBAC
	}{{httpRBACDeny, deny}, {httpRBACAllow, allow}} {
		if r.rules == nil {
			continue
		}
		cfg, err := toAny(&rbachttpv3.RBAC{Rules: r.rules})
		if err != nil {
			return nil, err
		}
		out = append(out, &hcmv3.HttpFilter{Name: r.name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: cfg}})
	}
	return out, nil
}

// networkRBACFilters are the network filters that enforce the port's
// policies on a TCP port, deny first.
func (b *builder) networkRBACFilters(ip *ir.InboundPort, statPrefix string) ([]*listenerv3.Filter, error) {
	deny, allow := b.accessRules(ip, false)
	var out []*listenerv3.Filter
	for _, r := range []struct {
		name  string
		rules *rbacconfigv3.RBAC
	}{{networkRBACDeny, deny}, {networkRBACAllow, allow}} {
		if r.rules == nil {
			continue
		}
		cfg, err := toAny(&rbacnetworkv3.RBAC{Rules: r.rules, StatPrefix: statPrefix + "." + r.name + "."})
		if err != nil {
			return nil, err
		}
		out = append(out, &listenerv3.Filter{Name: r.name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: cfg}})
	}
	return out, nil
}
