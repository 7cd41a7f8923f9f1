package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RateLimitPolicySpec limits the requests a Service's workloads accept.
// Each serving proxy keeps its own token buckets (a local rate limit): a
// Service with three replicas accepts up to three times the limit.
// +kubebuilder:validation:XValidation:rule="has(self.limit) || has(self.perCaller)",message="set spec.limit, spec.perCaller or both"
type RateLimitPolicySpec struct {
	// TargetRef is the Service whose inbound requests are limited.
	TargetRef ServiceTargetReference `json:"targetRef"`

	// Limit bounds every request to the Service, whoever sends it.
	// +optional
	Limit *RateLimit `json:"limit,omitempty"`

	// PerCaller bounds the requests of each caller identity (the SPIFFE ID
	// of its mTLS certificate) separately. Requests without an identity
	// count against limit only.
	// +optional
	PerCaller *RateLimit `json:"perCaller,omitempty"`
}

// RateLimit is a token bucket: requests tokens every interval, up to
// burst saved.
// +kubebuilder:validation:XValidation:rule="!has(self.burst) || self.burst >= self.requests",message="burst must be at least requests"
type RateLimit struct {
	// Requests allowed per interval, 1 to 1000000.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	Requests int32 `json:"requests"`

	// Interval the requests are counted over, 50ms to 24h; default 1s.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(\.[0-9]{1,3})?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('50ms') && duration(self) <= duration('24h')",message="interval must be between 50ms and 24h"
	// +kubebuilder:default="1s"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`

	// Burst is how many requests may come at once after a quiet time (the
	// bucket's size); default requests.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000000
	// +optional
	Burst *int32 `json:"burst,omitempty"`
}

// RateLimitPolicyStatus reports whether the limits are in force.
type RateLimitPolicyStatus struct {
	Status `json:",inline"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=rl,categories=weft
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.targetRef.name`
// +kubebuilder:printcolumn:name="Limit",type=integer,JSONPath=`.spec.limit.requests`
// +kubebuilder:printcolumn:name="Per caller",type=integer,JSONPath=`.spec.perCaller.requests`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// RateLimitPolicy limits the requests a Service accepts, overall and per
// caller, answering the rest 429 (RESOURCE_EXHAUSTED for gRPC).
type RateLimitPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   RateLimitPolicySpec   `json:"spec"`
	Status RateLimitPolicyStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// RateLimitPolicyList is a list of RateLimitPolicies.
type RateLimitPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RateLimitPolicy `json:"items"`
}

func init() {
	register(&RateLimitPolicy{}, &RateLimitPolicyList{})
}
