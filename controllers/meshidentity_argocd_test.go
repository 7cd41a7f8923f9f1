package controllers

import (
	"context"
	"strings"
	"testing"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/argohealth"
	"github.com/weft-mesh/weft/internal/testenv"
)

// TestArgoCDHealthMeshIdentity runs Argo CD's health check for
// MeshIdentity (config/argocd) on MeshIdentities as the identity
// controller left them: Healthy once every workload certificate is
// issued, Progressing while one is being issued, Degraded with the
// condition's message when the issuer does not exist.
func TestArgoCDHealthMeshIdentity(t *testing.T) {
	checks, err := argohealth.Load(testenv.RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	h := startIdentityHarness(t)
	gk := meshv1alpha1.GroupVersion.WithKind("MeshIdentity").GroupKind()
	health := func(name, status, msg string) {
		t.Helper()
		await(t, "MeshIdentity "+name+" "+status, func(ctx context.Context) (bool, string, error) {
			var mi meshv1alpha1.MeshIdentity
			if err := h.c.Get(ctx, client.ObjectKey{Name: name}, &mi); err != nil {
				return false, "", err
			}
			hs, err := checks.Assess(gk, &mi)
			if err != nil {
				t.Fatalf("the check failed: %v", err)
			}
			return hs.Status == status && strings.Contains(hs.Message, msg), hs.String(), nil
		})
	}

	h.meshIdentity(t, "argo-issued")
	h.namespace(t, "argo-issued", map[string]string{"identity-test": "argo-issued"}, "app")
	h.pod(t, "argo-issued", "app", "app")
	health("argo-issued", "Healthy", "1 of 1")

	h.meshIdentity(t, "argo-noissuer", func(mi *meshv1alpha1.MeshIdentity) { mi.Spec.IssuerRef.Name = "absent-argo-ca" })
	h.namespace(t, "argo-noissuer", map[string]string{"identity-test": "argo-noissuer"}, "app")
	h.pod(t, "argo-noissuer", "app", "app")
	health("argo-noissuer", "Degraded", "absent-argo-ca")

	// The issuer appears, but nothing signs for it: issuing.
	if err := h.c.Create(t.Context(), &cmapi.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: "absent-argo-ca"},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}},
	}); err != nil {
		t.Fatal(err)
	}
	health("argo-noissuer", "Progressing", "0 of 1")
}
