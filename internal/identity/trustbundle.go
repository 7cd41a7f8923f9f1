package identity

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
)

const (
	// TrustBundleName is the ConfigMap that holds the trust bundle in every
	// meshed namespace.
	TrustBundleName = "weft-trust-bundle"
	// TrustBundleKey is the ConfigMap key of the PEM bundle, named like the
	// ca.crt key of cert-manager's Secrets so both mount the same way.
	TrustBundleKey = "ca.crt"
	// LegacyAnnotationRetiredRoots is where versions before status.trustRoots
	// recorded retired roots, on the trust bundle ConfigMaps themselves. It is
	// never read: anyone who may write ConfigMaps in one namespace could set
	// it. The controller removes it from the bundles it writes.
	LegacyAnnotationRetiredRoots = "weft.dev/retired-roots"

	pemTypeCertificate = "CERTIFICATE"
)

// Fingerprint is the hex SHA-256 of a certificate's DER encoding.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// ParseCertificates decodes every CERTIFICATE block of a PEM bundle. Blocks
// of other types and certificates that do not parse are reported in the
// error; the certificates that do parse are returned either way.
func ParseCertificates(bundle []byte) ([]*x509.Certificate, error) {
	var (
		certs []*x509.Certificate
		errs  []error
	)
	rest := bundle
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != pemTypeCertificate {
			errs = append(errs, fmt.Errorf("pem block %d is a %s, not a %s", n, block.Type, pemTypeCertificate))
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			errs = append(errs, fmt.Errorf("pem block %d: %w", n, err))
			continue
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 && len(errs) == 0 && len(bytes.TrimSpace(rest)) > 0 {
		errs = append(errs, errors.New("no pem data"))
	}
	return certs, errors.Join(errs...)
}

// EncodeCertificates writes certificates as one PEM bundle, without
// duplicates, ordered by NotBefore (oldest first) and then by fingerprint so
// that the same set always gives the same bytes.
func EncodeCertificates(certs []*x509.Certificate) []byte {
	byFP := make(map[string]*x509.Certificate, len(certs))
	for _, c := range certs {
		byFP[Fingerprint(c)] = c
	}
	sorted := slices.SortedFunc(maps.Values(byFP), func(a, b *x509.Certificate) int {
		return cmp.Or(a.NotBefore.Compare(b.NotBefore), cmp.Compare(Fingerprint(a), Fingerprint(b)))
	})
	var buf bytes.Buffer
	for _, c := range sorted {
		_ = pem.Encode(&buf, &pem.Block{Type: pemTypeCertificate, Bytes: c.Raw})
	}
	return buf.Bytes()
}

// MergeCAPEMs merges PEM bundles into one: duplicates removed, certificates
// expired at now dropped, deterministic order (see EncodeCertificates).
// Blocks that do not parse are left out and reported in the error.
func MergeCAPEMs(now time.Time, bundles ...[]byte) ([]byte, error) {
	var (
		all  []*x509.Certificate
		errs []error
	)
	for i, b := range bundles {
		certs, err := ParseCertificates(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("bundle %d: %w", i, err))
		}
		all = append(all, unexpired(certs, now)...)
	}
	return EncodeCertificates(all), errors.Join(errs...)
}

func unexpired(certs []*x509.Certificate, now time.Time) []*x509.Certificate {
	return slices.DeleteFunc(slices.Clone(certs), func(c *x509.Certificate) bool { return !now.Before(c.NotAfter) })
}

// TrustBundleInput is what the trust bundle is computed from. Both sources
// are out of reach of the users of the namespaces the bundle is published
// to: the published ConfigMaps are not an input, so whatever is written into
// one of them never becomes a root.
type TrustBundleInput struct {
	// Now is the current time.
	Now time.Time
	// Issued are the ca.crt values of the workload Secrets cert-manager
	// issued: the CAs that sign the certificates in use.
	Issued [][]byte
	// Recorded are the roots the previous bundle was made of, as kept in the
	// MeshIdentity's status.trustRoots: the only memory of roots that no
	// issued Secret names any more.
	Recorded []meshv1alpha1.TrustRoot
	// Overlap is how long a retired root stays trusted: the certificate
	// lifetime, so every certificate it signed expires before it is dropped.
	Overlap time.Duration
}

// TrustBundle is the bundle to publish.
type TrustBundle struct {
	// PEM holds every root to trust; empty when nothing is issued or
	// recorded.
	PEM []byte
	// Roots is the record to keep for the next computation
	// (status.trustRoots): at most meshv1alpha1.MaxTrustRoots roots, in the
	// order of PEM.
	Roots []meshv1alpha1.TrustRoot
	// NextChange is when the bundle changes next without any new input (a
	// root expires or a retired root's overlap ends); zero if never.
	NextChange time.Time
}

// trustedRoot is a root of the bundle being built; retiredAt is zero while
// an issued Secret names it.
type trustedRoot struct {
	cert      *x509.Certificate
	fp        string
	pem       string
	issued    bool
	retiredAt time.Time
}

