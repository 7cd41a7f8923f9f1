package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
)

// Labels and names Weft puts on the objects it creates for identities.
const (
	// LabelManagedBy is the well-known label marking objects Weft manages.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByWeft is the value of LabelManagedBy on Weft's objects.
	ManagedByWeft = "weft"

	// CertificateNamePrefix starts the name of every workload Certificate and Secret.
	CertificateNamePrefix = "weft-identity-"
	// MaxNameLength keeps generated names usable as label values.
	MaxNameLength = 63

	// DefaultDuration is the certificate lifetime when a MeshIdentity sets none.
	DefaultDuration = 24 * time.Hour
	// DefaultIssuerKind and DefaultIssuerGroup are the API defaults of spec.issuerRef.
	DefaultIssuerKind  = cmapi.ClusterIssuerKind
	DefaultIssuerGroup = "cert-manager.io"

	// revisionHistoryLimit keeps cert-manager from piling up one
	// CertificateRequest per renewal per service account; the last two are
	// enough to see why an issuance failed.
	revisionHistoryLimit = 2
	// hashLength is the number of hex digits of the suffix that keeps
	// truncated names unique.
	hashLength = 10
)

// CertificateName is the name of the Certificate (and its Secret) for a
// service account: weft-identity-<sa>. Service account names may be 253
// characters long; a name that would exceed 63 characters keeps a prefix of
// the service account name and ends in a hash of the whole name, so it is
// stable and still unique.
func CertificateName(serviceAccount string) string {
	return truncate(CertificateNamePrefix+serviceAccount, serviceAccount)
}

// LabelValue is the value of meshv1alpha1.LabelIdentity for a MeshIdentity name: the name
// itself, or for names longer than 63 characters a prefix and a hash.
func LabelValue(meshIdentityName string) string {
	return truncate(meshIdentityName, meshIdentityName)
}

// truncate shortens name to MaxNameLength, replacing its tail with a hash of
// key. The kept part never ends in '-' or '.', so the result is a valid DNS
// subdomain and label value whenever name is one.
func truncate(name, key string) string {
	if len(name) <= MaxNameLength {
		return name
	}
	sum := sha256.Sum256([]byte(key))
	suffix := hex.EncodeToString(sum[:])[:hashLength]
	kept := strings.TrimRight(name[:MaxNameLength-hashLength-1], "-.")
	return kept + "-" + suffix
}

// Labels are the labels of every object that belongs to the MeshIdentity.
func Labels(meshIdentityName string) map[string]string {
	return map[string]string{
		meshv1alpha1.LabelIdentity: LabelValue(meshIdentityName),
		LabelManagedBy:             ManagedByWeft,
	}
}

// ManagedSelector selects every object Weft manages for identities.
func ManagedSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByWeft})
}

// NamespaceSelector is the selector of spec.namespaceSelector, or
// weft.dev/inject=enabled when it is unset.
func NamespaceSelector(spec *meshv1alpha1.MeshIdentitySpec) (labels.Selector, error) {
	if spec.NamespaceSelector == nil {
		return labels.SelectorFromSet(labels.Set{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}), nil
	}
	sel, err := metav1.LabelSelectorAsSelector(spec.NamespaceSelector)
	if err != nil {
		return nil, fmt.Errorf("spec.namespaceSelector: %w", err)
	}
	return sel, nil
}

// Lifetimes returns the certificate lifetime and renewal lead a MeshIdentity
// asks for, with the API defaults applied: 24h, renewed a third of the
// lifetime before expiry.
func Lifetimes(spec *meshv1alpha1.MeshIdentitySpec) (duration, renewBefore time.Duration) {
	duration = spec.Duration.Duration
	if duration <= 0 {
		duration = DefaultDuration
	}
	renewBefore = duration / 3
	if spec.RenewBefore != nil && spec.RenewBefore.Duration > 0 && spec.RenewBefore.Duration < duration {
		renewBefore = spec.RenewBefore.Duration
	}
	return duration, renewBefore
}

