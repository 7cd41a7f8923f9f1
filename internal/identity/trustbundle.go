package identity

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// TrustBundleName is the ConfigMap that holds the trust bundle in every
	// meshed namespace.
	TrustBundleName = "weft-trust-bundle"
	// TrustBundleKey is the ConfigMap key of the PEM bundle, named like the
	// ca.crt key of cert-manager's Secrets so both mount the same way.
	TrustBundleKey = "ca.crt"
	// AnnotationRetiredRoots records, on the trust bundle ConfigMap, when each
	// root that no issued certificate names any more was first seen retired
	// (JSON: SHA-256 fingerprint to RFC 3339 time). A retired root stays
	// trusted for one certificate lifetime after that, then is dropped.
	AnnotationRetiredRoots = "weft.dev/retired-roots"

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

// TrustBundleInput is what the trust bundle is computed from.
type TrustBundleInput struct {
	// Now is the current time.
	Now time.Time
	// Issued are the ca.crt values of the workload Secrets cert-manager
	// issued: the CAs that sign the certificates in use.
	Issued [][]byte
	// Published are the bundles published so far.
	Published [][]byte
	// Retired is when each published root was first seen retired, by
	// fingerprint (from AnnotationRetiredRoots).
	Retired map[string]time.Time
	// Overlap is how long a retired root stays trusted: the certificate
	// lifetime, so every certificate it signed expires before it is dropped.
	Overlap time.Duration
}

// TrustBundle is the bundle to publish.
type TrustBundle struct {
	// PEM holds every root to trust; empty when nothing is issued yet.
	PEM []byte
	// Retired are the retired roots still trusted, with the time they were
	// first seen retired.
	Retired map[string]time.Time
	// NextChange is when the bundle changes next without any new input (a
	// root expires or a retired root's overlap ends); zero if never.
	NextChange time.Time
}

// BuildTrustBundle computes the trust bundle during and outside CA rotations.
// Every unexpired CA that signed an issued certificate is trusted. A root that
// was published but no longer signs any issued certificate is retired: it
// stays for Overlap after it was first seen retired, so workloads that still
// hold certificates it signed keep working while the new root takes over. When
// nothing is issued (yet), the published roots stay as they are, so a moment
// without Secrets never empties the bundle.
//
// Inputs that do not parse are skipped and reported in the error; the
// returned bundle is still usable.
func BuildTrustBundle(in TrustBundleInput) (TrustBundle, error) {
	var errs []error
	issued := map[string]*x509.Certificate{}
	for i, b := range in.Issued {
		certs, err := ParseCertificates(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("issued ca %d: %w", i, err))
		}
		for _, c := range unexpired(certs, in.Now) {
			issued[Fingerprint(c)] = c
		}
	}
	published := map[string]*x509.Certificate{}
	for i, b := range in.Published {
		certs, err := ParseCertificates(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("published bundle %d: %w", i, err))
		}
		for _, c := range unexpired(certs, in.Now) {
			published[Fingerprint(c)] = c
		}
	}

	out := TrustBundle{Retired: map[string]time.Time{}}
	trusted := slices.Collect(maps.Values(issued))
	for fp, c := range published {
		if _, ok := issued[fp]; ok {
			continue
		}
		retiredAt, wasRetired := in.Retired[fp]
		if !wasRetired {
			if len(issued) == 0 {
				// Nothing issued: no evidence that this root was replaced.
				trusted = append(trusted, c)
				continue
			}
			retiredAt = in.Now
		}
		end := retiredAt.Add(in.Overlap)
		if !in.Now.Before(end) {
			continue
		}
		out.Retired[fp] = retiredAt
		out.NextChange = earliest(out.NextChange, end)
		trusted = append(trusted, c)
	}
	for _, c := range trusted {
		out.NextChange = earliest(out.NextChange, c.NotAfter)
	}
	if len(trusted) > 0 {
		out.PEM = EncodeCertificates(trusted)
	}
	return out, errors.Join(errs...)
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// EncodeRetired is the value of AnnotationRetiredRoots; "" when no root is
// retired.
func EncodeRetired(retired map[string]time.Time) string {
	if len(retired) == 0 {
		return ""
	}
	m := make(map[string]string, len(retired))
	for fp, t := range retired {
		m[fp] = t.UTC().Format(time.RFC3339)
	}
	b, _ := json.Marshal(m) // a map of strings always marshals; keys come out sorted
	return string(b)
}

// DecodeRetired reads AnnotationRetiredRoots; "" is no retired root.
func DecodeRetired(s string) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	if s == "" {
		return out, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return out, fmt.Errorf("annotation %s: %w", AnnotationRetiredRoots, err)
	}
	var errs []error
	for fp, v := range m {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			errs = append(errs, fmt.Errorf("annotation %s: root %s: %w", AnnotationRetiredRoots, fp, err))
			continue
		}
		out[fp] = t
	}
	return out, errors.Join(errs...)
}

// MergeRetired combines the retirement records of several published bundles,
// keeping the earliest time per root so that no copy can extend an overlap.
func MergeRetired(records ...map[string]time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	for _, r := range records {
		for fp, t := range r {
			out[fp] = earliest(out[fp], t)
		}
	}
	return out
}

// TrustBundleConfigMap is the trust bundle ConfigMap of a namespace. The
// caller sets the owner reference.
func TrustBundleConfigMap(meshIdentityName, namespace string, tb TrustBundle) *corev1.ConfigMap {
	cm := &corev1.ConfigMap{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      TrustBundleName,
			Namespace: namespace,
			Labels:    Labels(meshIdentityName),
		},
		Data: map[string]string{TrustBundleKey: string(tb.PEM)},
	}
	if v := EncodeRetired(tb.Retired); v != "" {
		cm.Annotations = map[string]string{AnnotationRetiredRoots: v}
	}
	return cm
}
