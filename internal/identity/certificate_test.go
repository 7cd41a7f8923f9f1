package identity

import (
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
)

func meshIdentity(mutate ...func(*meshv1alpha1.MeshIdentity)) *meshv1alpha1.MeshIdentity {
	mi := &meshv1alpha1.MeshIdentity{
		ObjectMeta: metav1.ObjectMeta{Name: "mesh"},
		Spec: meshv1alpha1.MeshIdentitySpec{
			TrustDomain: "cluster.local",
			IssuerRef:   meshv1alpha1.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"},
			Duration:    metav1.Duration{Duration: 24 * time.Hour},
		},
	}
	for _, m := range mutate {
		m(mi)
	}
	return mi
}

func TestCertificateSpec(t *testing.T) {
	got := Certificate(meshIdentity(), "shop", "checkout")
	want := &cmapi.Certificate{
		TypeMeta: metav1.TypeMeta{APIVersion: "cert-manager.io/v1", Kind: "Certificate"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      "weft-identity-checkout",
			Namespace: "shop",
			Labels:    map[string]string{"weft.dev/identity": "mesh", "app.kubernetes.io/managed-by": "weft"},
		},
		Spec: cmapi.CertificateSpec{
			SecretName:     "weft-identity-checkout",
			SecretTemplate: &cmapi.CertificateSecretTemplate{Labels: map[string]string{"weft.dev/identity": "mesh", "app.kubernetes.io/managed-by": "weft"}},
			URIs:           []string{"spiffe://cluster.local/ns/shop/sa/checkout"},
			Duration:       &metav1.Duration{Duration: 24 * time.Hour},
			RenewBefore:    &metav1.Duration{Duration: 8 * time.Hour},
			IssuerRef:      cmmeta.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"},
			Usages:         []cmapi.KeyUsage{cmapi.UsageClientAuth, cmapi.UsageServerAuth, cmapi.UsageDigitalSignature, cmapi.UsageKeyEncipherment},
			PrivateKey: &cmapi.CertificatePrivateKey{
				RotationPolicy: cmapi.RotationPolicyAlways,
				Encoding:       cmapi.PKCS8,
				Algorithm:      cmapi.ECDSAKeyAlgorithm,
				Size:           256,
			},
			RevisionHistoryLimit: ptr.To[int32](2),
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Certificate (-want +got):\n%s", diff)
	}
	if id, ok := CertificateID(got); !ok || id.ServiceAccount != "checkout" || id.Namespace != "shop" {
		t.Fatalf("CertificateID = %+v, %v", id, ok)
	}
}

func TestCertificateOptions(t *testing.T) {
	got := Certificate(meshIdentity(func(mi *meshv1alpha1.MeshIdentity) {
		mi.Spec.Duration = metav1.Duration{Duration: 90 * time.Hour}
		mi.Spec.RenewBefore = &metav1.Duration{Duration: 10 * time.Hour}
		mi.Spec.IssuerRef = meshv1alpha1.IssuerReference{Name: "ns-ca", Kind: "Issuer", Group: "cert-manager.io"}
		mi.Spec.KeyAlgorithm = meshv1alpha1.KeyRSA
	}), "shop", "web")
	if got.Spec.Duration.Duration != 90*time.Hour || got.Spec.RenewBefore.Duration != 10*time.Hour {
		t.Errorf("lifetimes = %v/%v, want 90h/10h", got.Spec.Duration, got.Spec.RenewBefore)
	}
	if got.Spec.IssuerRef.Kind != "Issuer" || got.Spec.IssuerRef.Name != "ns-ca" {
		t.Errorf("issuerRef = %+v", got.Spec.IssuerRef)
	}
	if got.Spec.PrivateKey.Algorithm != cmapi.RSAKeyAlgorithm || got.Spec.PrivateKey.Size != 2048 {
		t.Errorf("private key = %+v, want RSA 2048", got.Spec.PrivateKey)
	}

	ed := Certificate(meshIdentity(func(mi *meshv1alpha1.MeshIdentity) { mi.Spec.KeyAlgorithm = meshv1alpha1.KeyEd25519 }), "shop", "web")
	if ed.Spec.PrivateKey.Algorithm != cmapi.Ed25519KeyAlgorithm || ed.Spec.PrivateKey.Size != 0 {
		t.Errorf("private key = %+v, want Ed25519", ed.Spec.PrivateKey)
	}
}

func TestDefaultsWithoutAPIServer(t *testing.T) {
	// Objects built in Go skip the API server's defaulting; the builder must
	// still produce a valid Certificate.
	mi := &meshv1alpha1.MeshIdentity{
		ObjectMeta: metav1.ObjectMeta{Name: "bare"},
		Spec:       meshv1alpha1.MeshIdentitySpec{TrustDomain: "td", IssuerRef: meshv1alpha1.IssuerReference{Name: "ca"}},
	}
	c := Certificate(mi, "ns", "sa")
	if c.Spec.Duration.Duration != DefaultDuration || c.Spec.RenewBefore.Duration != DefaultDuration/3 {
		t.Errorf("lifetimes = %v/%v", c.Spec.Duration, c.Spec.RenewBefore)
	}
	if c.Spec.IssuerRef.Kind != "ClusterIssuer" || c.Spec.IssuerRef.Group != "cert-manager.io" {
		t.Errorf("issuerRef = %+v", c.Spec.IssuerRef)
	}
	if c.Spec.PrivateKey.Algorithm != cmapi.ECDSAKeyAlgorithm {
		t.Errorf("algorithm = %v", c.Spec.PrivateKey.Algorithm)
	}
}

func TestLifetimesIgnoresRenewBeforeNotShorterThanDuration(t *testing.T) {
	spec := &meshv1alpha1.MeshIdentitySpec{
		Duration:    metav1.Duration{Duration: time.Hour},
		RenewBefore: &metav1.Duration{Duration: 2 * time.Hour},
	}
	d, rb := Lifetimes(spec)
	if d != time.Hour || rb != 20*time.Minute {
		t.Fatalf("Lifetimes = %v, %v; want 1h, 20m", d, rb)
	}
}

func TestCertificateNameTruncation(t *testing.T) {
	short := CertificateName("web")
	if short != "weft-identity-web" {
		t.Fatalf("CertificateName(web) = %q", short)
	}
	exact := strings.Repeat("a", MaxNameLength-len(CertificateNamePrefix))
	if got := CertificateName(exact); got != CertificateNamePrefix+exact {
		t.Fatalf("a name of exactly %d characters must not change, got %q", MaxNameLength, got)
	}

	long1 := strings.Repeat("a", 100) + "-one"
	long2 := strings.Repeat("a", 100) + "-two"
	dotty := strings.Repeat("a", 37) + ".-" + strings.Repeat("b", 100)
	seen := map[string]string{}
	for _, sa := range []string{long1, long2, dotty, strings.Repeat("x", 253)} {
		got := CertificateName(sa)
		if len(got) > MaxNameLength {
			t.Errorf("CertificateName(%q) is %d long", sa, len(got))
		}
		if got != CertificateName(sa) {
			t.Errorf("CertificateName(%q) is not stable", sa)
		}
		if !strings.HasPrefix(got, CertificateNamePrefix) {
			t.Errorf("CertificateName(%q) = %q lacks the prefix", sa, got)
		}
		if errs := validation.IsDNS1123Label(got); len(errs) > 0 {
			t.Errorf("CertificateName(%q) = %q: %v", sa, got, errs)
		}
		if errs := validation.IsValidLabelValue(got); len(errs) > 0 {
			t.Errorf("CertificateName(%q) = %q: %v", sa, got, errs)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("CertificateName(%q) = CertificateName(%q) = %q", sa, other, got)
		}
		seen[got] = sa
	}
}

func TestLabelValueOfLongName(t *testing.T) {
	long := strings.Repeat("m", 200)
	v := LabelValue(long)
	if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
		t.Fatalf("LabelValue = %q: %v", v, errs)
	}
	if LabelValue("mesh") != "mesh" {
		t.Fatalf("short names must be used as they are")
	}
}

func TestNamespaceSelector(t *testing.T) {
	sel, err := NamespaceSelector(&meshv1alpha1.MeshIdentitySpec{})
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set{"weft.dev/inject": "enabled"}) || sel.Matches(labels.Set{"weft.dev/inject": "disabled"}) {
		t.Fatalf("default selector = %v", sel)
	}
	sel, err = NamespaceSelector(&meshv1alpha1.MeshIdentitySpec{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "shop"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set{"team": "shop"}) || sel.Matches(labels.Set{"weft.dev/inject": "enabled"}) {
		t.Fatalf("selector = %v", sel)
	}
	_, err = NamespaceSelector(&meshv1alpha1.MeshIdentitySpec{NamespaceSelector: &metav1.LabelSelector{
		MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Near"}},
	}})
	if err == nil || !strings.Contains(err.Error(), "spec.namespaceSelector") {
		t.Fatalf("invalid selector error = %v, want one naming spec.namespaceSelector", err)
	}
}
