package testsigner_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"slices"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weft-mesh/weft/internal/testenv"
	"github.com/weft-mesh/weft/internal/testsigner"
)

const ns = "signer"

func newCertificate(name string, mutate ...func(*cmapi.Certificate)) *cmapi.Certificate {
	c := &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: cmapi.CertificateSpec{
			SecretName:     name,
			SecretTemplate: &cmapi.CertificateSecretTemplate{Labels: map[string]string{"team": "shop"}, Annotations: map[string]string{"note": "kept"}},
			URIs:           []string{"spiffe://cluster.local/ns/signer/sa/" + name},
			Duration:       &metav1.Duration{Duration: 3 * time.Hour},
			RenewBefore:    &metav1.Duration{Duration: time.Hour},
			IssuerRef:      cmmeta.IssuerReference{Name: "test-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"},
			Usages:         []cmapi.KeyUsage{cmapi.UsageClientAuth, cmapi.UsageServerAuth, cmapi.UsageDigitalSignature, cmapi.UsageKeyEncipherment},
			PrivateKey:     &cmapi.CertificatePrivateKey{Algorithm: cmapi.ECDSAKeyAlgorithm, Size: 256, Encoding: cmapi.PKCS8, RotationPolicy: cmapi.RotationPolicyAlways},
		},
	}
	for _, m := range mutate {
		m(c)
	}
	return c
}

func get(t *testing.T, c client.Client, name string) (*cmapi.Certificate, *corev1.Secret) {
	t.Helper()
	var cert cmapi.Certificate
	if err := c.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: name}, &cert); err != nil {
		t.Fatalf("reading certificate: %v", err)
	}
	var secret corev1.Secret
	err := c.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: cert.Spec.SecretName}, &secret)
	if apierrors.IsNotFound(err) {
		return &cert, nil
	}
	if err != nil {
		t.Fatalf("reading secret: %v", err)
	}
	return &cert, &secret
}

func readyCondition(cert *cmapi.Certificate) *cmapi.CertificateCondition {
	for i := range cert.Status.Conditions {
		if cert.Status.Conditions[i].Type == cmapi.CertificateConditionReady {
			return &cert.Status.Conditions[i]
		}
	}
	return nil
}

