package ingest

import (
	"fmt"
	"slices"
	"strings"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ir"
)

// faultByName finds a FaultInjection for a route rule's ExtensionRef.
func (s *state) faultByName(ns, name string) *meshv1alpha1.FaultInjection {
	if s.faultIndex == nil {
		s.faultIndex = make(map[string]*meshv1alpha1.FaultInjection, len(s.b.FaultInjections))
		for _, fi := range s.b.FaultInjections {
			s.faultIndex[fi.Namespace+"/"+fi.Name] = fi
		}
	}
	return s.faultIndex[ns+"/"+name]
}

// faultFromSpec is the model of a FaultInjection's faults.
func faultFromSpec(fi *meshv1alpha1.FaultInjection, rule bool) *ir.Fault {
	f := &ir.Fault{
		Source: ir.ObjectRef{Group: meshv1alpha1.GroupVersion.Group, Kind: "FaultInjection", Namespace: fi.Namespace, Name: fi.Name},
		Rule:   rule,
	}
	pct := func(p *int32) uint32 {
		if p == nil {
			return 100
		}
		return uint32(*p)
	}
	if d := fi.Spec.Delay; d != nil {
		f.Delay = &ir.FaultDelay{Fixed: ir.Duration(d.Fixed.Duration), Percent: pct(d.Percent)}
	}
	if a := fi.Spec.Abort; a != nil {
		f.Abort = &ir.FaultAbort{Percent: pct(a.Percent)}
		switch {
		case a.HTTPStatus != nil:
			f.Abort.HTTPStatus = uint32(*a.HTTPStatus)
		case a.GRPCStatus != nil:
			code := meshv1alpha1.GRPCStatusCodes[*a.GRPCStatus]
			f.Abort.GRPCStatus = &code
		}
	}
	for _, h := range fi.Spec.Headers {
		f.Headers = append(f.Headers, ir.Header{Name: strings.ToLower(h.Name), Value: h.Value})
	}
	slices.SortFunc(f.Headers, func(a, b ir.Header) int { return strings.Compare(a.Name, b.Name) })
	return f
}

// extensionFault resolves a route rule's ExtensionRef filter to a
// FaultInjection of the route's namespace; it returns a message when it
// cannot.
func (s *state) extensionFault(obj routeObject, r *ir.Route, group, kind, name string) string {
	if group != meshv1alpha1.GroupVersion.Group || kind != "FaultInjection" {
		return fmt.Sprintf("extensionRef %s/%s is not a kind Weft knows; the only extension filter is group %s, kind FaultInjection", group, kind, meshv1alpha1.GroupVersion.Group)
	}
	fi := s.faultByName(obj.ref.Namespace, name)
	if fi == nil {
		return fmt.Sprintf("extensionRef: FaultInjection %s/%s does not exist", obj.ref.Namespace, name)
	}
	if r.Redirect != nil || r.DirectResponse != nil {
		return "extensionRef: a FaultInjection needs a rule that sends to backends"
	}
	r.Fault = faultFromSpec(fi, true)
	if s.faultRules == nil {
		s.faultRules = map[string][]string{}
	}
	key := fi.Namespace + "/" + fi.Name
	user := obj.ref.Kind + " " + obj.ref.Name
	if !slices.Contains(s.faultRules[key], user) {
		s.faultRules[key] = append(s.faultRules[key], user)
	}
	return ""
}

// buildFaultInjections puts FaultInjections on the routes they target. A
// rule that names one in an ExtensionRef filter keeps it; otherwise a
// policy on the route beats one on the Service. Of two on the same target
// the oldest wins.
func (s *state) buildFaultInjections() {
	fis := slices.Clone(s.b.FaultInjections)
	slices.SortFunc(fis, func(a, b *meshv1alpha1.FaultInjection) int { return olderFirst(a, b) })
	winners := map[ir.ObjectRef]*meshv1alpha1.FaultInjection{}
	bySvc := map[string]*ir.Fault{}
	byRoute := map[ir.ObjectRef]*ir.Fault{}
	for _, fi := range fis {
		v := s.verdict("FaultInjection", fi)
		users := s.faultRules[fi.Namespace+"/"+fi.Name]
		v.readyMsg = describeFault(fi)
		tr := fi.Spec.TargetRef
		if tr == nil {
			if len(users) == 0 {
				v.degrade(meshv1alpha1.ReasonNotAttached, "no spec.targetRef, and no route rule names it in an ExtensionRef filter: it applies to no request")
				continue
			}
			v.readyMsg += "; named by " + strings.Join(users, ", ")
			continue
		}
		target := ir.ObjectRef{Group: tr.Group, Kind: tr.Kind, Namespace: fi.Namespace, Name: tr.Name}
		if w, ok := winners[target]; ok {
			v.reject(meshv1alpha1.ReasonConflicted, "FaultInjection %s, created earlier, already targets %s %s; only the oldest is in effect", w.Name, tr.Kind, tr.Name)
			continue
		}
		winners[target] = fi
		f := faultFromSpec(fi, false)
		switch tr.Kind {
		case "Service":
			if s.httpTarget(v, fi.Namespace, tr.Name, "faults are injected into requests, so they need one") == nil {
				continue
			}
			bySvc[fi.Namespace+"/"+tr.Name] = f
		default:
			if !s.routeExists(target) {
				v.unresolved(meshv1alpha1.ReasonTargetNotFound, "spec.targetRef: %s %s/%s does not exist or has no Service parent", tr.Kind, fi.Namespace, tr.Name)
				continue
			}
			byRoute[routeKey(target)] = f
		}
		if len(users) > 0 {
			v.readyMsg += "; also named by " + strings.Join(users, ", ")
		}
	}
	if len(bySvc) == 0 && len(byRoute) == 0 {
		return
	}
	// A policy on the route beats one on the Service; neither replaces
	// the rule's own.
	set := func(r *ir.Route, f *ir.Fault) {
		if f == nil || r.Redirect != nil || r.DirectResponse != nil || (r.Fault != nil && r.Fault.Rule) {
			return
		}
		r.Fault = f
	}
	for _, st := range s.services {
		onService := bySvc[st.ir.Key()]
		st.eachHTTPRoute(func(r *ir.Route) {
			set(r, onService)
			set(r, byRoute[routeKey(r.Source)])
		})
	}
}

// describeFault says what a FaultInjection does, for its Ready message.
func describeFault(fi *meshv1alpha1.FaultInjection) string {
	var parts []string
	pct := func(p *int32) int32 {
		if p == nil {
			return 100
		}
		return *p
	}
	if d := fi.Spec.Delay; d != nil {
		parts = append(parts, fmt.Sprintf("delays %d%% of requests by %s", pct(d.Percent), d.Fixed.Duration))
	}
	if a := fi.Spec.Abort; a != nil {
		status := ""
		switch {
		case a.HTTPStatus != nil:
			status = fmt.Sprintf("HTTP %d", *a.HTTPStatus)
		case a.GRPCStatus != nil:
			status = "gRPC " + string(*a.GRPCStatus)
		}
		parts = append(parts, fmt.Sprintf("aborts %d%% with %s", pct(a.Percent), status))
	}
	msg := strings.Join(parts, " and ")
	if len(fi.Spec.Headers) > 0 {
		var hs []string
		for _, h := range fi.Spec.Headers {
			hs = append(hs, h.Name+": "+h.Value)
		}
		msg += " carrying " + strings.Join(hs, ", ")
	}
	return msg
}
