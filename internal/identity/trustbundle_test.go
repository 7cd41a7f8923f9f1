package identity

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type testCA struct {
	cert *x509.Certificate
	pem  []byte
}

func newCA(t *testing.T, name string, notBefore, notAfter time.Time) testCA {
	t.Helper()
	ca, err := xdstest.NewRoot(name, notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert: ca.Cert, pem: ca.PEM}
}

func subjects(t *testing.T, bundle []byte) []string {
	t.Helper()
	certs, err := ParseCertificates(bundle)
	if err != nil {
		t.Fatalf("ParseCertificates: %v", err)
	}
	var out []string
	for _, c := range certs {
		out = append(out, c.Subject.CommonName)
	}
	return out
}

func TestMergeCAPEMs(t *testing.T) {
	old := newCA(t, "old", t0.Add(-48*time.Hour), t0.Add(24*time.Hour))
	cur := newCA(t, "new", t0.Add(-time.Hour), t0.Add(365*24*time.Hour))
	gone := newCA(t, "expired", t0.Add(-72*time.Hour), t0.Add(-time.Second))

	a, err := MergeCAPEMs(t0, cur.pem, append(bytes.Clone(old.pem), gone.pem...), cur.pem)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(subjects(t, a), ","); got != "old,new" {
		t.Fatalf("merged = %s, want old,new (deduplicated, expired dropped, oldest first)", got)
	}
	b, err := MergeCAPEMs(t0, old.pem, cur.pem, gone.pem)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("the merge depends on the order of its inputs")
	}
}

func TestMergeCAPEMsReportsGarbage(t *testing.T) {
	good := newCA(t, "good", t0.Add(-time.Hour), t0.Add(time.Hour))
	keyBlock := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}})
	broken := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("nope")})
	out, err := MergeCAPEMs(t0, good.pem, keyBlock, broken, []byte("not pem"))
	if err == nil {
		t.Fatal("want an error for the blocks that are not certificates")
	}
	if got := strings.Join(subjects(t, out), ","); got != "good" {
		t.Fatalf("merged = %s, want the good certificate kept", got)
	}
}

// fingerprints lists the fingerprints of a record and, for retired roots,
// when they were retired.
func fingerprints(roots []meshv1alpha1.TrustRoot) map[string]string {
	out := map[string]string{}
	for _, r := range roots {
		out[r.Fingerprint] = ""
		if r.RetiredAt != nil {
			out[r.Fingerprint] = r.RetiredAt.UTC().Format(time.RFC3339)
		}
	}
	return out
}

