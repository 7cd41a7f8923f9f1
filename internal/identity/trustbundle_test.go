package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type testCA struct {
	cert *x509.Certificate
	pem  []byte
}

func newCA(t *testing.T, name string, notBefore, notAfter time.Time) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(notBefore.UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert: cert, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
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

func TestBuildTrustBundleFirstIssue(t *testing.T) {
	ca := newCA(t, "root", t0.Add(-time.Hour), t0.Add(1000*time.Hour))
	tb, err := BuildTrustBundle(TrustBundleInput{Now: t0, Issued: [][]byte{ca.pem, ca.pem}, Overlap: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(subjects(t, tb.PEM), ","); got != "root" {
		t.Fatalf("bundle = %s", got)
	}
	if len(tb.Retired) != 0 {
		t.Fatalf("retired = %v", tb.Retired)
	}
	if !tb.NextChange.Equal(ca.cert.NotAfter) {
		t.Fatalf("NextChange = %v, want the root's expiry %v", tb.NextChange, ca.cert.NotAfter)
	}
}

func TestBuildTrustBundleNothingIssuedKeepsPublished(t *testing.T) {
	ca := newCA(t, "root", t0.Add(-time.Hour), t0.Add(1000*time.Hour))
	tb, err := BuildTrustBundle(TrustBundleInput{Now: t0, Published: [][]byte{ca.pem}, Overlap: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(subjects(t, tb.PEM), ","); got != "root" || len(tb.Retired) != 0 {
		t.Fatalf("bundle = %s, retired = %v; want root kept and not retired", got, tb.Retired)
	}

	empty, err := BuildTrustBundle(TrustBundleInput{Now: t0, Overlap: time.Hour})
	if err != nil || len(empty.PEM) != 0 || !empty.NextChange.IsZero() {
		t.Fatalf("empty input gave %+v, %v", empty, err)
	}
}

// A CA rotation: the new root appears in issued Secrets while the old one
// is still published. Both are trusted through the overlap; then the old
// root is dropped.
func TestBuildTrustBundleRotation(t *testing.T) {
	overlap := 24 * time.Hour
	oldCA := newCA(t, "old", t0.Add(-100*time.Hour), t0.Add(1000*time.Hour))
	newCA := newCA(t, "new", t0.Add(-time.Minute), t0.Add(2000*time.Hour))

	// Some Secrets renewed, others not yet: both are issued.
	mid, err := BuildTrustBundle(TrustBundleInput{Now: t0, Issued: [][]byte{oldCA.pem, newCA.pem}, Published: [][]byte{oldCA.pem}, Overlap: overlap})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(subjects(t, mid.PEM), ","); got != "old,new" || len(mid.Retired) != 0 {
		t.Fatalf("mid-rotation bundle = %s, retired %v", got, mid.Retired)
	}

	// Every Secret renewed: the old root is retired now, still trusted.
	t1 := t0.Add(time.Hour)
	done, err := BuildTrustBundle(TrustBundleInput{Now: t1, Issued: [][]byte{newCA.pem}, Published: [][]byte{mid.PEM}, Overlap: overlap})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(subjects(t, done.PEM), ","); got != "old,new" {
		t.Fatalf("after rotation bundle = %s, want old,new", got)
	}
	fp := Fingerprint(oldCA.cert)
	if !done.Retired[fp].Equal(t1) || len(done.Retired) != 1 {
		t.Fatalf("retired = %v, want old root retired at %v", done.Retired, t1)
	}
	if !done.NextChange.Equal(t1.Add(overlap)) {
		t.Fatalf("NextChange = %v, want end of overlap %v", done.NextChange, t1.Add(overlap))
	}

	// The annotation round-trips and the retirement time does not move.
	retired, err := DecodeRetired(EncodeRetired(done.Retired))
	if err != nil {
		t.Fatal(err)
	}
	t2 := t1.Add(overlap - time.Second)
	later, err := BuildTrustBundle(TrustBundleInput{Now: t2, Issued: [][]byte{newCA.pem}, Published: [][]byte{done.PEM}, Retired: retired, Overlap: overlap})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(subjects(t, later.PEM), ","); got != "old,new" || !later.Retired[fp].Equal(t1) {
		t.Fatalf("just before the overlap ends: bundle %s, retired %v", got, later.Retired)
	}

	// The overlap is over: only the new root is left.
	t3 := t1.Add(overlap)
	final, err := BuildTrustBundle(TrustBundleInput{Now: t3, Issued: [][]byte{newCA.pem}, Published: [][]byte{later.PEM}, Retired: later.Retired, Overlap: overlap})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(subjects(t, final.PEM), ","); got != "new" || len(final.Retired) != 0 {
		t.Fatalf("after the overlap: bundle %s, retired %v", got, final.Retired)
	}
}

func TestBuildTrustBundleRootComesBack(t *testing.T) {
	ca := newCA(t, "root", t0.Add(-time.Hour), t0.Add(1000*time.Hour))
	other := newCA(t, "other", t0.Add(-time.Hour), t0.Add(1000*time.Hour))
	tb, err := BuildTrustBundle(TrustBundleInput{
		Now: t0, Issued: [][]byte{ca.pem}, Published: [][]byte{ca.pem, other.pem},
		Retired: map[string]time.Time{Fingerprint(ca.cert): t0.Add(-time.Hour)}, Overlap: 2 * time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tb.Retired[Fingerprint(ca.cert)]; ok {
		t.Fatal("a root that signs issued certificates again must not stay retired")
	}
	if _, ok := tb.Retired[Fingerprint(other.cert)]; !ok {
		t.Fatal("the root no Secret names must be retired")
	}
}

func TestBuildTrustBundleDropsExpiredRoots(t *testing.T) {
	live := newCA(t, "live", t0.Add(-time.Hour), t0.Add(time.Hour))
	dead := newCA(t, "dead", t0.Add(-2*time.Hour), t0)
	tb, err := BuildTrustBundle(TrustBundleInput{Now: t0, Issued: [][]byte{live.pem, dead.pem}, Published: [][]byte{dead.pem}, Overlap: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(subjects(t, tb.PEM), ","); got != "live" {
		t.Fatalf("bundle = %s, want live only", got)
	}
}

func TestMergeRetiredKeepsEarliest(t *testing.T) {
	got := MergeRetired(
		map[string]time.Time{"a": t0.Add(time.Hour), "b": t0},
		map[string]time.Time{"a": t0},
		nil,
	)
	if !got["a"].Equal(t0) || !got["b"].Equal(t0) || len(got) != 2 {
		t.Fatalf("MergeRetired = %v", got)
	}
}

func TestDecodeRetiredRejectsGarbage(t *testing.T) {
	if _, err := DecodeRetired("{"); err == nil {
		t.Error("want an error for broken JSON")
	}
	m, err := DecodeRetired(`{"a":"yesterday","b":"2026-03-01T12:00:00Z"}`)
	if err == nil {
		t.Error("want an error for a bad time")
	}
	if !m["b"].Equal(t0) || len(m) != 1 {
		t.Errorf("the good entries must survive, got %v", m)
	}
}

func TestTrustBundleConfigMap(t *testing.T) {
	ca := newCA(t, "root", t0.Add(-time.Hour), t0.Add(time.Hour))
	cm := TrustBundleConfigMap("mesh", "shop", TrustBundle{PEM: ca.pem, Retired: map[string]time.Time{"ab": t0}})
	if cm.Name != "weft-trust-bundle" || cm.Namespace != "shop" || cm.Data["ca.crt"] != string(ca.pem) {
		t.Fatalf("ConfigMap = %+v", cm)
	}
	if cm.Labels[LabelIdentity] != "mesh" || cm.Labels[LabelManagedBy] != "weft" {
		t.Fatalf("labels = %v", cm.Labels)
	}
	if cm.Annotations[AnnotationRetiredRoots] != `{"ab":"2026-03-01T12:00:00Z"}` {
		t.Fatalf("annotations = %v", cm.Annotations)
	}
	if plain := TrustBundleConfigMap("mesh", "shop", TrustBundle{PEM: ca.pem}); plain.Annotations != nil {
		t.Fatalf("no retired roots must mean no annotation, got %v", plain.Annotations)
	}
}