// BuildTrustBundle computes the trust bundle during and outside CA rotations.
// Every unexpired CA that signed an issued certificate is trusted. A recorded
// root that no longer signs any issued certificate is retired: it stays for
// Overlap after it was first seen retired, so workloads that still hold
// certificates it signed keep working while the new root takes over. When
// nothing is issued (yet), the recorded roots stay as they are, so a moment
// without Secrets never empties the bundle.
//
// The record is bounded by meshv1alpha1.MaxTrustRoots: issued roots come
// first, then the most recently retired ones; retired roots beyond the bound
// are dropped early. Inputs that do not parse, recorded roots whose
// fingerprint does not match their certificate, and roots left out for the
// bound are reported in the error; the returned bundle is still usable.
func BuildTrustBundle(in TrustBundleInput) (TrustBundle, error) {
	var errs []error
	roots := map[string]*trustedRoot{}
	for i, b := range in.Issued {
		certs, err := ParseCertificates(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("issued ca %d: %w", i, err))
		}
		for _, c := range unexpired(certs, in.Now) {
			fp := Fingerprint(c)
			roots[fp] = &trustedRoot{cert: c, fp: fp, pem: encodePEM(c), issued: true}
		}
	}
	anyIssued := len(roots) > 0

	out := TrustBundle{}
	for i := range in.Recorded {
		rec := &in.Recorded[i]
		c, err := parseRecorded(rec)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !in.Now.Before(c.NotAfter) || roots[rec.Fingerprint] != nil {
			continue
		}
		root := &trustedRoot{cert: c, fp: rec.Fingerprint, pem: encodePEM(c)}
		if rec.RetiredAt != nil {
			root.retiredAt = rec.RetiredAt.Time
		} else if anyIssued {
			root.retiredAt = retirementTime(in.Now)
		}
		if !root.retiredAt.IsZero() && !in.Now.Before(root.retiredAt.Add(in.Overlap)) {
			continue
		}
		roots[rec.Fingerprint] = root
	}

	// Issued and still-current roots first, newest first; then retired
	// ones, most recently retired first.
	ranked := slices.SortedFunc(maps.Values(roots), func(a, b *trustedRoot) int {
		aRetired, bRetired := !a.retiredAt.IsZero(), !b.retiredAt.IsZero()
		switch {
		case aRetired != bRetired:
			if aRetired {
				return 1
			}
			return -1
		case aRetired:
			return cmp.Or(b.retiredAt.Compare(a.retiredAt), cmp.Compare(a.fp, b.fp))
		default:
			return cmp.Or(b.cert.NotBefore.Compare(a.cert.NotBefore), cmp.Compare(a.fp, b.fp))
		}
	})
	var trusted []*x509.Certificate
	for _, root := range ranked {
		var unrecordable string
		switch {
		case len(root.pem) > meshv1alpha1.MaxTrustRootPEMLength:
			unrecordable = fmt.Sprintf("its PEM is longer than %d bytes", meshv1alpha1.MaxTrustRootPEMLength)
		case len(out.Roots) == meshv1alpha1.MaxTrustRoots:
			unrecordable = fmt.Sprintf("status.trustRoots holds at most %d roots", meshv1alpha1.MaxTrustRoots)
		}
		recordable := unrecordable == ""
		if !recordable {
			// An issued root is trusted all the same; it is only not
			// remembered, so it gets no overlap once retired.
			errs = append(errs, fmt.Errorf("root %s (%s) is not recorded: %s", root.fp, root.cert.Subject, unrecordable))
			if !root.issued {
				continue
			}
		}
		trusted = append(trusted, root.cert)
		out.NextChange = earliest(out.NextChange, root.cert.NotAfter)
		if !root.retiredAt.IsZero() {
			out.NextChange = earliest(out.NextChange, root.retiredAt.Add(in.Overlap))
		}
		if !recordable {
			continue
		}
		tr := meshv1alpha1.TrustRoot{
			Fingerprint: root.fp,
			NotAfter:    metav1.NewTime(root.cert.NotAfter),
			Certificate: root.pem,
		}
		if !root.retiredAt.IsZero() {
			tr.RetiredAt = &metav1.Time{Time: root.retiredAt}
		}
		out.Roots = append(out.Roots, tr)
	}
	if len(trusted) > 0 {
		out.PEM = EncodeCertificates(trusted)
	}
	slices.SortFunc(out.Roots, func(a, b meshv1alpha1.TrustRoot) int {
		return cmp.Or(roots[a.Fingerprint].cert.NotBefore.Compare(roots[b.Fingerprint].cert.NotBefore), cmp.Compare(a.Fingerprint, b.Fingerprint))
	})
	return out, errors.Join(errs...)
}

// parseRecorded reads one root of status.trustRoots; it must be exactly the
// certificate its fingerprint names.
func parseRecorded(rec *meshv1alpha1.TrustRoot) (*x509.Certificate, error) {
	certs, err := ParseCertificates([]byte(rec.Certificate))
	if err != nil || len(certs) != 1 {
		return nil, errors.Join(fmt.Errorf("recorded root %s: want one certificate, found %d", rec.Fingerprint, len(certs)), err)
	}
	if fp := Fingerprint(certs[0]); fp != rec.Fingerprint {
		return nil, fmt.Errorf("recorded root %s: the certificate's fingerprint is %s", rec.Fingerprint, fp)
	}
	return certs[0], nil
}

// retirementTime is now rounded up to the second that status times are
// stored with, so that storing it never shortens an overlap.
func retirementTime(now time.Time) time.Time {
	t := now.Truncate(time.Second)
	if t.Before(now) {
		t = t.Add(time.Second)
	}
	return t.UTC()
}

func encodePEM(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: pemTypeCertificate, Bytes: c.Raw}))
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// TrustBundleConfigMap is the trust bundle ConfigMap of a namespace. The
// caller sets the owner reference. The ConfigMap is output only: nothing in
// it is read back when the next bundle is computed.
func TrustBundleConfigMap(meshIdentityName, namespace string, tb TrustBundle) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      TrustBundleName,
			Namespace: namespace,
			Labels:    Labels(meshIdentityName),
		},
		Data: map[string]string{TrustBundleKey: string(tb.PEM)},
	}
}
