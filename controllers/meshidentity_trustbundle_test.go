package controllers

import (
	"crypto/x509"
	"maps"
	"slices"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/identity"
	"github.com/weft-mesh/weft/internal/testenv"
	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

// testRoot makes a self-signed root CA, returned parsed and as PEM.
func testRoot(t *testing.T, name string, notBefore, notAfter time.Time) (*x509.Certificate, []byte) {
	t.Helper()
	ca, err := xdstest.NewRoot(name, notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return ca.Cert, ca.PEM
}

// bundleNames are the common names of the roots in a trust bundle ConfigMap.
func bundleNames(t *testing.T, cm *corev1.ConfigMap) []string {
	t.Helper()
	certs, err := identity.ParseCertificates([]byte(cm.Data[identity.TrustBundleKey]))
	if err != nil {
		t.Fatalf("bundle %s/%s: %v", cm.Namespace, cm.Name, err)
	}
	var names []string
	for _, c := range certs {
		names = append(names, c.Subject.CommonName)
	}
	return names
}

// recordedRoots maps the fingerprints in status.trustRoots to when each was
// retired ("" while current).
func recordedRoots(mi *meshv1alpha1.MeshIdentity) map[string]string {
	out := map[string]string{}
	for _, r := range mi.Status.TrustRoots {
		out[r.Fingerprint] = ""
		if r.RetiredAt != nil {
			out[r.Fingerprint] = r.RetiredAt.UTC().Format(time.RFC3339)
		}
	}
	return out
}

// A root rotation on the clock: the retired root stays trusted for
// spec.duration after it is retired, whatever is written into the published
// bundles meanwhile, and is then dropped.
func TestMeshIdentityTrustBundleOverlap(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(t0)
	oldCA, oldPEM := testRoot(t, "old root", t0.Add(-time.Hour), t0.Add(1000*time.Hour))
	newCA, newPEM := testRoot(t, "new root", t0.Add(-time.Minute), t0.Add(2000*time.Hour))
	foreignCA, foreignPEM := testRoot(t, "foreign root", t0.Add(-time.Minute), t0.Add(2000*time.Hour))

	mi := &meshv1alpha1.MeshIdentity{
		ObjectMeta: metav1.ObjectMeta{Name: "mesh", UID: "mi-uid", Generation: 1, CreationTimestamp: metav1.NewTime(t0.Add(-time.Hour))},
		Spec: meshv1alpha1.MeshIdentitySpec{
			TrustDomain: "cluster.local",
			IssuerRef:   meshv1alpha1.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer"},
			Duration:    metav1.Duration{Duration: 24 * time.Hour},
		},
	}
	labels := map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}
	objs := []client.Object{mi, &cmapi.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: "mesh-ca"}}}
	for _, ns := range []string{"shop", "bank"} {
		objs = append(objs,
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}},
			&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: corev1.PodSpec{ServiceAccountName: "web"}})
		cert := identity.Certificate(mi, ns, "web")
		if err := ctrl.SetControllerReference(mi, cert, testenv.NewScheme()); err != nil {
			t.Fatal(err)
		}
		cert.Status = cmapi.CertificateStatus{
			Conditions: []cmapi.CertificateCondition{{Type: cmapi.CertificateConditionReady, Status: cmmeta.ConditionTrue, Reason: "Ready"}},
			NotAfter:   &metav1.Time{Time: t0.Add(100 * time.Hour)},
		}
		objs = append(objs, cert, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: cert.Spec.SecretName, Namespace: ns, Labels: identity.Labels(mi.Name)},
			Data:       map[string][]byte{identity.TrustBundleKey: oldPEM},
		})
	}
	c := fake.NewClientBuilder().
		WithScheme(testenv.NewScheme()).
		WithObjects(objs...).
		WithStatusSubresource(&meshv1alpha1.MeshIdentity{}, &cmapi.Certificate{}).
		Build()
	r := &MeshIdentityReconciler{Client: c, Scheme: testenv.NewScheme(), Clock: clk}
	req := ctrl.Request{NamespacedName: types.NamespacedName{Name: "mesh"}}

	reconcile := func(at time.Time) ctrl.Result {
		t.Helper()
		clk.SetTime(at)
		res, err := r.Reconcile(t.Context(), req)
		if err != nil {
			t.Fatalf("Reconcile at %v: %v", at, err)
		}
		return res
	}
	bundle := func(ns string) *corev1.ConfigMap {
		t.Helper()
		var cm corev1.ConfigMap
		if err := c.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: identity.TrustBundleName}, &cm); err != nil {
			t.Fatal(err)
		}
		return &cm
	}
	expect := func(when string, names []string, record map[string]string) {
		t.Helper()
		for _, ns := range []string{"shop", "bank"} {
			if got := bundleNames(t, bundle(ns)); !slices.Equal(got, names) {
				t.Fatalf("%s: bundle in %s = %v, want %v", when, ns, got, names)
			}
		}
		var got meshv1alpha1.MeshIdentity
		if err := c.Get(t.Context(), req.NamespacedName, &got); err != nil {
			t.Fatal(err)
		}
		if rec := recordedRoots(&got); !maps.Equal(rec, record) {
			t.Fatalf("%s: status.trustRoots = %v, want %v", when, rec, record)
		}
	}
	oldFP, newFP := identity.Fingerprint(oldCA), identity.Fingerprint(newCA)

	reconcile(t0)
	expect("first issue", []string{"old root"}, map[string]string{oldFP: ""})

	// Every workload is renewed by the new root.
	for _, ns := range []string{"shop", "bank"} {
		var s corev1.Secret
		if err := c.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: identity.CertificateName("web")}, &s); err != nil {
			t.Fatal(err)
		}
		s.Data[identity.TrustBundleKey] = newPEM
		if err := c.Update(t.Context(), &s); err != nil {
			t.Fatal(err)
		}
	}
	t1 := t0.Add(time.Hour)
	res := reconcile(t1)
	expect("renewed", []string{"old root", "new root"}, map[string]string{oldFP: t1.Format(time.RFC3339), newFP: ""})
	if want := 24*time.Hour + time.Second; res.RequeueAfter != want {
		t.Fatalf("RequeueAfter = %v, want %v (when the old root's overlap ends)", res.RequeueAfter, want)
	}

	// Someone who may write ConfigMaps in shop adds a root to its bundle
	// and forges the retired-roots annotation earlier versions kept there.
	cm := bundle("shop")
	cm.Data[identity.TrustBundleKey] += string(foreignPEM)
	cm.Annotations = map[string]string{identity.LegacyAnnotationRetiredRoots: `{"` + identity.Fingerprint(foreignCA) + `":"` + t1.Format(time.RFC3339) + `"}`}
	if err := c.Update(t.Context(), cm); err != nil {
		t.Fatal(err)
	}
	reconcile(t1.Add(time.Minute))
	expect("after the edit", []string{"old root", "new root"}, map[string]string{oldFP: t1.Format(time.RFC3339), newFP: ""})
	if _, ok := bundle("shop").Annotations[identity.LegacyAnnotationRetiredRoots]; ok {
		t.Fatal("the forged retired-roots annotation is still on the bundle")
	}

	// Removing the bundles does not shorten the overlap: the record is kept
	// on the MeshIdentity.
	if err := c.Delete(t.Context(), bundle("bank")); err != nil {
		t.Fatal(err)
	}
	reconcile(t1.Add(24*time.Hour - time.Second))
	expect("just before the overlap ends", []string{"old root", "new root"}, map[string]string{oldFP: t1.Format(time.RFC3339), newFP: ""})

	reconcile(t1.Add(24 * time.Hour))
	expect("after the overlap", []string{"new root"}, map[string]string{newFP: ""})
}
