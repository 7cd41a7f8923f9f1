package controllers

import (
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/identity"
	"github.com/weft-mesh/weft/internal/testenv"
)

// The reconciler comes back when a certificate expires, and not before;
// an expired certificate does not make it spin.
func TestMeshIdentityRequeuesOnExpiry(t *testing.T) {
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(now)
	mi := &meshv1alpha1.MeshIdentity{
		ObjectMeta: metav1.ObjectMeta{Name: "mesh", UID: "mi-uid", Generation: 1, CreationTimestamp: metav1.NewTime(now.Add(-time.Hour))},
		Spec: meshv1alpha1.MeshIdentitySpec{
			TrustDomain: "cluster.local",
			IssuerRef:   meshv1alpha1.IssuerReference{Name: "mesh-ca", Kind: "ClusterIssuer"},
			Duration:    metav1.Duration{Duration: 24 * time.Hour},
		},
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}, Spec: corev1.PodSpec{ServiceAccountName: "web"}}
	issuer := &cmapi.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: "mesh-ca"}}

	cert := identity.Certificate(mi, "shop", "web")
	if err := ctrl.SetControllerReference(mi, cert, testenv.NewScheme()); err != nil {
		t.Fatal(err)
	}
	notAfter := now.Add(3 * time.Hour)
	cert.Status = cmapi.CertificateStatus{
		Conditions: []cmapi.CertificateCondition{{Type: cmapi.CertificateConditionReady, Status: cmmeta.ConditionTrue, Reason: "Ready"}},
		NotAfter:   &metav1.Time{Time: notAfter},
	}

	c := fake.NewClientBuilder().
		WithScheme(testenv.NewScheme()).
		WithObjects(mi, ns, pod, issuer, cert).
		WithStatusSubresource(&meshv1alpha1.MeshIdentity{}, &cmapi.Certificate{}).
		Build()
	r := &MeshIdentityReconciler{Client: c, Scheme: testenv.NewScheme(), Clock: clk}
	req := ctrl.Request{NamespacedName: types.NamespacedName{Name: "mesh"}}

	res, err := r.Reconcile(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3*time.Hour + time.Second; res.RequeueAfter != want {
		t.Fatalf("RequeueAfter = %v, want %v (just after the certificate expires)", res.RequeueAfter, want)
	}
	var got meshv1alpha1.MeshIdentity
	if err := c.Get(t.Context(), req.NamespacedName, &got); err != nil {
		t.Fatal(err)
	}
	if got.Status.ReadyIdentities != 1 || !meta.IsStatusConditionTrue(got.Status.Conditions, meshv1alpha1.ConditionReady) {
		t.Fatalf("status = %+v", got.Status)
	}

	clk.SetTime(notAfter.Add(time.Minute))
	res, err = r.Reconcile(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter != 0 {
		t.Fatalf("RequeueAfter = %v after expiry, want none: nothing changes by the clock any more", res.RequeueAfter)
	}
	if err := c.Get(t.Context(), req.NamespacedName, &got); err != nil {
		t.Fatal(err)
	}
	degraded := meta.FindStatusCondition(got.Status.Conditions, meshv1alpha1.ConditionDegraded)
	if got.Status.ReadyIdentities != 0 || degraded == nil || degraded.Status != metav1.ConditionTrue || degraded.Reason != meshv1alpha1.ReasonCertificateFailed {
		t.Fatalf("after expiry: readyIdentities %d, Degraded %+v", got.Status.ReadyIdentities, degraded)
	}
	if err := c.Get(t.Context(), client.ObjectKeyFromObject(cert), &cmapi.Certificate{}); err != nil {
		t.Fatalf("the expired certificate must stay for cert-manager to renew: %v", err)
	}
}
