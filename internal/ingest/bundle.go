package ingest

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ir"
)

// ControllerName is the Gateway API controller name Weft writes into route
// status, typed for the Gateway API fields it fills.
const ControllerName gwapiv1.GatewayController = meshv1alpha1.GatewayControllerName

// DefaultClusterDomain is the Services' DNS suffix unless told otherwise.
const DefaultClusterDomain = "cluster.local"

// Bundle is everything ingest reads. Slices may be in any order.
type Bundle struct {
	ClusterDomain string

	Namespaces     []*corev1.Namespace
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
	Pods           []*corev1.Pod

	TrafficSplits     []*meshv1alpha1.TrafficSplit
	RetryPolicies     []*meshv1alpha1.RetryPolicy
	CircuitBreakers   []*meshv1alpha1.CircuitBreaker
	MeshIdentities    []*meshv1alpha1.MeshIdentity
	AccessPolicies    []*meshv1alpha1.AccessPolicy
	FaultInjections   []*meshv1alpha1.FaultInjection
	RateLimitPolicies []*meshv1alpha1.RateLimitPolicy

	// SMITrafficSplits are SMI's split.smi-spec.io TrafficSplits, read
	// at any served version (see SMIVersions).
	SMITrafficSplits []*unstructured.Unstructured

	HTTPRoutes      []*gwapiv1.HTTPRoute
	GRPCRoutes      []*gwapiv1.GRPCRoute
	TCPRoutes       []*gwapiv1.TCPRoute
	ReferenceGrants []*gwapiv1.ReferenceGrant
}

// Result is the mesh model plus what to tell users.
type Result struct {
	Mesh *ir.Mesh `json:"mesh"`
	// Statuses are the conditions of every TrafficSplit, RetryPolicy,
	// CircuitBreaker and AccessPolicy, sorted by object.
	Statuses []ObjectStatus `json:"statuses,omitempty"`
	// Routes are the status parents of every HTTPRoute and GRPCRoute with a
	// Service parent, sorted by object.
	Routes []RouteStatus `json:"routes,omitempty"`
	// SMITrafficSplits say, for every SMI TrafficSplit, whether it is in
	// effect and if not why, sorted by object. SMI has no status: the
	// controller reports them as Events.
	SMITrafficSplits []ExternalStatus `json:"smiTrafficSplits,omitempty"`
	// Warnings are problems on objects Weft does not own (a Service with a
	// bad annotation, say): the controller reports them as events.
	Warnings []Warning `json:"warnings,omitempty"`
}

// ObjectStatus is the conditions an object should carry. The conditions
// have no LastTransitionTime: the status writer stamps it.
type ObjectStatus struct {
	Ref        ir.ObjectRef       `json:"ref"`
	Generation int64              `json:"generation,omitempty"`
	Conditions []metav1.Condition `json:"conditions"`
}

// RouteStatus is the status.parents entries Weft owns on a route.
type RouteStatus struct {
	Ref        ir.ObjectRef                `json:"ref"`
	Generation int64                       `json:"generation,omitempty"`
	Parents    []gwapiv1.RouteParentStatus `json:"parents"`
}

// Warning is a problem on an object Weft reads but does not own.
type Warning struct {
	Ref     ir.ObjectRef `json:"ref"`
	Reason  string       `json:"reason"`
	Message string       `json:"message"`
}
