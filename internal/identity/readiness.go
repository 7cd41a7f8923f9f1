package identity

import (
	"fmt"
	"strconv"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
)

// CertificateHealth is what a Certificate's status says about the identity
// it carries.
type CertificateHealth struct {
	// Ready: issued for the Certificate's current spec and not expired, so
	// the workload can use it.
	Ready bool
	// Failure is set when cert-manager's last issuance attempt failed or the
	// certificate expired: a person has to look. A Certificate can be Ready
	// and failing at once, when a renewal fails while the old certificate is
	// still valid.
	Failure string
	// Pending says why a Certificate that is neither Ready nor failing is
	// still waiting.
	Pending string
}

// Ready condition reasons that mean a certificate is broken rather than on its
// way. cert-manager uses many other reasons for "about to (re)issue"; those
// count as pending.
const (
	certReasonFailed  = "Failed"
	certReasonExpired = "Expired"
	// certReasonIssued is the only Issuing=False reason that is not a failure.
	certReasonIssued = "Issued"
)

// AssessCertificate reads a Certificate's status at time now.
func AssessCertificate(cert *cmapi.Certificate, now time.Time) CertificateHealth {
	ready := certCondition(cert, cmapi.CertificateConditionReady)
	issuing := certCondition(cert, cmapi.CertificateConditionIssuing)
	notAfter := cert.Status.NotAfter
	expired := notAfter != nil && !now.Before(notAfter.Time)

	var h CertificateHealth
	switch {
	case issuing != nil && issuing.Status == cmmeta.ConditionFalse && issuing.Reason != certReasonIssued:
		h.Failure = fmt.Sprintf("issuance failed (%s): %s", issuing.Reason, issuing.Message)
	case ready != nil && ready.Status == cmmeta.ConditionFalse && (ready.Reason == certReasonFailed || ready.Reason == certReasonExpired):
		h.Failure = fmt.Sprintf("not ready (%s): %s", ready.Reason, ready.Message)
	case expired:
		h.Failure = "expired at " + notAfter.UTC().Format(time.RFC3339)
	}

	switch {
	case ready == nil || ready.Status != cmmeta.ConditionTrue:
		h.Pending = "waiting for cert-manager to issue it"
		if ready != nil && ready.Message != "" {
			h.Pending = fmt.Sprintf("being issued (%s): %s", ready.Reason, ready.Message)
		}
	case ready.ObservedGeneration != 0 && ready.ObservedGeneration < cert.Generation:
		h.Pending = "being reissued for its new spec"
	case expired:
	default:
		h.Ready = true
	}
	if h.Ready || h.Failure != "" {
		h.Pending = ""
	}
	return h
}

func certCondition(cert *cmapi.Certificate, t cmapi.CertificateConditionType) *cmapi.CertificateCondition {
	for i := range cert.Status.Conditions {
		if cert.Status.Conditions[i].Type == t {
			return &cert.Status.Conditions[i]
		}
	}
	return nil
}

// DeniedRequest returns the CertificateRequest of the Certificate's pending
// issuance when an approver denied it, with the denial message. Requests of
// issuances that already completed (revision at or below the Certificate's)
// do not count: the denial is history. Requests that belong to other
// Certificates are ignored, so callers may pass a whole namespace's list.
func DeniedRequest(cert *cmapi.Certificate, requests []cmapi.CertificateRequest) (*cmapi.CertificateRequest, string) {
	current := 0
	if cert.Status.Revision != nil {
		current = *cert.Status.Revision
	}
	var (
		latest    *cmapi.CertificateRequest
		latestRev int
	)
	for i := range requests {
		cr := &requests[i]
		if cr.Namespace != cert.Namespace || !requestOf(cr, cert) {
			continue
		}
		rev, err := strconv.Atoi(cr.Annotations[cmapi.CertificateRequestRevisionAnnotationKey])
		if err != nil {
			continue
		}
		if latest == nil || rev > latestRev {
			latest, latestRev = cr, rev
		}
	}
	if latest == nil || latestRev <= current {
		return nil, ""
	}
	for _, c := range latest.Status.Conditions {
		if c.Type == cmapi.CertificateRequestConditionDenied && c.Status == cmmeta.ConditionTrue {
			return latest, c.Message
		}
	}
	return nil, ""
}

func requestOf(cr *cmapi.CertificateRequest, cert *cmapi.Certificate) bool {
	for _, ref := range cr.OwnerReferences {
		if ref.Controller != nil && *ref.Controller {
			return ref.UID == cert.UID && ref.Kind == cmapi.CertificateKind
		}
	}
	return cr.Annotations[cmapi.CertificateNameKey] == cert.Name
}