func TestBuildTrustBundleFirstIssue(t *testing.T) {
	ca := newCA(t, "root", t0.Add(-time.Hour), t0.Add(1000*time.Hour))
	tb, err := BuildTrustBundle(TrustBundleInput{Now: t0, Issued: [][]byte{ca.pem, ca.pem}, Overlap: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(subjects(t, tb.PEM), ","); got != "root" {
		t.Fatalf("bundle = %s", got)
	}
	want := []meshv1alpha1.TrustRoot{{
		Fingerprint: Fingerprint(ca.cert),
		NotAfter:    metav1.NewTime(ca.cert.NotAfter),
		Certificate: string(ca.pem),
	}}
	if diff := cmp.Diff(want, tb.Roots); diff != "" {
		t.Fatalf("record (-want +got):\n%s", diff)
	}
	if !tb.NextChange.Equal(ca.cert.NotAfter) {
		t.Fatalf("NextChange = %v, want the root's expiry %v", tb.NextChange, ca.cert.NotAfter)
	}
}

func TestBuildTrustBundleNothingIssuedKeepsRecorded(t *testing.T) {
	ca := newCA(t, "root", t0.Add(-time.Hour), t0.Add(1000*time.Hour))
	first, err := BuildTrustBundle(TrustBundleInput{Now: t0, Issued: [][]byte{ca.pem}, Overlap: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tb, err := BuildTrustBundle(TrustBundleInput{Now: t0.Add(2 * time.Hour), Recorded: first.Roots, Overlap: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(subjects(t, tb.PEM), ","); got != "root" || !cmp.Equal(tb.Roots, first.Roots) {
		t.Fatalf("bundle = %s, record = %v; want root kept and not retired", got, fingerprints(tb.Roots))
	}

	empty, err := BuildTrustBundle(TrustBundleInput{Now: t0, Overlap: time.Hour})
	if err != nil || len(empty.PEM) != 0 || len(empty.Roots) != 0 || !empty.NextChange.IsZero() {
		t.Fatalf("empty input gave %+v, %v", empty, err)
	}
}

// A CA rotation: the new root appears in issued Secrets while the old one
// is still recorded. Both are trusted through the overlap; then the old
// root is dropped.
func TestBuildTrustBundleRotation(t *testing.T) {
	overlap := 24 * time.Hour
	oldCA := newCA(t, "old", t0.Add(-100*time.Hour), t0.Add(1000*time.Hour))
	newCA := newCA(t, "new", t0.Add(-time.Minute), t0.Add(2000*time.Hour))
	before, err := BuildTrustBundle(TrustBundleInput{Now: t0.Add(-time.Hour), Issued: [][]byte{oldCA.pem}, Overlap: overlap})
	if err != nil {
		t.Fatal(err)
	}

	// Some Secrets renewed, others not yet: both are issued.
	mid, err := BuildTrustBundle(TrustBundleInput{Now: t0, Issued: [][]byte{oldCA.pem, newCA.pem}, Recorded: before.Roots, Overlap: overlap})
	if err != nil {
		t.Fatal(err)
	}
	oldFP, newFP := Fingerprint(oldCA.cert), Fingerprint(newCA.cert)
	if got := strings.Join(subjects(t, mid.PEM), ","); got != "old,new" || !cmp.Equal(fingerprints(mid.Roots), map[string]string{oldFP: "", newFP: ""}) {
		t.Fatalf("mid-rotation bundle = %s, record %v", got, fingerprints(mid.Roots))
	}

	// Every Secret renewed: the old root is retired now, still trusted.
	// The retirement time is rounded up to the second status keeps.
	t1 := t0.Add(time.Hour + 300*time.Millisecond)
	t1Stored := t0.Add(time.Hour + time.Second)
	done, err := BuildTrustBundle(TrustBundleInput{Now: t1, Issued: [][]byte{newCA.pem}, Recorded: mid.Roots, Overlap: overlap})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(subjects(t, done.PEM), ","); got != "old,new" {
		t.Fatalf("after rotation bundle = %s, want old,new", got)
	}
	if got, want := fingerprints(done.Roots), map[string]string{oldFP: t1Stored.Format(time.RFC3339), newFP: ""}; !cmp.Equal(got, want) {
		t.Fatalf("record = %v, want %v", got, want)
	}
	if !done.NextChange.Equal(t1Stored.Add(overlap)) {
		t.Fatalf("NextChange = %v, want end of overlap %v", done.NextChange, t1Stored.Add(overlap))
	}

	// The retirement time does not move.
	t2 := t1Stored.Add(overlap - time.Second)
	later, err := BuildTrustBundle(TrustBundleInput{Now: t2, Issued: [][]byte{newCA.pem}, Recorded: done.Roots, Overlap: overlap})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(subjects(t, later.PEM), ","); got != "old,new" || !cmp.Equal(later.Roots, done.Roots) {
		t.Fatalf("just before the overlap ends: bundle %s, record %v", got, fingerprints(later.Roots))
	}

	// The overlap is over: only the new root is left.
	final, err := BuildTrustBundle(TrustBundleInput{Now: t1Stored.Add(overlap), Issued: [][]byte{newCA.pem}, Recorded: later.Roots, Overlap: overlap})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(subjects(t, final.PEM), ","); got != "new" || !cmp.Equal(fingerprints(final.Roots), map[string]string{newFP: ""}) {
		t.Fatalf("after the overlap: bundle %s, record %v", got, fingerprints(final.Roots))
	}
}

func TestBuildTrustBundleRootComesBack(t *testing.T) {
	ca := newCA(t, "root", t0.Add(-time.Hour), t0.Add(1000*time.Hour))
	other := newCA(t, "other", t0.Add(-time.Hour), t0.Add(1000*time.Hour))
	recorded, err := BuildTrustBundle(TrustBundleInput{Now: t0.Add(-time.Hour), Issued: [][]byte{ca.pem, other.pem}, Overlap: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := range recorded.Roots {
		if recorded.Roots[i].Fingerprint == Fingerprint(ca.cert) {
			recorded.Roots[i].RetiredAt = &metav1.Time{Time: t0.Add(-time.Hour)}
		}
	}
	tb, err := BuildTrustBundle(TrustBundleInput{Now: t0, Issued: [][]byte{ca.pem}, Recorded: recorded.Roots, Overlap: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{Fingerprint(ca.cert): "", Fingerprint(other.cert): t0.Format(time.RFC3339)}
	if got := fingerprints(tb.Roots); !cmp.Equal(got, want) {
		t.Fatalf("record = %v, want the root that signs again current and the other one retired: %v", got, want)
	}
}

func TestBuildTrustBundleDropsExpiredRoots(t *testing.T) {
	live := newCA(t, "live", t0.Add(-time.Hour), t0.Add(time.Hour))
	dead := newCA(t, "dead", t0.Add(-2*time.Hour), t0)
	deadRecord, err := BuildTrustBundle(TrustBundleInput{Now: t0.Add(-time.Hour), Issued: [][]byte{dead.pem}, Overlap: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tb, err := BuildTrustBundle(TrustBundleInput{Now: t0, Issued: [][]byte{live.pem, dead.pem}, Recorded: deadRecord.Roots, Overlap: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(subjects(t, tb.PEM), ","); got != "live" || len(tb.Roots) != 1 {
		t.Fatalf("bundle = %s, record %v; want live only", got, fingerprints(tb.Roots))
	}
}

// The record is the controller's to write; still, a recorded root must be
// exactly the certificate its fingerprint names.
func TestBuildTrustBundleRejectsDamagedRecord(t *testing.T) {
	ca := newCA(t, "root", t0.Add(-time.Hour), t0.Add(1000*time.Hour))
	other := newCA(t, "other", t0.Add(-time.Hour), t0.Add(1000*time.Hour))
	good, err := BuildTrustBundle(TrustBundleInput{Now: t0, Issued: [][]byte{ca.pem}, Overlap: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	recorded := []meshv1alpha1.TrustRoot{
		good.Roots[0],
		{Fingerprint: Fingerprint(ca.cert), Certificate: string(other.pem)},
		{Fingerprint: Fingerprint(other.cert), Certificate: string(append(bytes.Clone(other.pem), ca.pem...))},
		{Fingerprint: strings.Repeat("0", 64), Certificate: "not pem"},
	}
	tb, err := BuildTrustBundle(TrustBundleInput{Now: t0, Recorded: recorded, Overlap: time.Hour})
	if err == nil {
		t.Fatal("want an error for the damaged entries")
	}
	if got := strings.Join(subjects(t, tb.PEM), ","); got != "root" || !cmp.Equal(tb.Roots, good.Roots) {
		t.Fatalf("bundle = %s, record %v; want only the intact root", got, fingerprints(tb.Roots))
	}
}

// The record stays within the schema's bounds: issued roots first, then the
// most recently retired ones.
func TestBuildTrustBundleBoundsTheRecord(t *testing.T) {
	overlap := 24 * time.Hour
	var retired []meshv1alpha1.TrustRoot
	for i := range meshv1alpha1.MaxTrustRoots {
		ca := newCA(t, fmt.Sprintf("retired-%d", i), t0.Add(-time.Duration(100+i)*time.Hour), t0.Add(1000*time.Hour))
		retired = append(retired, meshv1alpha1.TrustRoot{
			Fingerprint: Fingerprint(ca.cert),
			NotAfter:    metav1.NewTime(ca.cert.NotAfter),
			RetiredAt:   &metav1.Time{Time: t0.Add(-time.Duration(i+1) * time.Minute)},
			Certificate: string(ca.pem),
		})
	}
	issued := newCA(t, "issued", t0.Add(-time.Hour), t0.Add(1000*time.Hour))
	tb, err := BuildTrustBundle(TrustBundleInput{Now: t0, Issued: [][]byte{issued.pem}, Recorded: retired, Overlap: overlap})
	if err == nil || !strings.Contains(err.Error(), "retired-7") {
		t.Fatalf("want an error naming the root left out, got %v", err)
	}
	if len(tb.Roots) != meshv1alpha1.MaxTrustRoots {
		t.Fatalf("record holds %d roots, want %d", len(tb.Roots), meshv1alpha1.MaxTrustRoots)
	}
	got := subjects(t, tb.PEM)
	if !slices.Contains(got, "issued") || slices.Contains(got, "retired-7") || len(got) != meshv1alpha1.MaxTrustRoots {
		t.Fatalf("bundle = %v, want the issued root and every retired one but the earliest retired", got)
	}
}

func TestTrustBundleConfigMap(t *testing.T) {
	ca := newCA(t, "root", t0.Add(-time.Hour), t0.Add(time.Hour))
	cm := TrustBundleConfigMap("mesh", "shop", TrustBundle{PEM: ca.pem})
	if cm.Name != "weft-trust-bundle" || cm.Namespace != "shop" || cm.Data["ca.crt"] != string(ca.pem) {
		t.Fatalf("ConfigMap = %+v", cm)
	}
	if cm.Labels[meshv1alpha1.LabelIdentity] != "mesh" || cm.Labels[LabelManagedBy] != "weft" {
		t.Fatalf("labels = %v", cm.Labels)
	}
	if cm.Annotations != nil {
		t.Fatalf("the bundle carries no state, got annotations %v", cm.Annotations)
	}
}
