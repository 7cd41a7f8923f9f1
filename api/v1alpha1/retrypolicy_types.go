package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RetryOn is a condition under which a request is retried.
// +kubebuilder:validation:Enum="5xx";gateway-error;reset;connect-failure;retriable-4xx;refused-stream;retriable-status-codes;cancelled;deadline-exceeded;internal;resource-exhausted;unavailable
type RetryOn string

// RetryPolicySpec retries failed requests to a Service or a route.
// +kubebuilder:validation:XValidation:rule="!has(self.perTryTimeout) || !has(self.timeout) || duration(self.perTryTimeout) <= duration(self.timeout)",message="spec.perTryTimeout must not be longer than spec.timeout"
// +kubebuilder:validation:XValidation:rule="!has(self.retriableStatusCodes) || size(self.retriableStatusCodes) == 0 || (has(self.retryOn) && 'retriable-status-codes' in self.retryOn)",message="spec.retriableStatusCodes needs 'retriable-status-codes' in spec.retryOn"
type RetryPolicySpec struct {
	// TargetRef is the Service, HTTPRoute or GRPCRoute whose requests are retried.
	TargetRef RouteTargetReference `json:"targetRef"`

	// Attempts is the number of retries after the first try, 0 to 10.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	// +kubebuilder:default=2
	// +optional
	Attempts *int32 `json:"attempts,omitempty"`

	// PerTryTimeout bounds each try, e.g. "250ms". Unset: each try may use
	// what is left of the whole request's timeout.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(\.[0-9]{1,3})?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1ms') && duration(self) <= duration('1h')",message="spec.perTryTimeout must be between 1ms and 1h"
	// +optional
	PerTryTimeout *metav1.Duration `json:"perTryTimeout,omitempty"`

	// Timeout bounds the whole request, all tries included, e.g. "2s".
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(\.[0-9]{1,3})?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1ms') && duration(self) <= duration('1h')",message="spec.timeout must be between 1ms and 1h"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// RetryOn lists the failures that are retried. Default: connect-failure,
	// refused-stream, unavailable, cancelled and retriable-status-codes with 503.
	// +listType=set
	// +kubebuilder:validation:MaxItems=12
	// +optional
	RetryOn []RetryOn `json:"retryOn,omitempty"`

	// RetriableStatusCodes are HTTP status codes that are retried when
	// retryOn has retriable-status-codes.
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Minimum=100
	// +kubebuilder:validation:items:Maximum=599
	// +optional
	RetriableStatusCodes []int32 `json:"retriableStatusCodes,omitempty"`

	// Backoff spaces retries out: exponential from baseInterval, capped at
	// maxInterval, with jitter.
	// +optional
	Backoff *RetryBackoff `json:"backoff,omitempty"`

	// RetryNonIdempotent allows retries of POST, PATCH and CONNECT requests.
	// Off by default, since a retried POST may run twice. gRPC calls are
	// retried only under the gRPC conditions, which fail before the server acts.
	// +kubebuilder:default=false
	// +optional
	RetryNonIdempotent bool `json:"retryNonIdempotent,omitempty"`

	// Budget caps retries to a share of the active requests, so that
	// retries cannot multiply load on a failing Service.
	// +optional
	Budget *RetryBudget `json:"budget,omitempty"`
}

// RetryBackoff is an exponential back-off between retries.
// +kubebuilder:validation:XValidation:rule="!has(self.maxInterval) || duration(self.maxInterval) >= duration(self.baseInterval)",message="spec.backoff.maxInterval must not be shorter than spec.backoff.baseInterval"
type RetryBackoff struct {
	// BaseInterval is the first wait, e.g. "25ms".
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(\.[0-9]{1,3})?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1ms') && duration(self) <= duration('1m')",message="spec.backoff.baseInterval must be between 1ms and 1m"
	BaseInterval metav1.Duration `json:"baseInterval"`

	// MaxInterval caps the wait; default ten times baseInterval.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(\.[0-9]{1,3})?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1ms') && duration(self) <= duration('10m')",message="spec.backoff.maxInterval must be between 1ms and 10m"
	// +optional
	MaxInterval *metav1.Duration `json:"maxInterval,omitempty"`
}

// RetryBudget limits concurrent retries to a percentage of active requests.
type RetryBudget struct {
	// Percent of active requests that may be retries, 1 to 100.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=20
	// +optional
	Percent int32 `json:"percent,omitempty"`

	// MinRetryConcurrency is the number of retries always allowed, whatever
	// the percentage gives.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	// +kubebuilder:default=3
	// +optional
	MinRetryConcurrency *int32 `json:"minRetryConcurrency,omitempty"`
}

// RetryPolicyStatus reports whether the policy is in force.
type RetryPolicyStatus struct {
	Status `json:",inline"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=rp,categories=weft
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.targetRef.name`
// +kubebuilder:printcolumn:name="Attempts",type=integer,JSONPath=`.spec.attempts`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// RetryPolicy retries failed requests to a Service or route, with timeouts.
type RetryPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   RetryPolicySpec   `json:"spec"`
	Status RetryPolicyStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// RetryPolicyList is a list of RetryPolicies.
type RetryPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RetryPolicy `json:"items"`
}

func init() {
	register(&RetryPolicy{}, &RetryPolicyList{})
}