// IssuerRef is spec.issuerRef in cert-manager's terms, with the API defaults
// (ClusterIssuer, cert-manager.io) applied.
func IssuerRef(spec *meshv1alpha1.MeshIdentitySpec) cmmeta.IssuerReference {
	ref := cmmeta.IssuerReference{Name: spec.IssuerRef.Name, Kind: spec.IssuerRef.Kind, Group: spec.IssuerRef.Group}
	if ref.Kind == "" {
		ref.Kind = DefaultIssuerKind
	}
	if ref.Group == "" {
		ref.Group = DefaultIssuerGroup
	}
	return ref
}

// PrivateKey is the private key cert-manager generates for a workload: ECDSA
// P-256 unless the MeshIdentity asks for RSA (2048 bits) or Ed25519, PKCS#8
// encoded, and new on every renewal so a leaked key dies with its certificate.
func PrivateKey(alg meshv1alpha1.KeyAlgorithm) *cmapi.CertificatePrivateKey {
	key := &cmapi.CertificatePrivateKey{
		RotationPolicy: cmapi.RotationPolicyAlways,
		Encoding:       cmapi.PKCS8,
	}
	switch alg {
	case meshv1alpha1.KeyRSA:
		key.Algorithm, key.Size = cmapi.RSAKeyAlgorithm, 2048
	case meshv1alpha1.KeyEd25519:
		key.Algorithm = cmapi.Ed25519KeyAlgorithm
	default:
		key.Algorithm, key.Size = cmapi.ECDSAKeyAlgorithm, 256
	}
	return key
}

// Usages are the key usages of a workload certificate: it serves and calls
// over mTLS.
func Usages() []cmapi.KeyUsage {
	return []cmapi.KeyUsage{
		cmapi.UsageClientAuth,
		cmapi.UsageServerAuth,
		cmapi.UsageDigitalSignature,
		cmapi.UsageKeyEncipherment,
	}
}

// Certificate is the cert-manager Certificate that gives a service account
// its identity under the MeshIdentity. The caller sets the owner reference.
// The Secret cert-manager writes has the same name and carries the same
// labels, so it can be found (and watched) by label.
func Certificate(mi *meshv1alpha1.MeshIdentity, namespace, serviceAccount string) *cmapi.Certificate {
	duration, renewBefore := Lifetimes(&mi.Spec)
	name := CertificateName(serviceAccount)
	return &cmapi.Certificate{
		TypeMeta: metav1.TypeMeta{
			APIVersion: cmapi.SchemeGroupVersion.String(),
			Kind:       cmapi.CertificateKind,
		},
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: namespace,
			Labels:    Labels(mi.Name),
		},
		Spec: cmapi.CertificateSpec{
			SecretName: name,
			SecretTemplate: &cmapi.CertificateSecretTemplate{
				Labels: Labels(mi.Name),
			},
			URIs:                 []string{SpiffeID(mi.Spec.TrustDomain, namespace, serviceAccount)},
			Duration:             &metav1.Duration{Duration: duration},
			RenewBefore:          &metav1.Duration{Duration: renewBefore},
			IssuerRef:            IssuerRef(&mi.Spec),
			Usages:               Usages(),
			PrivateKey:           PrivateKey(mi.Spec.KeyAlgorithm),
			RevisionHistoryLimit: ptr.To[int32](revisionHistoryLimit),
		},
	}
}

// CertificateID returns the workload identity a Certificate asks for, read
// from its only URI SAN, and false when it asks for no workload SPIFFE ID.
func CertificateID(cert *cmapi.Certificate) (ID, bool) {
	if len(cert.Spec.URIs) != 1 {
		return ID{}, false
	}
	id, err := ParseSpiffeID(cert.Spec.URIs[0])
	if err != nil {
		return ID{}, false
	}
	return id, true
}
