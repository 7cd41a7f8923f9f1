package v1alpha3

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TrafficSplitSpec sends the traffic clients address to the apex Service to
// backend Services in proportion to their weights.
type TrafficSplitSpec struct {
	// Service is the apex Service clients call, in this namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Service string `json:"service"`

	// Backends are the Services that receive the apex's traffic.
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Backends []TrafficSplitBackend `json:"backends"`

	// Matches name HTTPRouteGroups (specs.smi-spec.io) the split applies
	// to; Weft reports a split with matches as unsupported and leaves it
	// out, since an HTTPRoute says the same.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Matches []corev1.TypedLocalObjectReference `json:"matches,omitempty"`
}

// TrafficSplitBackend is one Service and its share.
type TrafficSplitBackend struct {
	// Service is a Service in this namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Service string `json:"service"`

	// Weight is the backend's share relative to the other backends.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	Weight int `json:"weight,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=smits,categories=smi
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.service`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// TrafficSplit is SMI's traffic split. It has no status: Weft reports on it
// with Events.
type TrafficSplit struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec TrafficSplitSpec `json:"spec"`
}

// +kubebuilder:object:root=true

// TrafficSplitList is a list of TrafficSplits.
type TrafficSplitList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TrafficSplit `json:"items"`
}
