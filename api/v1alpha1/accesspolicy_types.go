package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AccessAction is what an AccessPolicy does with the callers its rules match.
// +kubebuilder:validation:Enum=Allow;Deny
type AccessAction string

const (
	// ActionAllow lets matched callers through. Once any Allow policy targets
	// a Service, callers that no Allow policy matches are denied.
	ActionAllow AccessAction = "Allow"
	// ActionDeny refuses matched callers; Deny is checked before Allow.
	ActionDeny AccessAction = "Deny"
)

// AccessPolicySpec says which callers may reach a Service.
type AccessPolicySpec struct {
	// TargetRef is the Service the policy protects.
	TargetRef ServiceTargetReference `json:"targetRef"`

	// Action is Allow or Deny.
	// +kubebuilder:default=Allow
	// +optional
	Action AccessAction `json:"action,omitempty"`

	// Rules match requests; a request matched by any rule gets the action.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	Rules []AccessRule `json:"rules"`
}

// AccessRule matches a request by who sends it and what it asks for. Both
// from and to must match; an unset one matches anything.
// +kubebuilder:validation:XValidation:rule="(has(self.from) && size(self.from) > 0) || (has(self.to) && size(self.to) > 0)",message="each rule needs at least one entry in from or to; to match every caller, list the namespaces or identities explicitly"
type AccessRule struct {
	// From lists callers; a caller matching any entry matches.
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	// +optional
	From []AccessSource `json:"from,omitempty"`

	// To lists request properties; a request matching any entry matches.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	To []AccessDestination `json:"to,omitempty"`
}

// AccessSource is one caller: a service account, every workload of a
// namespace, or a SPIFFE identity. Exactly one is set.
// +kubebuilder:validation:XValidation:rule="[has(self.serviceAccount), has(self.namespace), has(self.identity)].filter(x, x).size() == 1",message="set exactly one of serviceAccount, namespace or identity in each from entry"
type AccessSource struct {
	// ServiceAccount is a workload's service account.
	// +optional
	ServiceAccount *ServiceAccountRef `json:"serviceAccount,omitempty"`

	// Namespace matches every workload in that namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Namespace *string `json:"namespace,omitempty"`

	// Identity is a full SPIFFE ID, e.g. spiffe://cluster.local/ns/shop/sa/web,
	// for callers outside this trust domain.
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^spiffe://[a-z0-9]([a-z0-9._-]*[a-z0-9])?(/[A-Za-z0-9._~!$&()*+,;=:@%-]+)+$`
	// +kubebuilder:validation:XValidation:rule="self.startsWith('spiffe://')",message="identity must be a SPIFFE ID such as spiffe://cluster.local/ns/shop/sa/web"
	// +optional
	Identity *string `json:"identity,omitempty"`
}

// ServiceAccountRef names a service account.
type ServiceAccountRef struct {
	// Name of the service account.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	Name string `json:"name"`
	// Namespace of the service account; default the policy's namespace.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// HTTPMethod is an HTTP request method.
// +kubebuilder:validation:Enum=GET;HEAD;POST;PUT;DELETE;CONNECT;OPTIONS;TRACE;PATCH
type HTTPMethod string

// AccessDestination matches what a request asks for. Methods and paths apply
// to HTTP and gRPC traffic only.
// +kubebuilder:validation:XValidation:rule="(has(self.ports) && size(self.ports) > 0) || (has(self.methods) && size(self.methods) > 0) || (has(self.paths) && size(self.paths) > 0)",message="each to entry needs ports, methods or paths"
// +kubebuilder:validation:XValidation:rule=`!has(self.paths) || self.paths.all(p, !p.matches('//|/[.][.]?(/|[*]?$)|%2[eEfF]|%5[cC]'))`,messageExpression=`'paths: ' + self.paths.filter(p, p.matches('//|/[.][.]?(/|[*]?$)|%2[eEfF]|%5[cC]'))[0] + ' is not a normalised path: the proxy merges //, resolves . and .. segments and decodes %2E, %2F and %5C before matching, so no request would ever match it; write the path as it reaches the application (/a//b as /a/b, /a/../b as /b)'`
type AccessDestination struct {
	// Ports are ports of the target Service (Weft enforces them on the
	// container ports they lead to).
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	// +listType=set
	// +optional
	Ports []int32 `json:"ports,omitempty"`

	// Methods are HTTP methods; gRPC calls are POST.
	// +kubebuilder:validation:MaxItems=9
	// +listType=set
	// +optional
	Methods []HTTPMethod `json:"methods,omitempty"`

	// Paths are exact paths, or prefixes when they end in "*" (e.g. "/api/*").
	// gRPC methods are paths such as /pkg.Service/Method. Paths are
	// matched after the proxy normalises the request's path, so they must
	// be normalised themselves: no "//", no "." or ".." segments, no %2E,
	// %2F or %5C, no backslash.
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:items:Pattern=`^/[^*?#\s\\]*\*?$`
	// +listType=set
	// +optional
	Paths []string `json:"paths,omitempty"`
}

// AccessPolicyStatus reports whether the policy is in force.
type AccessPolicyStatus struct {
	Status `json:",inline"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ap,categories=weft
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec.targetRef.name`
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.spec.action`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// AccessPolicy allows or denies callers of a Service by their mesh identity.
type AccessPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AccessPolicySpec   `json:"spec"`
	Status AccessPolicyStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// AccessPolicyList is a list of AccessPolicies.
type AccessPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AccessPolicy `json:"items"`
}

func init() {
	register(&AccessPolicy{}, &AccessPolicyList{})
}
