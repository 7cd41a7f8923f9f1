package testsigner

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Options configure a Signer.
type Options struct {
	// IssuerName is the name of the Issuer or ClusterIssuer the Signer
	// answers for. Required.
	IssuerName string
	// IssuerKind is ClusterIssuer (default) or Issuer.
	IssuerKind string
	// IssuerGroup is the issuer's API group; default cert-manager.io.
	IssuerGroup string
	// SkipIssuerCheck signs even when the issuer object does not exist.
	// By default a missing issuer leaves the Certificate pending, as
	// cert-manager would.
	SkipIssuerCheck bool
	// Clock decides notBefore, notAfter and when renewals are due; default
	// the real clock. Certificates verify against real time in TLS, so a
	// fake clock suits status and renewal tests, not handshakes.
	Clock clock.PassiveClock
	// Interval is how often Start looks at the Certificates; default 100ms.
	Interval time.Duration
	// CAValidity is the lifetime of the CAs the Signer creates; default a year.
	CAValidity time.Duration
}

// Signer issues certificates for one issuer from an in-memory CA.
type Signer struct {
	c    client.Client
	opts Options

	mu       sync.Mutex
	cas      []*authority // every CA so far; the last one signs
	failures map[types.NamespacedName]string
	renew    map[types.NamespacedName]bool
	renewAll bool
}

type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

const (
	defaultInterval    = 100 * time.Millisecond
	defaultCAValidity  = 365 * 24 * time.Hour
	defaultCertificate = 90 * 24 * time.Hour // cert-manager's default duration

	reasonReady   = "Ready"
	reasonPending = "Pending"
	reasonFailed  = "Failed"
	reasonIssuing = "Issuing"

	labelFAO = "controller.cert-manager.io/fao"
)

// New makes a Signer with a fresh CA. The client should read from the API
// server directly (not a cache that may lag), as the Signer's next poll
// decides from what it reads.
func New(c client.Client, opts Options) (*Signer, error) {
	if opts.IssuerName == "" {
		return nil, errors.New("testsigner: IssuerName is required")
	}
	if opts.IssuerKind == "" {
		opts.IssuerKind = cmapi.ClusterIssuerKind
	}
	if opts.IssuerKind != cmapi.ClusterIssuerKind && opts.IssuerKind != cmapi.IssuerKind {
		return nil, fmt.Errorf("testsigner: IssuerKind %q is neither %s nor %s", opts.IssuerKind, cmapi.ClusterIssuerKind, cmapi.IssuerKind)
	}
	if opts.IssuerGroup == "" {
		opts.IssuerGroup = "cert-manager.io"
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Interval <= 0 {
		opts.Interval = defaultInterval
	}
	if opts.CAValidity <= 0 {
		opts.CAValidity = defaultCAValidity
	}
	s := &Signer{c: c, opts: opts, failures: map[types.NamespacedName]string{}, renew: map[types.NamespacedName]bool{}}
	if err := s.RotateCA(); err != nil {
		return nil, err
	}
	return s, nil
}

// RotateCA replaces the signing CA with a new one. Certificates issued from
// now on chain to the new CA; existing ones are not touched until they
// renew (call RenewAll to renew them now, as `cmctl renew` would).
func (s *Signer) RotateCA() error {
	now := s.opts.Clock.Now()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("testsigner: generating ca key: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: fmt.Sprintf("%s CA %d", s.opts.IssuerName, len(s.cas)+1), Organization: []string{"weft testsigner"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(s.opts.CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("testsigner: creating ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("testsigner: parsing ca certificate: %w", err)
	}
	s.cas = append(s.cas, &authority{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})})
	return nil
}

// CAPEM is the PEM of the CA that signs now.
func (s *Signer) CAPEM() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.current().pem)
}

// CA is the certificate of the CA that signs now.
func (s *Signer) CA() *x509.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current().cert
}

func (s *Signer) current() *authority { return s.cas[len(s.cas)-1] }

// Renew asks for the Certificate to be issued again on the next pass.
func (s *Signer) Renew(key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.renew[key] = true
}

// RenewAll asks for every Certificate of the issuer to be issued again on
// the next pass.
func (s *Signer) RenewAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.renewAll = true
}

