package webhookcert

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// Lifetimes. A serving certificate is renewed once two thirds of its life
// have passed, the CA when less than a year is left; the old CA stays in
// the bundle until it expires, so a replica still serving a certificate it
// signed is trusted meanwhile.
const (
	CertValidity  = 365 * 24 * time.Hour
	CAValidity    = 10 * 365 * 24 * time.Hour
	caRenewBefore = 365 * 24 * time.Hour
	checkEvery    = 10 * time.Minute
)

// Secret keys: the serving pair, the CA bundle (signing CA first) and the
// signing CA's key.
const (
	keyCert   = "tls.crt"
	keyKey    = "tls.key"
	keyBundle = "ca.crt"
	keyCAKey  = "ca.key"
)

// Manager keeps the webhook's certificate.
type Manager struct {
	// Client reads and writes directly (it runs before caches start).
	Client client.Client
	// Namespace and SecretName locate the Secret.
	Namespace, SecretName string
	// DNSNames are the serving certificate's names.
	DNSNames []string
	// Webhook is the MutatingWebhookConfiguration whose caBundle is set.
	Webhook string
	// APIService, when set, is the APIService (served with the same
	// certificate) whose caBundle is set too.
	APIService string
	// CertDir gets tls.crt and tls.key (and ca.crt).
	CertDir string
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// NeedLeaderElection is false: every replica serves the webhook and must
// have the current pair.
func (m *Manager) NeedLeaderElection() bool { return false }

// Start checks the certificate every few minutes until ctx ends.
func (m *Manager) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("webhook-certificate")
	t := time.NewTicker(checkEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := m.Ensure(ctx); err != nil {
				log.Error(err, "keeping the webhook certificate")
			}
		}
	}
}

// Ensure makes the Secret hold a CA and a serving certificate that are not
// due for renewal, writes the pair to CertDir and the CA bundle to the
// webhook configuration.
func (m *Manager) Ensure(ctx context.Context) error {
	var sec corev1.Secret
	err := retry.OnError(retry.DefaultRetry, func(err error) bool {
		return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
	}, func() error {
		var err error
		sec, err = m.ensureSecret(ctx)
		return err
	})
	if err != nil {
		return err
	}
	// The bundle first: after a CA renewal it holds both CAs, so the API
	// server trusts the new certificate by the time it is served.
	if err := m.setCABundle(ctx, sec.Data[keyBundle]); err != nil {
		return err
	}
	return m.writeFiles(sec.Data)
}

func (m *Manager) ensureSecret(ctx context.Context) (corev1.Secret, error) {
	var sec corev1.Secret
	err := m.Client.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.SecretName}, &sec)
	switch {
	case apierrors.IsNotFound(err):
		data, err := m.renew(nil)
		if err != nil {
			return sec, err
		}
		sec = corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: m.Namespace, Name: m.SecretName, Labels: map[string]string{"app.kubernetes.io/part-of": "weft"}},
			Type:       corev1.SecretTypeTLS,
			Data:       data,
		}
		return sec, m.Client.Create(ctx, &sec)
	case err != nil:
		return sec, err
	}
	if !m.due(sec.Data) {
		return sec, nil
	}
	data, err := m.renew(sec.Data)
	if err != nil {
		return sec, err
	}
	sec.Data = data
	// The update names the version read: a replica that renewed first
	// wins, and this one reads its pair on the retry.
	return sec, m.Client.Update(ctx, &sec)
}

// due says whether the stored pair must be replaced: missing or unreadable,
// not for these names, two thirds through its life, or signed by a CA that
// is due itself.
func (m *Manager) due(data map[string][]byte) bool {
	cert, err := parseCert(data[keyCert])
	if err != nil {
		return true
	}
	ca, _, err := m.signingCA(data)
	if err != nil {
		return true
	}
	now := m.now()
	life := cert.NotAfter.Sub(cert.NotBefore)
	if now.After(cert.NotBefore.Add(life * 2 / 3)) {
		return true
	}
	if now.Add(caRenewBefore).After(ca.NotAfter) {
		return true
	}
	if !slices.Equal(cert.DNSNames, m.DNSNames) {
		return true
	}
	if _, err := tlsPairMatches(data[keyCert], data[keyKey]); err != nil {
		return true
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	_, err = cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err != nil
}

// renew makes a new serving pair, and a new CA when the old one is
// missing or due; the bundle keeps old CAs that have not expired.
func (m *Manager) renew(old map[string][]byte) (map[string][]byte, error) {
	now := m.now()
	ca, caKey, err := m.signingCA(old)
	var bundle []*x509.Certificate
	if err != nil || now.Add(caRenewBefore).After(ca.NotAfter) {
		ca, caKey, err = newCA(now)
		if err != nil {
			return nil, err
		}
	}
	bundle = append(bundle, ca)
	if old != nil {
		for _, c := range parseCerts(old[keyBundle]) {
			if now.Before(c.NotAfter) && !c.Equal(ca) {
				bundle = append(bundle, c)
			}
		}
	}
	certPEM, keyPEM, err := m.newServing(now, ca, caKey)
	if err != nil {
		return nil, err
	}
	caKeyDER, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		return nil, err
	}
	var bundlePEM bytes.Buffer
	for _, c := range bundle {
		_ = pem.Encode(&bundlePEM, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return map[string][]byte{
		keyCert:   certPEM,
		keyKey:    keyPEM,
		keyBundle: bundlePEM.Bytes(),
		keyCAKey:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: caKeyDER}),
	}, nil
}

