package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TrafficSplitSpec sends the traffic clients address to the apex Service to
// backend Services in proportion to their weights.
type TrafficSplitSpec struct {
	// Service is the apex Service clients call, in this namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Service string `json:"service"`

	// Backends are the Services that receive the apex's traffic. At most
	// 10 at this version, so that the check of each weight's sign fits the
	// API server's budget for validation rules.
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=10
	Backends []TrafficSplitBackend `json:"backends"`
}

// TrafficSplitBackend is one Service and its share.
type TrafficSplitBackend struct {
	// Service is a Service in this namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Service string `json:"service"`

	// Weight is the backend's share relative to the other backends: a
	// non-negative quantity such as 90, 10 or 900m.
	// +optional
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : !string(self).startsWith('-')",message="weight must not be negative"
	Weight *resource.Quantity `json:"weight,omitempty"`
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