// Fail makes issuance of the Certificate fail with message, as a CA that
// refuses to sign would: Ready=False and Issuing=False with reason Failed,
// lastFailureTime and failedIssuanceAttempts set. The Secret is left alone.
func (s *Signer) Fail(key types.NamespacedName, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures[key] = message
}

// Recover undoes Fail: the Certificate is issued on the next pass.
func (s *Signer) Recover(key types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.failures, key)
	s.renew[key] = true
}

// NeedLeaderElection lets a manager run the Signer on every replica.
func (s *Signer) NeedLeaderElection() bool { return false }

// Start runs passes until ctx ends. Errors of one pass are logged and the
// next pass tries again. It satisfies controller-runtime's manager.Runnable.
func (s *Signer) Start(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx).WithName("testsigner")
	ticker := time.NewTicker(s.opts.Interval)
	defer ticker.Stop()
	for {
		if err := s.Sync(ctx); err != nil && ctx.Err() == nil {
			log.Error(err, "signer pass failed", "issuer", s.opts.IssuerName)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// Sync makes one pass over the Certificates of the issuer: it issues what
// needs issuing and reports what cannot be.
func (s *Signer) Sync(ctx context.Context) error {
	var list cmapi.CertificateList
	if err := s.c.List(ctx, &list); err != nil {
		return fmt.Errorf("listing certificates: %w", err)
	}
	s.mu.Lock()
	all := s.renewAll
	s.renewAll = false
	if all {
		for i := range list.Items {
			s.renew[client.ObjectKeyFromObject(&list.Items[i])] = true
		}
	}
	s.mu.Unlock()

	var errs []error
	for i := range list.Items {
		cert := &list.Items[i]
		if !s.answersFor(cert) || cert.DeletionTimestamp != nil {
			continue
		}
		if err := s.syncCertificate(ctx, cert); err != nil {
			errs = append(errs, fmt.Errorf("certificate %s/%s: %w", cert.Namespace, cert.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (s *Signer) answersFor(cert *cmapi.Certificate) bool {
	ref := cert.Spec.IssuerRef
	kind := cmp.Or(ref.Kind, cmapi.IssuerKind) // cert-manager's default kind
	group := cmp.Or(ref.Group, "cert-manager.io")
	return ref.Name == s.opts.IssuerName && kind == s.opts.IssuerKind && group == s.opts.IssuerGroup
}

func (s *Signer) syncCertificate(ctx context.Context, cert *cmapi.Certificate) error {
	key := client.ObjectKeyFromObject(cert)
	now := s.opts.Clock.Now()

	s.mu.Lock()
	failure, failing := s.failures[key]
	asked := s.renew[key]
	s.mu.Unlock()

	if failing {
		return s.markFailed(ctx, cert, failure, now)
	}

	var secret corev1.Secret
	err := s.c.Get(ctx, types.NamespacedName{Namespace: cert.Namespace, Name: cert.Spec.SecretName}, &secret)
	switch {
	case apierrors.IsNotFound(err):
		secret = corev1.Secret{}
	case err != nil:
		return fmt.Errorf("reading secret: %w", err)
	}
	if !asked && !s.needsIssuance(cert, &secret, now) {
		return nil
	}

	if !s.opts.SkipIssuerCheck {
		missing, err := s.issuerMissing(ctx, cert.Namespace)
		if err != nil {
			return err
		}
		if missing != "" {
			return s.setStatus(ctx, cert, func(st *cmapi.CertificateStatus) {
				setCondition(st, cert.Generation, cmapi.CertificateConditionReady, cmmeta.ConditionFalse, reasonPending, missing, now)
				setCondition(st, cert.Generation, cmapi.CertificateConditionIssuing, cmmeta.ConditionTrue, reasonIssuing, "Issuing certificate as Secret does not exist", now)
			})
		}
	}

	if err := s.issue(ctx, cert, &secret, now); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.renew, key)
	s.mu.Unlock()
	return nil
}

// needsIssuance is the Signer's version of cert-manager's readiness checks:
// no usable Secret, a spec the last issuance did not see, or renewal due.
func (s *Signer) needsIssuance(cert *cmapi.Certificate, secret *corev1.Secret, now time.Time) bool {
	ready := condition(&cert.Status, cmapi.CertificateConditionReady)
	switch {
	case len(secret.Data[corev1.TLSCertKey]) == 0 || len(secret.Data[corev1.TLSPrivateKeyKey]) == 0:
		return true
	case secret.Annotations[cmapi.CertificateNameKey] != cert.Name:
		return true
	case cert.Status.Revision == nil || ready == nil || ready.Status != cmmeta.ConditionTrue:
		return true
	case ready.ObservedGeneration != cert.Generation:
		return true
	case cert.Status.RenewalTime != nil && !now.Before(cert.Status.RenewalTime.Time):
		return true
	}
	return false
}

// issuerMissing returns cert-manager's message when the issuer object does
// not exist, and "" when it does.
func (s *Signer) issuerMissing(ctx context.Context, namespace string) (string, error) {
	var (
		obj client.Object
		key = types.NamespacedName{Name: s.opts.IssuerName}
	)
	if s.opts.IssuerKind == cmapi.ClusterIssuerKind {
		obj = &cmapi.ClusterIssuer{}
	} else {
		obj = &cmapi.Issuer{}
		key.Namespace = namespace
	}
	err := s.c.Get(ctx, key, obj)
	if apierrors.IsNotFound(err) {
		return fmt.Sprintf("Referenced %q not found: %v", s.opts.IssuerKind, err), nil
	}
	if err != nil {
		return "", fmt.Errorf("reading issuer: %w", err)
	}
	return "", nil
}

func (s *Signer) markFailed(ctx context.Context, cert *cmapi.Certificate, message string, now time.Time) error {
	issuing := condition(&cert.Status, cmapi.CertificateConditionIssuing)
	full := "The certificate request has failed to complete and will be retried: " + message
	if issuing != nil && issuing.Status == cmmeta.ConditionFalse && issuing.Message == full {
		return nil // already reported; do not churn the status
	}
	return s.setStatus(ctx, cert, func(st *cmapi.CertificateStatus) {
		ready := condition(st, cmapi.CertificateConditionReady)
		if ready == nil || ready.Status != cmmeta.ConditionTrue {
			setCondition(st, cert.Generation, cmapi.CertificateConditionReady, cmmeta.ConditionFalse, reasonFailed, message, now)
		}
		setCondition(st, cert.Generation, cmapi.CertificateConditionIssuing, cmmeta.ConditionFalse, reasonFailed, full, now)
		st.LastFailureTime = &metav1.Time{Time: now}
		st.FailedIssuanceAttempts = ptr.To(ptr.Deref(st.FailedIssuanceAttempts, 0) + 1)
	})
}

func (s *Signer) setStatus(ctx context.Context, cert *cmapi.Certificate, mutate func(*cmapi.CertificateStatus)) error {
	before := cert.Status.DeepCopy()
	mutate(&cert.Status)
	if equalStatus(before, &cert.Status) {
		return nil
	}
	if err := s.c.Status().Update(ctx, cert); err != nil {
		return fmt.Errorf("updating status: %w", err)
	}
	return nil
}

func (s *Signer) issue(ctx context.Context, cert *cmapi.Certificate, secret *corev1.Secret, now time.Time) error {
	spec := &cert.Spec
	duration := defaultCertificate
	if spec.Duration != nil && spec.Duration.Duration > 0 {
		duration = spec.Duration.Duration
	}
	renewBefore := duration / 3
	switch {
	case spec.RenewBefore != nil && spec.RenewBefore.Duration > 0 && spec.RenewBefore.Duration < duration:
		renewBefore = spec.RenewBefore.Duration
	case spec.RenewBeforePercentage != nil:
		renewBefore = duration * time.Duration(*spec.RenewBeforePercentage) / 100
	}

	key, keyPEM, err := generateKey(spec.PrivateKey)
	if err != nil {
		return err
	}
	tmpl, err := template(spec, now, duration)
	if err != nil {
		return err
	}

	s.mu.Lock()
	ca := s.current()
	s.mu.Unlock()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return fmt.Errorf("signing: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("parsing issued certificate: %w", err)
	}
	// Like cert-manager, tls.crt holds the chain up to but not including a
	// self-signed root; with a root CA that is the leaf alone.
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})

	if err := s.writeSecret(ctx, cert, secret, chain, keyPEM, ca.pem, leaf); err != nil {
		return err
	}
	return s.setStatus(ctx, cert, func(st *cmapi.CertificateStatus) {
		setCondition(st, cert.Generation, cmapi.CertificateConditionReady, cmmeta.ConditionTrue, reasonReady, "Certificate is up to date and has not expired", now)
		st.Conditions = slices.DeleteFunc(st.Conditions, func(c cmapi.CertificateCondition) bool { return c.Type == cmapi.CertificateConditionIssuing })
		st.NotBefore = &metav1.Time{Time: leaf.NotBefore}
		st.NotAfter = &metav1.Time{Time: leaf.NotAfter}
		st.RenewalTime = &metav1.Time{Time: leaf.NotAfter.Add(-renewBefore)}
		st.Revision = ptr.To(ptr.Deref(st.Revision, 0) + 1)
		st.LastFailureTime = nil
		st.FailedIssuanceAttempts = nil
	})
}

func (s *Signer) writeSecret(ctx context.Context, cert *cmapi.Certificate, secret *corev1.Secret, chain, keyPEM, caPEM []byte, leaf *x509.Certificate) error {
	exists := secret.Name != ""
	if !exists {
		secret.Name = cert.Spec.SecretName
		secret.Namespace = cert.Namespace
	}
	secret.Type = corev1.SecretTypeTLS
	if secret.Labels == nil {
		secret.Labels = map[string]string{}
	}
	if secret.Annotations == nil {
		secret.Annotations = map[string]string{}
	}
	if t := cert.Spec.SecretTemplate; t != nil {
		for k, v := range t.Labels {
			secret.Labels[k] = v
		}
		for k, v := range t.Annotations {
			secret.Annotations[k] = v
		}
	}
	secret.Labels[labelFAO] = "true"
	ips := make([]string, 0, len(leaf.IPAddresses))
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	uris := make([]string, 0, len(leaf.URIs))
	for _, u := range leaf.URIs {
		uris = append(uris, u.String())
	}
	for k, v := range map[string]string{
		cmapi.CertificateNameKey:       cert.Name,
		cmapi.IssuerNameAnnotationKey:  s.opts.IssuerName,
		cmapi.IssuerKindAnnotationKey:  s.opts.IssuerKind,
		cmapi.IssuerGroupAnnotationKey: s.opts.IssuerGroup,
		cmapi.CommonNameAnnotationKey:  leaf.Subject.CommonName,
		cmapi.AltNamesAnnotationKey:    strings.Join(leaf.DNSNames, ","),
		cmapi.IPSANAnnotationKey:       strings.Join(ips, ","),
		cmapi.URISANAnnotationKey:      strings.Join(uris, ","),
		cmapi.EmailsAnnotationKey:      strings.Join(leaf.EmailAddresses, ","),
	} {
		secret.Annotations[k] = v
	}
	secret.Data = map[string][]byte{
		corev1.TLSCertKey:       chain,
		corev1.TLSPrivateKeyKey: keyPEM,
		cmmeta.TLSCAKey:         caPEM,
	}
	if exists {
		if err := s.c.Update(ctx, secret); err != nil {
			return fmt.Errorf("updating secret: %w", err)
		}
		return nil
	}
	if err := s.c.Create(ctx, secret); err != nil {
		return fmt.Errorf("creating secret: %w", err)
	}
	return nil
}

func template(spec *cmapi.CertificateSpec, now time.Time, duration time.Duration) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: spec.CommonName},
		DNSNames:              spec.DNSNames,
		EmailAddresses:        spec.EmailAddresses,
		NotBefore:             now,
		NotAfter:              now.Add(duration),
		IsCA:                  spec.IsCA,
		BasicConstraintsValid: true,
	}
	if spec.Subject != nil {
		tmpl.Subject.Organization = spec.Subject.Organizations
		tmpl.Subject.OrganizationalUnit = spec.Subject.OrganizationalUnits
	}
	for _, s := range spec.URIs {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("spec.uris: %w", err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	for _, s := range spec.IPAddresses {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, fmt.Errorf("spec.ipAddresses: %q is not an IP address", s)
		}
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}
	usages := spec.Usages
	if len(usages) == 0 {
		usages = []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageKeyEncipherment}
	}
	for _, u := range usages {
		switch u {
		case cmapi.UsageDigitalSignature, cmapi.UsageSigning:
			tmpl.KeyUsage |= x509.KeyUsageDigitalSignature
		case cmapi.UsageKeyEncipherment:
			tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
		case cmapi.UsageContentCommitment:
			tmpl.KeyUsage |= x509.KeyUsageContentCommitment
		case cmapi.UsageDataEncipherment:
			tmpl.KeyUsage |= x509.KeyUsageDataEncipherment
		case cmapi.UsageKeyAgreement:
			tmpl.KeyUsage |= x509.KeyUsageKeyAgreement
		case cmapi.UsageCertSign:
			tmpl.KeyUsage |= x509.KeyUsageCertSign
		case cmapi.UsageCRLSign:
			tmpl.KeyUsage |= x509.KeyUsageCRLSign
		case cmapi.UsageServerAuth:
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		case cmapi.UsageClientAuth:
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
		case cmapi.UsageCodeSigning:
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageCodeSigning)
		case cmapi.UsageEmailProtection:
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageEmailProtection)
		case cmapi.UsageTimestamping:
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageTimeStamping)
		case cmapi.UsageOCSPSigning:
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning)
		default:
			return nil, fmt.Errorf("spec.usages: %q is not supported", u)
		}
	}
	if spec.IsCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	return tmpl, nil
}

