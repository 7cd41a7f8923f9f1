package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types every Weft object may carry. Ready is the positive summary;
// the others say which stage of the pipeline holds the object up.
const (
	// ConditionReady is True when the object is accepted, its references resolve
	// and the proxies that need it run its configuration.
	ConditionReady = "Ready"
	// ConditionAccepted is True when the object is valid and not overridden by
	// another object.
	ConditionAccepted = "Accepted"
	// ConditionResolvedRefs is True when every object it points at exists and
	// may be referenced.
	ConditionResolvedRefs = "ResolvedRefs"
	// ConditionProgrammed is True when every proxy that needs the object's
	// configuration has acknowledged it.
	ConditionProgrammed = "Programmed"
	// ConditionDegraded is True on a MeshIdentity when some of its workload
	// certificates cannot be issued.
	ConditionDegraded = "Degraded"
	// ConditionProxylessCompatible is False on an object (a route's
	// parent, a MeshIdentity) that asks for something proxyless gRPC
	// clients or servers do not do; the message says what and where.
	// Absent when there is nothing to say.
	ConditionProxylessCompatible = "ProxylessCompatible"
)

// Condition reasons. Each says what happened in a word a user can search for;
// the condition message says which field to fix.
const (
	ReasonAccepted          = "Accepted"
	ReasonInvalid           = "Invalid"
	ReasonConflicted        = "Conflicted"
	ReasonOverridden        = "Overridden"
	ReasonResolvedRefs      = "ResolvedRefs"
	ReasonBackendNotFound   = "BackendNotFound"
	ReasonTargetNotFound    = "TargetNotFound"
	ReasonRefNotPermitted   = "RefNotPermitted"
	ReasonUnsupportedValue  = "UnsupportedValue"
	ReasonProgrammed        = "Programmed"
	ReasonPending           = "Pending"
	ReasonRejected          = "Rejected"
	ReasonReady             = "Ready"
	ReasonNotReady          = "NotReady"
	ReasonIssued            = "Issued"
	ReasonIssuing           = "Issuing"
	ReasonIssuerNotFound    = "IssuerNotFound"
	ReasonCertificateFailed = "CertificateFailed"
	ReasonNoWorkloads       = "NoWorkloads"
	ReasonMTLSDisabled      = "MTLSDisabled"
	// ReasonPathNotNormalized: an AccessPolicy path is not in the form
	// Envoy matches requests in; Weft matches its normalised form.
	ReasonPathNotNormalized = "PathNotNormalized"
	// ReasonNotAttached: a policy without a target that nothing names.
	ReasonNotAttached = "NotAttached"
	// ReasonUnsupportedByProxyless: see ConditionProxylessCompatible.
	ReasonUnsupportedByProxyless = "UnsupportedByProxyless"
)

// Status is the status every Weft kind reports.
type Status struct {
	// ObservedGeneration is the metadata.generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions say whether the object is accepted, resolved and programmed.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ServiceTargetReference points a policy at a Service in its own namespace.
// +kubebuilder:validation:XValidation:rule="size(self.group) == 0 && self.kind == 'Service'",message="targetRef must be a core Service: set group to \"\" and kind to Service"
type ServiceTargetReference struct {
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
}

// RouteTargetReference points a policy at a Service, an HTTPRoute or a
// GRPCRoute in the policy's namespace.
// +kubebuilder:validation:XValidation:rule="(size(self.group) == 0 && self.kind == 'Service') || (self.group == 'gateway.networking.k8s.io' && (self.kind == 'HTTPRoute' || self.kind == 'GRPCRoute'))",message="targetRef must be a Service (group \"\") or an HTTPRoute or GRPCRoute (group gateway.networking.k8s.io)"
type RouteTargetReference struct {
	// Group of the target: "" for Service, gateway.networking.k8s.io for routes.
	// +kubebuilder:default=""
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Group string `json:"group,omitempty"`
	// Kind of the target: Service, HTTPRoute or GRPCRoute.
	// +kubebuilder:default=Service
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Kind string `json:"kind,omitempty"`
	// Name of the target in the policy's namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}