// signingCA is the first certificate of the bundle with its key.
func (m *Manager) signingCA(data map[string][]byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certs := parseCerts(data[keyBundle])
	if len(certs) == 0 {
		return nil, nil, errors.New("no CA")
	}
	blk, _ := pem.Decode(data[keyCAKey])
	if blk == nil {
		return nil, nil, errors.New("no CA key")
	}
	key, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		return nil, nil, err
	}
	if !key.PublicKey.Equal(certs[0].PublicKey) {
		return nil, nil, errors.New("the CA key does not match the CA")
	}
	return certs[0], key, nil
}

func newCA(now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "weft webhook CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

func (m *Manager) newServing(now time.Time, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: m.DNSNames[0]},
		DNSNames:     m.DNSNames,
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(CertValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

func parseCert(b []byte) (*x509.Certificate, error) {
	certs := parseCerts(b)
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	return certs[0], nil
}

func parseCerts(b []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

func tlsPairMatches(certPEM, keyPEM []byte) (bool, error) {
	cert, err := parseCert(certPEM)
	if err != nil {
		return false, err
	}
	blk, _ := pem.Decode(keyPEM)
	if blk == nil {
		return false, errors.New("no key")
	}
	key, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		return false, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return false, errors.New("the key does not match the certificate")
	}
	return true, nil
}

// writeFiles puts the pair where the webhook server reads it, each file
// replaced whole (the server's certificate watcher reloads it), and only
// when it changed.
func (m *Manager) writeFiles(data map[string][]byte) error {
	if err := os.MkdirAll(m.CertDir, 0o700); err != nil {
		return err
	}
	// The key first: the watcher reloads on the certificate's change.
	for _, name := range []string{keyKey, keyBundle, keyCert} {
		path := filepath.Join(m.CertDir, name)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data[name]) { //nolint:gosec // the directory the flag names
			continue
		}
		tmp, err := os.CreateTemp(m.CertDir, "."+name+".*")
		if err != nil {
			return err
		}
		if _, err := tmp.Write(data[name]); err != nil {
			_ = tmp.Close()
			return err
		}
		if err := tmp.Close(); err != nil {
			return err
		}
		if err := os.Rename(tmp.Name(), path); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return nil
}

// setCABundle puts bundle in every webhook of the configuration, and in
// the APIService.
func (m *Manager) setCABundle(ctx context.Context, bundle []byte) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var wh admissionregistrationv1.MutatingWebhookConfiguration
		if err := m.Client.Get(ctx, client.ObjectKey{Name: m.Webhook}, &wh); err != nil {
			return fmt.Errorf("reading MutatingWebhookConfiguration %s: %w", m.Webhook, err)
		}
		changed := false
		for i := range wh.Webhooks {
			if !bytes.Equal(wh.Webhooks[i].ClientConfig.CABundle, bundle) {
				wh.Webhooks[i].ClientConfig.CABundle = bundle
				changed = true
			}
		}
		if !changed {
			return nil
		}
		return m.Client.Update(ctx, &wh)
	})
	if err != nil || m.APIService == "" {
		return err
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		// Unstructured: the aggregator's types are not worth a module.
		var api unstructured.Unstructured
		api.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiregistration.k8s.io", Version: "v1", Kind: "APIService"})
		if err := m.Client.Get(ctx, client.ObjectKey{Name: m.APIService}, &api); err != nil {
			return fmt.Errorf("reading APIService %s: %w", m.APIService, err)
		}
		cur, _, _ := unstructured.NestedString(api.Object, "spec", "caBundle")
		want := base64.StdEncoding.EncodeToString(bundle)
		if cur == want {
			return nil
		}
		if err := unstructured.SetNestedField(api.Object, want, "spec", "caBundle"); err != nil {
			return err
		}
		return m.Client.Update(ctx, &api)
	})
}