// generateKey makes a new private key as the Certificate asks and encodes
// it the way cert-manager does: PKCS#1 (RSA) or SEC 1 (ECDSA) by default,
// PKCS#8 on request and always for Ed25519.
func generateKey(pk *cmapi.CertificatePrivateKey) (crypto.Signer, []byte, error) {
	if pk == nil {
		pk = &cmapi.CertificatePrivateKey{}
	}
	var (
		key   crypto.Signer
		block *pem.Block
		err   error
	)
	switch pk.Algorithm {
	case "", cmapi.RSAKeyAlgorithm:
		size := pk.Size
		if size == 0 {
			size = 2048
		}
		var k *rsa.PrivateKey
		if k, err = rsa.GenerateKey(rand.Reader, size); err == nil {
			key, block = k, &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
		}
	case cmapi.ECDSAKeyAlgorithm:
		var curve elliptic.Curve
		switch pk.Size {
		case 0, 256:
			curve = elliptic.P256()
		case 384:
			curve = elliptic.P384()
		case 521:
			curve = elliptic.P521()
		default:
			return nil, nil, fmt.Errorf("spec.privateKey.size: %d is not an ECDSA curve size", pk.Size)
		}
		var k *ecdsa.PrivateKey
		if k, err = ecdsa.GenerateKey(curve, rand.Reader); err == nil {
			var der []byte
			if der, err = x509.MarshalECPrivateKey(k); err == nil {
				key, block = k, &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
			}
		}
	case cmapi.Ed25519KeyAlgorithm:
		var k ed25519.PrivateKey
		if _, k, err = ed25519.GenerateKey(rand.Reader); err == nil {
			key = k
		}
	default:
		return nil, nil, fmt.Errorf("spec.privateKey.algorithm: %q is not supported", pk.Algorithm)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("generating %s key: %w", pk.Algorithm, err)
	}
	if block == nil || pk.Encoding == cmapi.PKCS8 {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, nil, fmt.Errorf("encoding key: %w", err)
		}
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	return key, pem.EncodeToMemory(block), nil
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("testsigner: serial number: %w", err)
	}
	return serial, nil
}

func condition(st *cmapi.CertificateStatus, t cmapi.CertificateConditionType) *cmapi.CertificateCondition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			return &st.Conditions[i]
		}
	}
	return nil
}

// setCondition sets a condition, moving lastTransitionTime only when the
// status changes, as cert-manager does.
func setCondition(st *cmapi.CertificateStatus, gen int64, t cmapi.CertificateConditionType, status cmmeta.ConditionStatus, reason, message string, now time.Time) {
	c := condition(st, t)
	if c == nil {
		st.Conditions = append(st.Conditions, cmapi.CertificateCondition{Type: t})
		c = &st.Conditions[len(st.Conditions)-1]
	}
	if c.Status != status || c.LastTransitionTime == nil {
		c.LastTransitionTime = &metav1.Time{Time: now}
	}
	c.Status, c.Reason, c.Message, c.ObservedGeneration = status, reason, message, gen
}

func equalStatus(a, b *cmapi.CertificateStatus) bool {
	return equality.Semantic.DeepEqual(a, b)
}
