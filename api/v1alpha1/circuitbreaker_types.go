package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CircuitBreakerTargetReference points at a Service, optionally one port of it.
// +kubebuilder:validation:XValidation:rule="size(self.group) == 0 && self.kind == 'Service'",message="targetRef must be a core Service: set group to \"\" and kind to Service"
type CircuitBreakerTargetReference struct {
	// Group of the target; "" for the core API group.
	// +kubebuilder:default=""
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Group string `json:"group,omitempty"`
	// Kind of the target: Service.
	// +kubebuilder:default=Service
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Kind string `json:"kind,omitempty"`
	// Name of the Service in the policy's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// Port limits the policy to one Service port; unset: every port.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port *int32 `json:"port,omitempty"`
}

// CircuitBreakerSpec limits the load each client proxy puts on a Service and
// ejects endpoints that keep failing.
// +kubebuilder:validation:XValidation:rule="has(self.maxConnections) || has(self.maxPendingRequests) || has(self.maxRequests) || has(self.maxRetries) || has(self.outlierDetection) || has(self.connectTimeout) || has(self.idleTimeout)",message="spec must set at least one of maxConnections, maxPendingRequests, maxRequests, maxRetries, outlierDetection, connectTimeout or idleTimeout"
type CircuitBreakerSpec struct {
	// TargetRef is the Service whose callers are limited.
	TargetRef CircuitBreakerTargetReference `json:"targetRef"`

	// MaxConnections is the most TCP connections each client proxy opens to the Service.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	MaxConnections *int32 `json:"maxConnections,omitempty"`

	// MaxPendingRequests is the most requests that may wait for a connection.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	MaxPendingRequests *int32 `json:"maxPendingRequests,omitempty"`

	// MaxRequests is the most requests in flight at once; more fail fast.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	MaxRequests *int32 `json:"maxRequests,omitempty"`

	// MaxRetries is the most retries in flight at once.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	MaxRetries *int32 `json:"maxRetries,omitempty"`

	// OutlierDetection ejects endpoints that fail from the load-balancing pool for a while.
	// +optional
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`

	// ConnectTimeout bounds opening a connection to an endpoint of the
	// Service, 1ms to 5m; default 5s. Envoy only: gRPC's own connect
	// deadline applies to proxyless clients.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(\.[0-9]{1,3})?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1ms') && duration(self) <= duration('5m')",message="spec.connectTimeout must be between 1ms and 5m"
	// +optional
	ConnectTimeout *metav1.Duration `json:"connectTimeout,omitempty"`

	// IdleTimeout closes a connection to the Service that carried nothing
	// for this long, 1s to 24h: on a TCP port the client's proxied
	// connection itself, on HTTP ports the proxy's pooled connections to
	// the endpoints. Envoy only. Unset: TCP connections are closed after 1h
	// idle (Envoy's default), pooled HTTP connections after 1h.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(\.[0-9]{1,3})?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('24h')",message="spec.idleTimeout must be between 1s and 24h"
	// +optional
	IdleTimeout *metav1.Duration `json:"idleTimeout,omitempty"`
}

// OutlierDetection ejects failing endpoints. Envoy honours every detector;
// proxyless gRPC clients honour only failurePercentage, so set it when gRPC
// clients call the Service.
// +kubebuilder:validation:XValidation:rule="has(self.consecutive5xxErrors) || has(self.consecutiveGatewayErrors) || has(self.failurePercentage)",message="spec.outlierDetection must set at least one detector: consecutive5xxErrors, consecutiveGatewayErrors or failurePercentage"
type OutlierDetection struct {
	// Consecutive5xxErrors ejects an endpoint after this many 5xx replies (or
	// connection failures) in a row.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Consecutive5xxErrors *int32 `json:"consecutive5xxErrors,omitempty"`

	// ConsecutiveGatewayErrors ejects an endpoint after this many 502, 503 or
	// 504 replies in a row.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	ConsecutiveGatewayErrors *int32 `json:"consecutiveGatewayErrors,omitempty"`

	// FailurePercentage ejects an endpoint whose share of failed requests in
	// an interval reaches the threshold.
	// +optional
	FailurePercentage *FailurePercentage `json:"failurePercentage,omitempty"`

	// Interval between ejection sweeps.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(\.[0-9]{1,3})?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10ms') && duration(self) <= duration('1h')",message="spec.outlierDetection.interval must be between 10ms and 1h"
	// +kubebuilder:default="10s"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`

	// BaseEjectionTime is how long an endpoint stays out the first time; each
	// further ejection multiplies it.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(\.[0-9]{1,3})?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1ms') && duration(self) <= duration('1h')",message="spec.outlierDetection.baseEjectionTime must be between 1ms and 1h"
	// +kubebuilder:default="30s"
	// +optional
	BaseEjectionTime *metav1.Duration `json:"baseEjectionTime,omitempty"`

	// MaxEjectionPercent is the largest share of endpoints that may be out at once.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=10
	// +optional
	MaxEjectionPercent *int32 `json:"maxEjectionPercent,omitempty"`
}

// FailurePercentage is the failure-percentage outlier detector.
type FailurePercentage struct {
	// Threshold is the failure percentage, 1 to 100, at which an endpoint is ejected.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	Threshold int32 `json:"threshold"`

	// MinimumHosts is the fewest endpoints the Service must have for the detector to act.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +kubebuilder:default=5
	// +optional
	MinimumHosts int32 `json:"minimumHosts,omitempty"`

	// RequestVolume is the fewest requests an endpoint must have seen in the
	// interval for its percentage to count.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +kubebuilder:default=50
	// +optional
	RequestVolume int32 `json:"requestVolume,omitempty"`
}

// CircuitBreakerStatus reports whether the policy is in force.
type CircuitBreakerStatus struct {
	Status `json:",inline"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cb,categories=weft
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.targetRef.name`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// CircuitBreaker limits connections and requests to a Service and ejects
// failing endpoints.
type CircuitBreaker struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   CircuitBreakerSpec   `json:"spec"`
	Status CircuitBreakerStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// CircuitBreakerList is a list of CircuitBreakers.
type CircuitBreakerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CircuitBreaker `json:"items"`
}

func init() {
	register(&CircuitBreaker{}, &CircuitBreakerList{})
}
