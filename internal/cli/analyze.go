package cli

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ingest"
	"github.com/weft-mesh/weft/internal/ir"
	"github.com/weft-mesh/weft/internal/status"
	"github.com/weft-mesh/weft/internal/xds/translate"
)

// Severity of a finding: an error is what the controller would report as a
// condition that is not fine; a warning is what it would report as a
// Warning event on an object it does not own, or a note of the analysis.
type Severity string

const (
	Error   Severity = "Error"
	Warning Severity = "Warning"
)

// Finding is one thing the controller would tell about one object.
type Finding struct {
	Severity Severity `json:"severity"`
	// Object is "Kind namespace/name".
	Object string `json:"object"`
	// Parent is the route parent the condition is on, for routes.
	Parent    string `json:"parent,omitempty"`
	Condition string `json:"condition,omitempty"`
	Reason    string `json:"reason"`
	Message   string `json:"message"`
}

// Report is the outcome of an analysis.
type Report struct {
	Findings []Finding `json:"findings"`
	// Objects is how many objects Weft read.
	Objects int `json:"objects"`
}

// Errors counts the findings of severity Error.
func (r *Report) Errors() int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == Error {
			n++
		}
	}
	return n
}

// Analyze runs ingest, translation and status on the manifests, exactly as
// the controller does on a rebuild, and lists every condition that is not
// fine. No proxy is connected, so Programmed is not part of it.
func Analyze(m *Manifests, opts translate.Options) (*Report, error) {
	res := ingest.Build(&m.Bundle)
	prep, err := translate.Prepare(res.Mesh, opts)
	if err != nil {
		return nil, fmt.Errorf("translating: %w", err)
	}
	desired := status.Build(res, prep.Problems(), nil)
	r := &Report{Objects: count(&m.Bundle)}
	for _, st := range desired.Policies {
		for _, c := range st.Conditions {
			if bad(c) {
				r.Findings = append(r.Findings, Finding{Severity: severity(c), Object: object(st.Ref), Condition: c.Type, Reason: c.Reason, Message: c.Message})
			}
		}
	}
	for _, rs := range desired.Routes {
		for _, p := range rs.Parents {
			for _, c := range p.Conditions {
				if bad(c) {
					r.Findings = append(r.Findings, Finding{Severity: severity(c), Object: object(rs.Ref), Parent: parent(p.ParentRef.Kind, string(p.ParentRef.Name), p.ParentRef.Port), Condition: c.Type, Reason: c.Reason, Message: c.Message})
				}
			}
		}
	}
	for _, s := range res.SMITrafficSplits {
		if s.Ready.Status != metav1.ConditionTrue {
			r.Findings = append(r.Findings, Finding{Severity: Error, Object: object(s.Ref), Condition: "Ready", Reason: s.Ready.Reason, Message: s.Ready.Message})
		}
	}
	for _, w := range res.Warnings {
		r.Findings = append(r.Findings, Finding{Severity: Warning, Object: object(w.Ref), Reason: w.Reason, Message: w.Message})
	}
	for _, s := range m.Skipped {
		r.Findings = append(r.Findings, Finding{Severity: Warning, Object: s, Reason: "NotRead", Message: "Weft does not read this kind; it was left out of the analysis"})
	}
	slices.SortStableFunc(r.Findings, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(a.Severity, b.Severity), cmp.Compare(a.Object, b.Object), cmp.Compare(a.Parent, b.Parent), cmp.Compare(a.Condition, b.Condition))
	})
	return r, nil
}

// severity is Error but for what one kind of client does not do: the
// object works, that proxy kind does less.
func severity(c metav1.Condition) Severity {
	if c.Type == meshv1alpha1.ConditionProxylessCompatible {
		return Warning
	}
	return Error
}

// bad says whether a condition reports a problem: a positive condition
// that is not True, or PartiallyInvalid True.
func bad(c metav1.Condition) bool {
	if c.Type == "PartiallyInvalid" {
		return c.Status == metav1.ConditionTrue
	}
	if c.Type == meshv1alpha1.ConditionDegraded {
		return c.Status == metav1.ConditionTrue
	}
	return c.Status != metav1.ConditionTrue
}

func object(ref ir.ObjectRef) string {
	if ref.Namespace == "" {
		return ref.Kind + " " + ref.Name
	}
	return ref.Kind + " " + ref.Namespace + "/" + ref.Name
}

func parent(kind *gwKind, name string, port *gwPort) string {
	k := "Gateway"
	if kind != nil {
		k = string(*kind)
	}
	s := k + " " + name
	if port != nil {
		s += fmt.Sprintf(":%d", *port)
	}
	return s
}

func count(b *ingest.Bundle) int {
	return len(b.Namespaces) + len(b.Services) + len(b.EndpointSlices) + len(b.Pods) + len(b.TrafficSplits) + len(b.RetryPolicies) +
		len(b.CircuitBreakers) + len(b.MeshIdentities) + len(b.AccessPolicies) + len(b.FaultInjections) + len(b.RateLimitPolicies) + len(b.SMITrafficSplits) + len(b.HTTPRoutes) + len(b.GRPCRoutes) + len(b.TCPRoutes) + len(b.ReferenceGrants)
}

// InNamespace keeps the findings on objects of namespace ns (the analysis
// itself takes in every namespace: a route in one sends to Services in
// others).
func (r *Report) InNamespace(ns string) {
	r.Findings = slices.DeleteFunc(r.Findings, func(f Finding) bool {
		_, ref, _ := strings.Cut(f.Object, " ")
		objNS, _, namespaced := strings.Cut(ref, "/")
		return !namespaced || objNS != ns
	})
}
