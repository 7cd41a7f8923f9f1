package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// GRPCStatusCode is a gRPC status code by its canonical name.
// +kubebuilder:validation:Enum=CANCELLED;UNKNOWN;INVALID_ARGUMENT;DEADLINE_EXCEEDED;NOT_FOUND;ALREADY_EXISTS;PERMISSION_DENIED;RESOURCE_EXHAUSTED;FAILED_PRECONDITION;ABORTED;OUT_OF_RANGE;UNIMPLEMENTED;INTERNAL;UNAVAILABLE;DATA_LOSS;UNAUTHENTICATED
type GRPCStatusCode string

// GRPCStatusCodes are the codes by name, as numbers.
var GRPCStatusCodes = map[GRPCStatusCode]uint32{
	"CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
	"ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
	"ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
	"DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}

// FaultInjectionSpec delays or fails a share of the requests to a Service
// or a route, on the callers' side, to test how they cope.
// +kubebuilder:validation:XValidation:rule="has(self.delay) || has(self.abort)",message="set spec.delay, spec.abort or both"
type FaultInjectionSpec struct {
	// TargetRef is the Service, HTTPRoute or GRPCRoute whose requests get
	// the faults. Unset: the faults apply only to the route rules that
	// name this object in an ExtensionRef filter (group mesh.weft.dev, kind
	// FaultInjection).
	// +optional
	TargetRef *RouteTargetReference `json:"targetRef,omitempty"`

	// Delay holds a share of requests back before they are sent.
	// +optional
	Delay *FaultDelay `json:"delay,omitempty"`

	// Abort answers a share of requests with an error instead of sending
	// them.
	// +optional
	Abort *FaultAbort `json:"abort,omitempty"`

	// Headers limit the faults to requests that carry every one of these
	// headers with exactly this value (e.g. x-fault: "on"), so a test can
	// choose its victims. None: every request.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=8
	// +optional
	Headers []FaultHeaderMatch `json:"headers,omitempty"`
}

// FaultDelay is a fixed delay.
type FaultDelay struct {
	// Fixed is how long a delayed request waits, e.g. "200ms", 1ms to 1h.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(\.[0-9]{1,3})?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1ms') && duration(self) <= duration('1h')",message="spec.delay.fixed must be between 1ms and 1h"
	Fixed metav1.Duration `json:"fixed"`

	// Percent of requests delayed, 0 to 100.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=100
	// +optional
	Percent *int32 `json:"percent,omitempty"`
}

// FaultAbort fails a request with an HTTP status or a gRPC status.
// +kubebuilder:validation:XValidation:rule="has(self.httpStatus) != has(self.grpcStatus)",message="set exactly one of spec.abort.httpStatus and spec.abort.grpcStatus"
type FaultAbort struct {
	// HTTPStatus answers with this HTTP status, 200 to 599 (gRPC callers
	// see the gRPC code it maps to: 503 is UNAVAILABLE).
	// +kubebuilder:validation:Minimum=200
	// +kubebuilder:validation:Maximum=599
	// +optional
	HTTPStatus *int32 `json:"httpStatus,omitempty"`

	// GRPCStatus answers gRPC calls with this status, e.g. UNAVAILABLE.
	// +optional
	GRPCStatus *GRPCStatusCode `json:"grpcStatus,omitempty"`

	// Percent of requests aborted, 0 to 100.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=100
	// +optional
	Percent *int32 `json:"percent,omitempty"`
}

// FaultHeaderMatch is a request header and its exact value.
type FaultHeaderMatch struct {
	// Name of the header, e.g. x-fault.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$`
	Name string `json:"name"`
	// Value the header must have.
	// +kubebuilder:validation:MaxLength=4096
	Value string `json:"value"`
}

// FaultInjectionStatus reports whether the faults are in force.
type FaultInjectionStatus struct {
	Status `json:",inline"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=fi,categories=weft
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.targetRef.name`
// +kubebuilder:printcolumn:name="Delay",type=string,JSONPath=`.spec.delay.fixed`
// +kubebuilder:printcolumn:name="Abort",type=integer,JSONPath=`.spec.abort.percent`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// FaultInjection delays or fails a share of the requests to a Service or a
// route, for resilience tests.
type FaultInjection struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   FaultInjectionSpec   `json:"spec"`
	Status FaultInjectionStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// FaultInjectionList is a list of FaultInjections.
type FaultInjectionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FaultInjection `json:"items"`
}

func init() {
	register(&FaultInjection{}, &FaultInjectionList{})
}
