package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TrafficSplitSpec splits the traffic that clients send to one Service
// across several backend Services by weight. It has the shape of SMI's
// TrafficSplit so that canary tools that speak SMI map onto it; a blue-green
// switch is a flip of weights.
type TrafficSplitSpec struct {
	// Service is the apex Service that clients call, in this namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Service string `json:"service"`

	// Backends receive the apex Service's traffic in proportion to their
	// weights. Weights are relative: 90 and 10 send 90% and 10%.
	// +listType=map
	// +listMapKey=service
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.exists(b, b.weight > 0)",message="spec.backends: at least one backend must have a weight greater than 0"
	Backends []TrafficSplitBackend `json:"backends"`
}

// TrafficSplitBackend is one Service that takes part of the traffic.
type TrafficSplitBackend struct {
	// Service is a Service in this namespace with the same ports as the apex.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Service string `json:"service"`

	// Weight is this backend's share relative to the other backends, 0 to 1000000.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	Weight int32 `json:"weight"`
}

// TrafficSplitStatus reports whether the split is in force.
type TrafficSplitStatus struct {
	Status `json:",inline"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ts,categories=weft
// +kubebuilder:printcolumn:name="Service",type=string,JSONPath=`.spec.service`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// TrafficSplit sends an apex Service's traffic to backend Services by weight.
type TrafficSplit struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TrafficSplitSpec   `json:"spec"`
	Status TrafficSplitStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// TrafficSplitList is a list of TrafficSplits.
type TrafficSplitList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TrafficSplit `json:"items"`
}

func init() {
	register(&TrafficSplit{}, &TrafficSplitList{})
}
