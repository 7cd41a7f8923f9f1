package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

const (
	spiffeScheme = "spiffe://"
	// maxSpiffeIDLength is the longest SPIFFE ID the SPIFFE specification allows.
	maxSpiffeIDLength = 2048
	// maxTrustDomainLength is the longest trust domain the SPIFFE specification allows.
	maxTrustDomainLength = 255
)

// ID is a workload identity: a service account in a namespace of a trust domain.
type ID struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// String is the SPIFFE ID, spiffe://<trust domain>/ns/<namespace>/sa/<service account>.
func (id ID) String() string {
	return SpiffeID(id.TrustDomain, id.Namespace, id.ServiceAccount)
}

// SpiffeID formats the SPIFFE ID of a service account. It does not validate
// its arguments; ParseSpiffeID does.
func SpiffeID(trustDomain, namespace, serviceAccount string) string {
	return spiffeScheme + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// ValidateTrustDomain reports whether td is a SPIFFE trust domain: 1 to 255
// lowercase letters, digits, '.', '-' and '_'.
func ValidateTrustDomain(td string) error {
	if td == "" {
		return errors.New("trust domain is empty")
	}
	if len(td) > maxTrustDomainLength {
		return fmt.Errorf("trust domain is %d characters long, the limit is %d", len(td), maxTrustDomainLength)
	}
	for i := range len(td) {
		c := td[i]
		allowed := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
		if !allowed {
			return fmt.Errorf("trust domain %q has the character %q: only lowercase letters, digits, '.', '-' and '_' are allowed", td, c)
		}
	}
	return nil
}

// ParseSpiffeID parses a workload SPIFFE ID of the form
// spiffe://<trust domain>/ns/<namespace>/sa/<service account>. The namespace
// must be a DNS label and the service account a DNS subdomain, as Kubernetes
// requires; anything else (a port, user info, a query, a fragment, extra or
// empty path segments, uppercase in the trust domain) is rejected.
func ParseSpiffeID(s string) (ID, error) {
	if len(s) > maxSpiffeIDLength {
		return ID{}, fmt.Errorf("spiffe id is %d characters long, the limit is %d", len(s), maxSpiffeIDLength)
	}
	rest, ok := strings.CutPrefix(s, spiffeScheme)
	if !ok {
		return ID{}, fmt.Errorf("spiffe id %q does not start with %s", s, spiffeScheme)
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok {
		return ID{}, fmt.Errorf("spiffe id %q has no path", s)
	}
	if err := ValidateTrustDomain(td); err != nil {
		return ID{}, fmt.Errorf("spiffe id %q: %w", s, err)
	}
	segs := strings.Split(path, "/")
	if len(segs) != 4 || segs[0] != "ns" || segs[2] != "sa" {
		return ID{}, fmt.Errorf("spiffe id %q: path must be /ns/<namespace>/sa/<service account>", s)
	}
	ns, sa := segs[1], segs[3]
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return ID{}, fmt.Errorf("spiffe id %q: namespace %q: %s", s, ns, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(sa); len(errs) > 0 {
		return ID{}, fmt.Errorf("spiffe id %q: service account %q: %s", s, sa, strings.Join(errs, "; "))
	}
	return ID{TrustDomain: td, Namespace: ns, ServiceAccount: sa}, nil
}

// IDFromCertificate returns the workload identity of an X.509-SVID: the
// certificate must carry exactly one URI SAN, and it must be a workload SPIFFE
// ID. A leaf with several URIs is rejected because a peer could not tell which
// identity it speaks for.
func IDFromCertificate(cert *x509.Certificate) (ID, error) {
	if cert == nil {
		return ID{}, errors.New("no certificate")
	}
	if n := len(cert.URIs); n != 1 {
		return ID{}, fmt.Errorf("certificate has %d URI SANs, a workload certificate has exactly one", n)
	}
	return ParseSpiffeID(cert.URIs[0].String())
}
