package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MTLSMode says whether plaintext is still accepted by meshed workloads.
// +kubebuilder:validation:Enum=Strict;Permissive
type MTLSMode string

const (
	// MTLSStrict requires a client certificate from the mesh on every inbound connection.
	MTLSStrict MTLSMode = "Strict"
	// MTLSPermissive accepts mTLS and plaintext, for migrating workloads into the mesh.
	MTLSPermissive MTLSMode = "Permissive"
)

// KeyAlgorithm is the workload private key algorithm.
// +kubebuilder:validation:Enum=ECDSA;RSA;Ed25519
type KeyAlgorithm string

// Key algorithms.
const (
	KeyECDSA   KeyAlgorithm = "ECDSA"
	KeyRSA     KeyAlgorithm = "RSA"
	KeyEd25519 KeyAlgorithm = "Ed25519"
)

// IssuerReference names the cert-manager issuer that signs workload certificates.
type IssuerReference struct {
	// Name of the Issuer or ClusterIssuer.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Kind is ClusterIssuer (one issuer for every namespace) or Issuer (an
	// Issuer of this name in each meshed namespace).
	// +kubebuilder:validation:Enum=Issuer;ClusterIssuer
	// +kubebuilder:default=ClusterIssuer
	// +optional
	Kind string `json:"kind,omitempty"`
	// Group of the issuer kind.
	// +kubebuilder:default=cert-manager.io
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Group string `json:"group,omitempty"`
}

// MTLS configures mutual TLS between meshed workloads.
type MTLS struct {
	// Mode is Strict (mTLS only) or Permissive (mTLS and plaintext).
	// +kubebuilder:default=Strict
	// +optional
	Mode MTLSMode `json:"mode,omitempty"`
}

// MeshIdentitySpec gives the workloads in selected namespaces SPIFFE
// identities signed by a cert-manager issuer.
// +kubebuilder:validation:XValidation:rule="!has(self.renewBefore) || duration(self.renewBefore) < duration(self.duration)",message="spec.renewBefore must be shorter than spec.duration"
type MeshIdentitySpec struct {
	// TrustDomain is the SPIFFE trust domain, e.g. cluster.local. Identities
	// are spiffe://<trustDomain>/ns/<namespace>/sa/<serviceaccount>.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$')",message="spec.trustDomain must be a SPIFFE trust domain: lowercase letters, digits, '.', '-' and '_', such as cluster.local"
	TrustDomain string `json:"trustDomain"`

	// NamespaceSelector picks the namespaces whose workloads get identities.
	// Unset: every namespace labelled weft.dev/inject=enabled.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// IssuerRef is the cert-manager issuer that signs workload certificates.
	IssuerRef IssuerReference `json:"issuerRef"`

	// Duration is the lifetime of workload certificates, 1h to 8760h.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(\.[0-9]{1,3})?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1h') && duration(self) <= duration('8760h')",message="spec.duration must be between 1h and 8760h"
	// +kubebuilder:default="24h"
	// +optional
	Duration metav1.Duration `json:"duration,omitzero"`

	// RenewBefore is how long before expiry a certificate is renewed; default
	// a third of duration.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]{1,5}(\.[0-9]{1,3})?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('5m')",message="spec.renewBefore must be at least 5m"
	// +optional
	RenewBefore *metav1.Duration `json:"renewBefore,omitempty"`

	// MTLS sets the mutual TLS mode for the selected workloads.
	// +kubebuilder:default={mode: Strict}
	// +optional
	MTLS MTLS `json:"mtls,omitzero"`

	// KeyAlgorithm is the workload key algorithm: ECDSA (P-256, default), RSA (2048) or Ed25519.
	// +kubebuilder:default=ECDSA
	// +optional
	KeyAlgorithm KeyAlgorithm `json:"keyAlgorithm,omitempty"`
}

// MeshIdentityStatus counts the identities issued for the selected workloads.
type MeshIdentityStatus struct {
	Status `json:",inline"`

	// Identities is the number of service accounts that need a certificate.
	// +optional
	Identities int32 `json:"identities"`

	// ReadyIdentities is the number whose certificate is issued and valid.
	// +optional
	ReadyIdentities int32 `json:"readyIdentities"`

	// SoonestExpiry is the earliest expiry among the issued certificates.
	// +optional
	SoonestExpiry *metav1.Time `json:"soonestExpiry,omitempty"`

	// TrustRoots are the roots the controller publishes in every
	// weft-trust-bundle ConfigMap: the CAs of the issued certificates and
	// the retired roots still in their overlap. It is the controller's
	// record of which roots it trusted before, kept here because only the
	// controller and cluster administrators may write a cluster-scoped
	// object's status; the published ConfigMaps are never read back as a
	// source of roots. Removing the list makes the controller start over
	// from the issued certificates alone.
	// +optional
	// +listType=map
	// +listMapKey=fingerprint
	// +kubebuilder:validation:MaxItems=8
	TrustRoots []TrustRoot `json:"trustRoots,omitempty"`
}

// Bounds of status.trustRoots, as the schema enforces them.
const (
	// MaxTrustRoots is how many roots status.trustRoots holds.
	MaxTrustRoots = 8
	// MaxTrustRootPEMLength bounds the PEM of one TrustRoot, far above any
	// real root certificate.
	MaxTrustRootPEMLength = 16384
)

// TrustRoot is one root in a MeshIdentity's trust bundle.
type TrustRoot struct {
	// Fingerprint is the lowercase hex SHA-256 of the root's DER encoding.
	// +kubebuilder:validation:Pattern=`^[0-9a-f]{64}$`
	Fingerprint string `json:"fingerprint"`

	// NotAfter is when the root expires; it leaves the bundle then at the
	// latest.
	NotAfter metav1.Time `json:"notAfter"`

	// RetiredAt is when the controller first found that no issued
	// certificate names this root any more; unset while one does. A
	// retired root stays trusted for spec.duration after this time, so
	// that every certificate it signed expires first.
	// +optional
	RetiredAt *metav1.Time `json:"retiredAt,omitempty"`

	// Certificate is the root as one PEM CERTIFICATE block.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=16384
	Certificate string `json:"certificate"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=mi,categories=weft
// +kubebuilder:printcolumn:name="Trust Domain",type=string,JSONPath=`.spec.trustDomain`
// +kubebuilder:printcolumn:name="mTLS",type=string,JSONPath=`.spec.mtls.mode`
// +kubebuilder:printcolumn:name="Identities",type=integer,JSONPath=`.status.identities`
// +kubebuilder:printcolumn:name="Ready Identities",type=integer,JSONPath=`.status.readyIdentities`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// MeshIdentity issues SPIFFE workload certificates through cert-manager and
// sets the mTLS mode.
type MeshIdentity struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   MeshIdentitySpec   `json:"spec"`
	Status MeshIdentityStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// MeshIdentityList is a list of MeshIdentities.
type MeshIdentityList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshIdentity `json:"items"`
}

func init() {
	register(&MeshIdentity{}, &MeshIdentityList{})
}
