package status

import (
	"cmp"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ingest"
	"github.com/weft-mesh/weft/internal/ir"
	"github.com/weft-mesh/weft/internal/xds/translate"
)

// Limits the API server enforces on what Build produces (metav1.Condition's
// and the CRDs' schemas), and the bound Build keeps messages to so that a
// condition stays readable.
const (
	// MaxConditions is the most conditions a Weft status or a route's
	// parent status may hold.
	MaxConditions = 8
	// MaxRouteParents is the most entries a route's status.parents may
	// hold, counting other controllers'.
	MaxRouteParents = 32
	// MaxMessage bounds a condition's message (the API allows 32768).
	MaxMessage    = 2048
	maxReason     = 1024
	maxTypeLength = 316
)

// Desired is the status Weft wants on every object it reports on.
type Desired struct {
	// Policies are the conditions of every TrafficSplit, RetryPolicy,
	// CircuitBreaker and AccessPolicy, in ingest's order.
	Policies []ingest.ObjectStatus
	// Routes are Weft's entries in every route's status.parents.
	Routes []ingest.RouteStatus
}

// Build works out every object's desired status. problems are what
// translation left out; programmed is each policy's and route's
// Programmed condition (absent: not known yet). The inputs are not modified.
func Build(res *ingest.Result, problems []translate.Problem, programmed map[ir.ObjectRef]metav1.Condition) Desired {
	bySource := map[ir.ObjectRef][]translate.Problem{}
	for _, p := range problems {
		bySource[p.Source] = append(bySource[p.Source], p)
	}
	out := Desired{
		Policies: make([]ingest.ObjectStatus, 0, len(res.Statuses)),
		Routes:   make([]ingest.RouteStatus, 0, len(res.Routes)),
	}
	for _, st := range res.Statuses {
		conds := slices.Clone(st.Conditions)
		for _, p := range bySource[st.Ref] {
			// The translator left part of the policy out: it is not (all)
			// in force.
			conds = append(conds,
				condition(meshv1alpha1.ConditionAccepted, metav1.ConditionFalse, p.Reason, p.Message, st.Generation),
				condition(meshv1alpha1.ConditionReady, metav1.ConditionFalse, p.Reason, p.Message, st.Generation))
		}
		if prog, ok := programmed[st.Ref]; ok && prog.Type != "" {
			conds = append(conds, prog)
			if prog.Status != metav1.ConditionTrue {
				conds = append(conds, condition(meshv1alpha1.ConditionReady, metav1.ConditionFalse, prog.Reason, prog.Message, st.Generation))
			}
		}
		out.Policies = append(out.Policies, ingest.ObjectStatus{Ref: st.Ref, Generation: st.Generation, Conditions: Merge(conds, st.Generation)})
	}
	for _, rs := range res.Routes {
		next := ingest.RouteStatus{Ref: rs.Ref, Generation: rs.Generation, Parents: make([]gwapiv1.RouteParentStatus, 0, len(rs.Parents))}
		dropped := routeProblems(bySource[rs.Ref])
		for _, p := range rs.Parents {
			conds := slices.Clone(p.Conditions)
			if dropped != "" {
				conds = append(conds, condition(string(gwapiv1.RouteConditionPartiallyInvalid), metav1.ConditionTrue, string(gwapiv1.RouteReasonUnsupportedValue), dropped, rs.Generation))
			}
			conds = Merge(conds, rs.Generation)
			accepted := false
			if a := findCondition(conds, string(gwapiv1.RouteConditionAccepted)); a != nil && a.Status == metav1.ConditionTrue {
				accepted = true
			}
			// Programmed says whether the proxies run what Weft made of
			// an accepted parent; a parent that is not accepted has
			// nothing programmed and gets no such condition.
			if prog, ok := programmed[rs.Ref]; ok && prog.Type != "" && accepted {
				conds = Merge(append(conds, prog), rs.Generation)
			}
			// The Gateway API sets PartiallyInvalid only on an accepted
			// route: a route that is not accepted is wholly invalid.
			if !accepted {
				conds = slices.DeleteFunc(conds, func(c metav1.Condition) bool {
					return c.Type == string(gwapiv1.RouteConditionPartiallyInvalid)
				})
			}
			// The API server refuses a parent entry without conditions.
			if len(conds) == 0 {
				conds = []metav1.Condition{condition(string(gwapiv1.RouteConditionAccepted), metav1.ConditionUnknown, meshv1alpha1.ReasonPending, "Weft has not decided on this parent yet", rs.Generation)}
			}
			p.Conditions = conds
			next.Parents = append(next.Parents, p)
		}
		if len(next.Parents) > MaxRouteParents {
			next.Parents = next.Parents[:MaxRouteParents]
		}
		out.Routes = append(out.Routes, next)
	}
	return out
}

// routeProblems is the PartiallyInvalid message for what translation left
// out of a route's rules, or empty.
func routeProblems(ps []translate.Problem) string {
	if len(ps) == 0 {
		return ""
	}
	msgs := make([]string, 0, len(ps))
	for _, p := range ps {
		msgs = append(msgs, p.Message)
	}
	// Gateway API: the message of a PartiallyInvalid condition whose rules
	// are dropped starts with "Dropped Rule".
	return "Dropped Rule content the proxy would refuse: " + strings.Join(msgs, "; ")
}

