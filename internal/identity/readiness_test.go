package identity

import (
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

func cert(gen int64, notAfter time.Time, conds ...cmapi.CertificateCondition) *cmapi.Certificate {
	c := &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-identity-web", Namespace: "shop", Generation: gen, UID: types.UID("cert-uid")},
		Status:     cmapi.CertificateStatus{Conditions: conds},
	}
	if !notAfter.IsZero() {
		c.Status.NotAfter = &metav1.Time{Time: notAfter}
	}
	return c
}

func cond(t cmapi.CertificateConditionType, s cmmeta.ConditionStatus, reason, msg string, gen int64) cmapi.CertificateCondition {
	return cmapi.CertificateCondition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen}
}

func TestAssessCertificate(t *testing.T) {
	later := t0.Add(time.Hour)
	for _, tc := range []struct {
		name        string
		cert        *cmapi.Certificate
		ready       bool
		failure     string
		pendingWord string
	}{
		{name: "no status", cert: cert(1, time.Time{}), pendingWord: "waiting"},
		{name: "ready", cert: cert(1, later, cond("Ready", "True", "Ready", "ok", 1)), ready: true},
		{name: "ready without observedGeneration", cert: cert(3, later, cond("Ready", "True", "Ready", "ok", 0)), ready: true},
		{name: "ready for an old spec", cert: cert(2, later, cond("Ready", "True", "Ready", "ok", 1)), pendingWord: "new spec"},
		{name: "issuing", cert: cert(1, time.Time{}, cond("Ready", "False", "DoesNotExist", "Issuing certificate as Secret does not exist", 1)), pendingWord: "DoesNotExist"},
		{name: "ready false failed", cert: cert(1, time.Time{}, cond("Ready", "False", "Failed", "the CA said no", 1)), failure: "the CA said no"},
		{name: "issuance failed", cert: cert(1, time.Time{},
			cond("Ready", "False", "DoesNotExist", "no secret", 1),
			cond("Issuing", "False", "Failed", "The certificate request has failed to complete and will be retried: boom", 1)), failure: "boom"},
		{name: "renewal failed while still valid", cert: cert(1, later,
			cond("Ready", "True", "Ready", "ok", 1),
			cond("Issuing", "False", "Failed", "renewal boom", 1)), ready: true, failure: "renewal boom"},
		{name: "issued", cert: cert(1, later, cond("Ready", "True", "Ready", "ok", 1), cond("Issuing", "False", "Issued", "done", 1)), ready: true},
		{name: "expired", cert: cert(1, t0, cond("Ready", "True", "Ready", "ok", 1)), failure: "expired at 2026-03-01T12:00:00Z"},
		{name: "cert-manager says expired", cert: cert(1, t0.Add(-time.Minute), cond("Ready", "False", "Expired", "expired", 1)), failure: "Expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := AssessCertificate(tc.cert, t0)
			if h.Ready != tc.ready {
				t.Errorf("Ready = %v, want %v (%+v)", h.Ready, tc.ready, h)
			}
			if (tc.failure == "") != (h.Failure == "") || !strings.Contains(h.Failure, tc.failure) {
				t.Errorf("Failure = %q, want one containing %q", h.Failure, tc.failure)
			}
			if (tc.pendingWord == "") != (h.Pending == "") || !strings.Contains(h.Pending, tc.pendingWord) {
				t.Errorf("Pending = %q, want one containing %q", h.Pending, tc.pendingWord)
			}
		})
	}
}

func request(name string, rev string, owner types.UID, conds ...cmapi.CertificateRequestCondition) cmapi.CertificateRequest {
	return cmapi.CertificateRequest{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "shop",
			Annotations:     map[string]string{cmapi.CertificateRequestRevisionAnnotationKey: rev, cmapi.CertificateNameKey: "weft-identity-web"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "Certificate", Name: "weft-identity-web", UID: owner, Controller: ptr.To(true)}},
		},
		Status: cmapi.CertificateRequestStatus{Conditions: conds},
	}
}

var denied = cmapi.CertificateRequestCondition{Type: cmapi.CertificateRequestConditionDenied, Status: cmmeta.ConditionTrue, Reason: "Denied", Message: "policy forbids the URI"}

func TestDeniedRequest(t *testing.T) {
	c := cert(1, time.Time{})
	cr, msg := DeniedRequest(c, []cmapi.CertificateRequest{request("weft-identity-web-1", "1", "cert-uid", denied)})
	if cr == nil || cr.Name != "weft-identity-web-1" || msg != "policy forbids the URI" {
		t.Fatalf("DeniedRequest = %v, %q", cr, msg)
	}

	// The denial was for revision 1; revision 2 is in flight and not denied.
	cr, _ = DeniedRequest(c, []cmapi.CertificateRequest{
		request("weft-identity-web-1", "1", "cert-uid", denied),
		request("weft-identity-web-2", "2", "cert-uid"),
	})
	if cr != nil {
		t.Fatalf("a superseded denial counted: %v", cr.Name)
	}

	// A denied request at or below the Certificate's revision belongs to an
	// issuance that has since completed.
	issued := cert(1, t0.Add(time.Hour))
	issued.Status.Revision = ptr.To(1)
	if cr, _ := DeniedRequest(issued, []cmapi.CertificateRequest{request("weft-identity-web-1", "1", "cert-uid", denied)}); cr != nil {
		t.Fatalf("a completed revision counted: %v", cr.Name)
	}

	// Requests of another Certificate are ignored.
	if cr, _ := DeniedRequest(c, []cmapi.CertificateRequest{request("other-1", "1", "other-uid", denied)}); cr != nil {
		t.Fatalf("another Certificate's request counted: %v", cr.Name)
	}
}
