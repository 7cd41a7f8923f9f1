package ingest

import (
	"fmt"
	"math"
	"slices"
	"strconv"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ir"
)

// SMIGroup is the API group of SMI's TrafficSplit.
const SMIGroup = "split.smi-spec.io"

// SMIVersions are the SMI TrafficSplit versions Weft reads, newest first.
// They differ only in the type of a backend's weight (a quantity in
// v1alpha1, an integer after) and in matches (v1alpha3 on), so Weft reads
// whichever the API server serves and accepts either form of weight.
var SMIVersions = []string{"v1alpha4", "v1alpha3", "v1alpha2", "v1alpha1"}

// maxSMIWeight is the largest weight Weft hands a proxy for one backend;
// larger SMI weights are scaled down together, keeping their ratios.
const maxSMIWeight = 1000000

// ExternalStatus is what Weft found about an object that has no status of
// its own (SMI's TrafficSplit): the controller reports it as an Event and
// in its metrics, and never writes the object.
type ExternalStatus struct {
	Ref ir.ObjectRef `json:"ref"`
	UID types.UID    `json:"uid,omitempty"`
	// ResourceVersion is the version of the object the verdict is about.
	ResourceVersion string `json:"resourceVersion,omitempty"`
	APIVersion      string `json:"apiVersion"`
	Generation      int64  `json:"generation,omitempty"`
	// Ready is True when the object is in effect; its reason and message
	// say why not otherwise.
	Ready metav1.Condition `json:"ready"`
}

// smiSplits parses every SMI TrafficSplit into a split, oldest first. A
// split that cannot apply (a bad weight, matches) is rejected here.
func (s *state) smiSplits() []splitInput {
	objs := slices.Clone(s.b.SMITrafficSplits)
	slices.SortFunc(objs, func(a, b *unstructured.Unstructured) int { return olderFirst(a, b) })
	out := make([]splitInput, 0, len(objs))
	for _, o := range objs {
		v := newVerdict("TrafficSplit", o.GetNamespace(), o.GetName(), o.GetGeneration())
		v.ref.Group = SMIGroup
		s.smi = append(s.smi, smiVerdict{obj: o, v: v})
		in := splitInput{v: v, namespace: o.GetNamespace()}
		in.service, _, _ = unstructured.NestedString(o.Object, "spec", "service")
		if in.service == "" {
			v.reject(meshv1alpha1.ReasonUnsupportedValue, "spec.service: name the apex Service")
		}
		if m, _, _ := unstructured.NestedSlice(o.Object, "spec", "matches"); len(m) > 0 {
			v.reject(meshv1alpha1.ReasonUnsupportedValue, "spec.matches: Weft does not apply HTTPRouteGroup matches, so this split is not in effect; to split only matching requests, write an HTTPRoute with Service %s as its parent, the matches in a rule and the weights in its backendRefs", in.service)
		}
		raw, _, _ := unstructured.NestedSlice(o.Object, "spec", "backends")
		weights := make([]resource.Quantity, 0, len(raw))
		seen := make(map[string]int, len(raw))
		for i, r := range raw {
			m, _ := r.(map[string]any)
			name, _ := m["service"].(string)
			if name == "" {
				v.reject(meshv1alpha1.ReasonUnsupportedValue, "spec.backends[%d].service: name a Service", i)
			}
			// The CRD's list is atomic, as SMI's is, so it may repeat a
			// Service; a proxy's weighted route cannot.
			if j, dup := seen[name]; dup && name != "" {
				v.reject(meshv1alpha1.ReasonUnsupportedValue, "spec.backends[%d].service: Service %s is also spec.backends[%d]; list each backend once", i, name, j)
			}
			seen[name] = i
			q, err := smiWeight(m["weight"])
			if err != nil {
				v.reject(meshv1alpha1.ReasonUnsupportedValue, "spec.backends[%d].weight: %v", i, err)
			}
			in.backends = append(in.backends, splitBackend{service: name})
			weights = append(weights, q)
		}
		if len(raw) == 0 {
			v.reject(meshv1alpha1.ReasonUnsupportedValue, "spec.backends: list at least one backend Service")
		}
		for i, w := range relativeWeights(weights) {
			in.backends[i].weight = w
		}
		out = append(out, in)
	}
	return out
}

// smiVerdict is an SMI split and what ingest found about it.
type smiVerdict struct {
	obj *unstructured.Unstructured
	v   *verdict
}

// smiWeight reads a backend's weight in any version's form: absent (0, as
// v1alpha3's Go types leave it out), an integer, or a quantity ("10",
// "900m").
func smiWeight(w any) (resource.Quantity, error) {
	var q resource.Quantity
	switch w := w.(type) {
	case nil:
		return resource.Quantity{}, nil
	case int64:
		q = *resource.NewQuantity(w, resource.DecimalSI)
	case float64:
		p, err := resource.ParseQuantity(strconv.FormatFloat(w, 'f', -1, 64))
		if err != nil {
			return q, fmt.Errorf("%v is not a number Weft can use", w)
		}
		q = p
	case string:
		p, err := resource.ParseQuantity(w)
		if err != nil {
			return q, fmt.Errorf("%q is not a number or a quantity such as 90 or 900m", w)
		}
		q = p
	default:
		return q, fmt.Errorf("must be a number or a quantity such as 90 or 900m")
	}
	if q.Sign() < 0 {
		return q, fmt.Errorf("%s is negative; weights are 0 or more", q.String())
	}
	return q, nil
}

// relativeWeights turns quantities into proxy weights with the same ratios:
// whole numbers as they are (10 and 90 stay 10 and 90), otherwise in
// thousandths (900m and 100m become 900 and 100), scaled down together
// when one would exceed maxSMIWeight. A positive weight never becomes 0.
func relativeWeights(qs []resource.Quantity) []uint32 {
	whole := true
	for _, q := range qs {
		if q.MilliValue()%1000 != 0 {
			whole = false
		}
	}
	vals := make([]float64, len(qs))
	highest := 0.0
	for i, q := range qs {
		if whole {
			vals[i] = float64(q.Value())
		} else {
			vals[i] = float64(q.MilliValue())
		}
		highest = max(highest, vals[i])
	}
	scale := 1.0
	if highest > maxSMIWeight {
		scale = maxSMIWeight / highest
	}
	out := make([]uint32, len(qs))
	for i, v := range vals {
		if v <= 0 {
			continue
		}
		out[i] = uint32(max(1, math.Round(v*scale)))
	}
	return out
}

// smiStatuses is what to report on every SMI split, sorted by object.
func (s *state) smiStatuses() []ExternalStatus {
	out := make([]ExternalStatus, 0, len(s.smi))
	for _, sv := range s.smi {
		st := sv.v.status()
		var ready metav1.Condition
		for _, c := range st.Conditions {
			if c.Type == meshv1alpha1.ConditionReady {
				ready = c
			}
		}
		out = append(out, ExternalStatus{
			Ref: sv.v.ref, UID: sv.obj.GetUID(), ResourceVersion: sv.obj.GetResourceVersion(), APIVersion: sv.obj.GetAPIVersion(),
			Generation: sv.obj.GetGeneration(), Ready: ready,
		})
	}
	slices.SortFunc(out, func(a, b ExternalStatus) int { return compareRefs(a.Ref, b.Ref) })
	return out
}