func condition(t string, s metav1.ConditionStatus, reason, msg string, gen int64) metav1.Condition {
	return metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen}
}

func findCondition(conds []metav1.Condition, t string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

// negative are the condition types whose True reports a problem.
var negative = map[string]bool{string(gwapiv1.RouteConditionPartiallyInvalid): true}

// severity ranks a condition's status: the one that reports a problem
// outranks the one that does not, Unknown sits between.
func severity(c metav1.Condition) int {
	switch c.Status {
	case metav1.ConditionUnknown:
		return 1
	case metav1.ConditionTrue:
		if negative[c.Type] {
			return 2
		}
		return 0
	default:
		if negative[c.Type] {
			return 0
		}
		return 2
	}
}

// Merge returns at most one condition of each type, sorted by type, each
// valid as the API server checks metav1.Condition, and at most
// MaxConditions of them. Of several conditions of one type the one that
// reports a problem wins (False over True, True over False for
// PartiallyInvalid); the messages of the winners are joined, duplicates
// dropped, and bounded to MaxMessage. observedGeneration is gen. The input
// is not modified; LastTransitionTime is left zero for the writer.
func Merge(conds []metav1.Condition, gen int64) []metav1.Condition {
	byType := map[string][]metav1.Condition{}
	for _, c := range conds {
		t := validType(c.Type)
		byType[t] = append(byType[t], c)
	}
	types := slices.Sorted(func(yield func(string) bool) {
		for t := range byType {
			if !yield(t) {
				return
			}
		}
	})
	if len(types) > MaxConditions {
		// Keep the most telling: problems first, then by type.
		slices.SortStableFunc(types, func(a, b string) int {
			return cmp.Compare(worst(byType[b]), worst(byType[a]))
		})
		types = types[:MaxConditions]
		slices.Sort(types)
	}
	out := make([]metav1.Condition, 0, len(types))
	for _, t := range types {
		group := byType[t]
		top := worst(group)
		var winner *metav1.Condition
		var msgs []string
		for i := range group {
			c := &group[i]
			if severity(*c) != top {
				continue
			}
			if winner == nil {
				winner = c
			}
			if c.Message != "" && !slices.Contains(msgs, c.Message) {
				msgs = append(msgs, c.Message)
			}
		}
		out = append(out, metav1.Condition{
			Type:               t,
			Status:             validStatus(winner.Status),
			Reason:             validReason(winner.Reason, winner.Status),
			Message:            boundMessage(msgs),
			ObservedGeneration: max(gen, 0),
		})
	}
	return out
}

func worst(group []metav1.Condition) int {
	w := 0
	for _, c := range group {
		w = max(w, severity(c))
	}
	return w
}

func validStatus(s metav1.ConditionStatus) metav1.ConditionStatus {
	switch s {
	case metav1.ConditionTrue, metav1.ConditionFalse:
		return s
	}
	return metav1.ConditionUnknown
}

// reasonPattern is metav1.Condition's schema pattern for reason.
var reasonPattern = regexp.MustCompile(`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`)

// validReason keeps a reason the API server accepts: characters it does
// not allow are dropped, and an empty result names the status instead.
func validReason(r string, s metav1.ConditionStatus) string {
	if len(r) <= maxReason && reasonPattern.MatchString(r) {
		return r
	}
	var b strings.Builder
	for _, c := range r {
		if c < utf8.RuneSelf && (c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			if b.Len() == 0 && (c < 'A' || c > 'z' || c == '_') {
				continue
			}
			b.WriteRune(c)
		}
	}
	out := b.String()
	if len(out) > maxReason {
		out = out[:maxReason]
	}
	if out == "" {
		return "Status" + string(validStatus(s))
	}
	return out
}

// validType keeps a condition type the API server accepts (a qualified
// name of at most 316 characters); Weft's own types always are.
func validType(t string) string {
	if len(t) <= maxTypeLength && len(validation.IsQualifiedName(t)) == 0 {
		return t
	}
	var b strings.Builder
	for _, c := range t {
		if c < utf8.RuneSelf && (c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			b.WriteRune(c)
		}
	}
	out := b.String()
	if len(out) > 63 {
		out = out[:63]
	}
	if out == "" {
		return "Invalid"
	}
	return out
}

// boundMessage joins messages with "; " and cuts the result to MaxMessage
// bytes at a character boundary, saying how many messages did not fit.
func boundMessage(msgs []string) string {
	joined := strings.Join(msgs, "; ")
	if len(joined) <= MaxMessage {
		return joined
	}
	// Find how many whole messages fit with the suffix.
	n, size := 0, 0
	for i, m := range msgs {
		add := len(m)
		if i > 0 {
			add += 2
		}
		if size+add > MaxMessage-40 {
			break
		}
		size += add
		n++
	}
	if n == 0 {
		cut := MaxMessage - 40
		for cut > 0 && !utf8.RuneStart(msgs[0][cut]) {
			cut--
		}
		if len(msgs) == 1 {
			return msgs[0][:cut] + "…"
		}
		return msgs[0][:cut] + "… and " + strconv.Itoa(len(msgs)-1) + " more"
	}
	return strings.Join(msgs[:n], "; ") + "; … and " + strconv.Itoa(len(msgs)-n) + " more"
}