func leafOf(t *testing.T, secret *corev1.Secret) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(secret.Data["tls.crt"])
	if block == nil {
		t.Fatal("tls.crt holds no PEM")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func mustSync(t *testing.T, s *testsigner.Signer) {
	t.Helper()
	if err := s.Sync(t.Context()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

func TestSigner(t *testing.T) {
	env := testenv.Start(t)
	c := env.Client
	if err := c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	s, err := testsigner.New(c, testsigner.Options{IssuerName: "test-ca", Clock: clk})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("missing issuer leaves the certificate pending", func(t *testing.T) {
		if err := c.Create(t.Context(), newCertificate("early")); err != nil {
			t.Fatal(err)
		}
		mustSync(t, s)
		cert, secret := get(t, c, "early")
		ready := readyCondition(cert)
		if ready == nil || ready.Status != cmmeta.ConditionFalse || ready.Reason != "Pending" || !strings.Contains(ready.Message, "not found") {
			t.Fatalf("Ready = %+v, want False/Pending naming the missing issuer", ready)
		}
		if secret != nil {
			t.Fatal("a Secret was written without an issuer")
		}
		rv := cert.ResourceVersion
		mustSync(t, s)
		if cert, _ := get(t, c, "early"); cert.ResourceVersion != rv {
			t.Fatal("a pass with nothing new rewrote the status")
		}
	})

	if err := s.EnsureIssuer(t.Context(), ""); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureIssuer(t.Context(), ""); err != nil {
		t.Fatalf("EnsureIssuer is not idempotent: %v", err)
	}

	t.Run("issues what the spec asks for", func(t *testing.T) {
		mustSync(t, s)
		cert, secret := get(t, c, "early")
		if r := readyCondition(cert); r == nil || r.Status != cmmeta.ConditionTrue || r.ObservedGeneration != cert.Generation {
			t.Fatalf("Ready = %+v", r)
		}
		if secret == nil {
			t.Fatal("no Secret")
		}
		if secret.Type != corev1.SecretTypeTLS {
			t.Errorf("Secret type = %q", secret.Type)
		}
		leaf := leafOf(t, secret)
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(secret.Data["ca.crt"]) {
			t.Fatal("ca.crt holds no certificate")
		}
		if string(secret.Data["ca.crt"]) != string(s.CAPEM()) {
			t.Error("ca.crt is not the signer's CA")
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: clk.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("leaf does not verify as a client certificate: %v", err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: clk.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("leaf does not verify as a server certificate: %v", err)
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/signer/sa/early" {
			t.Errorf("URIs = %v", leaf.URIs)
		}
		if leaf.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
			t.Errorf("KeyUsage = %v", leaf.KeyUsage)
		}
		if got := leaf.NotAfter.Sub(leaf.NotBefore); got != 3*time.Hour {
			t.Errorf("lifetime = %v, want 3h", got)
		}
		if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
			t.Errorf("public key is %T, want ECDSA", leaf.PublicKey)
		}
		if !strings.Contains(string(secret.Data["tls.key"]), "BEGIN PRIVATE KEY") {
			t.Error("tls.key is not PKCS#8 as the spec asks")
		}
		if _, err := tls.X509KeyPair(secret.Data["tls.crt"], secret.Data["tls.key"]); err != nil {
			t.Errorf("tls.crt and tls.key do not match: %v", err)
		}
		for k, want := range map[string]string{
			"cert-manager.io/certificate-name": "early",
			"cert-manager.io/issuer-name":      "test-ca",
			"cert-manager.io/issuer-kind":      "ClusterIssuer",
			"cert-manager.io/issuer-group":     "cert-manager.io",
			"cert-manager.io/uri-sans":         "spiffe://cluster.local/ns/signer/sa/early",
			"note":                             "kept",
		} {
			if got := secret.Annotations[k]; got != want {
				t.Errorf("annotation %s = %q, want %q", k, got, want)
			}
		}
		if secret.Labels["team"] != "shop" || secret.Labels["controller.cert-manager.io/fao"] != "true" {
			t.Errorf("labels = %v", secret.Labels)
		}
		st := cert.Status
		if st.Revision == nil || *st.Revision != 1 {
			t.Errorf("revision = %v, want 1", st.Revision)
		}
		if !st.NotAfter.Time.Equal(leaf.NotAfter) || !st.NotBefore.Time.Equal(leaf.NotBefore) {
			t.Errorf("status times %v..%v, certificate %v..%v", st.NotBefore, st.NotAfter, leaf.NotBefore, leaf.NotAfter)
		}
		if !st.RenewalTime.Time.Equal(leaf.NotAfter.Add(-time.Hour)) {
			t.Errorf("renewalTime = %v, want notAfter-1h", st.RenewalTime)
		}

		rv := cert.ResourceVersion
		mustSync(t, s)
		if again, _ := get(t, c, "early"); again.ResourceVersion != rv {
			t.Error("a pass with nothing due reissued the certificate")
		}
	})

	t.Run("key algorithms", func(t *testing.T) {
		for name, pk := range map[string]*cmapi.CertificatePrivateKey{
			"rsa":     {Algorithm: cmapi.RSAKeyAlgorithm, Size: 2048},
			"ed25519": {Algorithm: cmapi.Ed25519KeyAlgorithm},
		} {
			if err := c.Create(t.Context(), newCertificate(name, func(c *cmapi.Certificate) { c.Spec.PrivateKey = pk })); err != nil {
				t.Fatal(err)
			}
		}
		mustSync(t, s)
		_, rsaSecret := get(t, c, "rsa")
		if k, ok := leafOf(t, rsaSecret).PublicKey.(*rsa.PublicKey); !ok || k.N.BitLen() != 2048 {
			t.Errorf("rsa certificate has key %T", leafOf(t, rsaSecret).PublicKey)
		}
		if !strings.Contains(string(rsaSecret.Data["tls.key"]), "BEGIN RSA PRIVATE KEY") {
			t.Error("an RSA key without an encoding must be PKCS#1, as cert-manager writes it")
		}
		_, edSecret := get(t, c, "ed25519")
		if _, ok := leafOf(t, edSecret).PublicKey.(ed25519.PublicKey); !ok {
			t.Errorf("ed25519 certificate has key %T", leafOf(t, edSecret).PublicKey)
		}
		for _, sec := range []*corev1.Secret{rsaSecret, edSecret} {
			if _, err := tls.X509KeyPair(sec.Data["tls.crt"], sec.Data["tls.key"]); err != nil {
				t.Errorf("%s: key pair does not load: %v", sec.Name, err)
			}
		}
	})

	t.Run("renews when renewalTime passes", func(t *testing.T) {
		before, beforeSecret := get(t, c, "early")
		clk.SetTime(before.Status.RenewalTime.Add(-time.Second))
		mustSync(t, s)
		if mid, _ := get(t, c, "early"); *mid.Status.Revision != *before.Status.Revision {
			t.Fatal("renewed before renewalTime")
		}
		clk.SetTime(before.Status.RenewalTime.Time)
		mustSync(t, s)
		after, afterSecret := get(t, c, "early")
		if *after.Status.Revision != *before.Status.Revision+1 {
			t.Fatalf("revision %d -> %d, want one renewal", *before.Status.Revision, *after.Status.Revision)
		}
		if leafOf(t, afterSecret).SerialNumber.Cmp(leafOf(t, beforeSecret).SerialNumber) == 0 {
			t.Fatal("renewal kept the serial number")
		}
		if string(afterSecret.Data["tls.key"]) == string(beforeSecret.Data["tls.key"]) {
			t.Fatal("renewal kept the private key although rotationPolicy is Always")
		}
	})

	t.Run("renews on request", func(t *testing.T) {
		before, _ := get(t, c, "rsa")
		s.Renew(types.NamespacedName{Namespace: ns, Name: "rsa"})
		mustSync(t, s)
		after, _ := get(t, c, "rsa")
		if *after.Status.Revision != *before.Status.Revision+1 {
			t.Fatalf("revision %d -> %d", *before.Status.Revision, *after.Status.Revision)
		}
	})

	t.Run("failure and recovery", func(t *testing.T) {
		if err := c.Create(t.Context(), newCertificate("doomed")); err != nil {
			t.Fatal(err)
		}
		key := types.NamespacedName{Namespace: ns, Name: "doomed"}
		s.Fail(key, "the HSM is offline")
		mustSync(t, s)
		cert, secret := get(t, c, "doomed")
		if r := readyCondition(cert); r == nil || r.Status != cmmeta.ConditionFalse || r.Reason != "Failed" || r.Message != "the HSM is offline" {
			t.Fatalf("Ready = %+v", r)
		}
		if secret != nil || cert.Status.LastFailureTime == nil || *cert.Status.FailedIssuanceAttempts != 1 {
			t.Fatalf("status = %+v, secret %v", cert.Status, secret != nil)
		}
		rv := cert.ResourceVersion
		mustSync(t, s)
		if again, _ := get(t, c, "doomed"); again.ResourceVersion != rv {
			t.Fatal("a failing certificate's status churns")
		}

		// A renewal failure leaves an issued certificate Ready.
		s.Fail(types.NamespacedName{Namespace: ns, Name: "early"}, "renewal refused")
		mustSync(t, s)
		early, _ := get(t, c, "early")
		if r := readyCondition(early); r.Status != cmmeta.ConditionTrue {
			t.Fatalf("Ready of a still valid certificate = %+v", r)
		}

		s.Recover(key)
		s.Recover(types.NamespacedName{Namespace: ns, Name: "early"})
		mustSync(t, s)
		cert, secret = get(t, c, "doomed")
		if r := readyCondition(cert); r.Status != cmmeta.ConditionTrue || secret == nil || cert.Status.LastFailureTime != nil {
			t.Fatalf("after recovery: Ready %+v, secret %v", r, secret != nil)
		}
		if slices.ContainsFunc(cert.Status.Conditions, func(c cmapi.CertificateCondition) bool { return c.Type == cmapi.CertificateConditionIssuing }) {
			t.Fatal("Issuing condition left after a successful issuance")
		}
	})

	t.Run("CA rotation", func(t *testing.T) {
		oldCA := s.CAPEM()
		if err := s.RotateCA(); err != nil {
			t.Fatal(err)
		}
		if string(s.CAPEM()) == string(oldCA) {
			t.Fatal("RotateCA kept the CA")
		}
		mustSync(t, s)
		if _, sec := get(t, c, "early"); string(sec.Data["ca.crt"]) != string(oldCA) {
			t.Fatal("rotation alone must not reissue")
		}
		s.RenewAll()
		mustSync(t, s)
		for _, name := range []string{"early", "rsa", "ed25519", "doomed"} {
			_, sec := get(t, c, name)
			if string(sec.Data["ca.crt"]) != string(s.CAPEM()) {
				t.Errorf("%s: ca.crt is not the new CA", name)
			}
			if err := leafOf(t, sec).CheckSignatureFrom(s.CA()); err != nil {
				t.Errorf("%s: not signed by the new CA: %v", name, err)
			}
		}
	})

	t.Run("ignores other issuers", func(t *testing.T) {
		if err := c.Create(t.Context(), newCertificate("foreign", func(c *cmapi.Certificate) { c.Spec.IssuerRef.Name = "someone-else" })); err != nil {
			t.Fatal(err)
		}
		mustSync(t, s)
		cert, secret := get(t, c, "foreign")
		if len(cert.Status.Conditions) != 0 || secret != nil {
			t.Fatalf("touched a Certificate of another issuer: %+v", cert.Status)
		}
	})

	t.Run("Start issues in the background", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Start(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Start: %v", err)
			}
		}()
		if err := c.Create(t.Context(), newCertificate("background")); err != nil {
			t.Fatal(err)
		}
		err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			var cert cmapi.Certificate
			if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "background"}, &cert); err != nil {
				return false, err
			}
			r := readyCondition(&cert)
			return r != nil && r.Status == cmmeta.ConditionTrue, nil
		})
		if err != nil {
			t.Fatalf("certificate never became Ready: %v", err)
		}
	})
}

func TestNewValidates(t *testing.T) {
	if _, err := testsigner.New(nil, testsigner.Options{}); err == nil {
		t.Error("New without an issuer name succeeded")
	}
	if _, err := testsigner.New(nil, testsigner.Options{IssuerName: "x", IssuerKind: "Vault"}); err == nil {
		t.Error("New with an unknown issuer kind succeeded")
	}
}
