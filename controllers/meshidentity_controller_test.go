package controllers

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/identity"
	"github.com/weft-mesh/weft/internal/testenv"
	"github.com/weft-mesh/weft/internal/testsigner"
)

const (
	identityIssuer = "mesh-ca"
	awaitTimeout   = 60 * time.Second
	awaitInterval  = 100 * time.Millisecond
)

// identityHarness is an API server with the MeshIdentity controller and a
// test signer standing in for cert-manager.
type identityHarness struct {
	c      client.Client
	r      *MeshIdentityReconciler
	signer *testsigner.Signer
}

func startIdentityHarness(t *testing.T) *identityHarness {
	t.Helper()
	if testing.Verbose() {
		ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr)))
	} else {
		ctrl.SetLogger(logr.Discard())
	}
	env := testenv.Start(t)
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatalf("manager: %v", err)
	}
	r := &MeshIdentityReconciler{Client: mgr.GetClient(), Scheme: mgr.GetScheme()}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatalf("SetupWithManager: %v", err)
	}
	signer, err := testsigner.New(env.Client, testsigner.Options{IssuerName: identityIssuer})
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(signer); err != nil {
		t.Fatal(err)
	}
	if err := signer.EnsureIssuer(t.Context(), ""); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	return &identityHarness{c: env.Client, r: r, signer: signer}
}

// await polls cond until it holds; on timeout it fails with the last state
// cond described.
func await(t *testing.T, what string, cond func(ctx context.Context) (bool, string, error)) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(t.Context(), awaitInterval, awaitTimeout, true, func(ctx context.Context) (bool, error) {
		ok, state, err := cond(ctx)
		last = state
		return ok, err
	})
	if err != nil {
		t.Fatalf("%s: %v; last seen: %s", what, err, last)
	}
}

func (h *identityHarness) namespace(t *testing.T, name string, labels map[string]string, serviceAccounts ...string) {
	t.Helper()
	if err := h.c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	// No controller-manager runs, so no service account exists unless
	// the test makes it; the API server refuses pods without theirs.
	for _, sa := range append([]string{"default"}, serviceAccounts...) {
		if err := h.c.Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: name}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating service account %s/%s: %v", name, sa, err)
		}
	}
}

func (h *identityHarness) pod(t *testing.T, ns, name, sa string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			Containers:         []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}},
		},
	}
	if err := h.c.Create(t.Context(), p); err != nil {
		t.Fatalf("creating pod %s/%s: %v", ns, name, err)
	}
	return p
}

func (h *identityHarness) setPodPhase(t *testing.T, p *corev1.Pod, phase corev1.PodPhase) {
	t.Helper()
	if err := h.c.Get(t.Context(), client.ObjectKeyFromObject(p), p); err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = phase
	if err := h.c.Status().Update(t.Context(), p); err != nil {
		t.Fatalf("setting pod %s phase: %v", p.Name, err)
	}
}

func (h *identityHarness) meshIdentity(t *testing.T, name string, mutate ...func(*meshv1alpha1.MeshIdentity)) *meshv1alpha1.MeshIdentity {
	t.Helper()
	mi := &meshv1alpha1.MeshIdentity{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: meshv1alpha1.MeshIdentitySpec{
			TrustDomain:       "cluster.local",
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"identity-test": name}},
			IssuerRef:         meshv1alpha1.IssuerReference{Name: identityIssuer, Kind: "ClusterIssuer"},
			Duration:          metav1.Duration{Duration: 24 * time.Hour},
			MTLS:              meshv1alpha1.MTLS{Mode: meshv1alpha1.MTLSStrict},
			KeyAlgorithm:      meshv1alpha1.KeyECDSA,
		},
	}
	for _, m := range mutate {
		m(mi)
	}
	if err := h.c.Create(t.Context(), mi); err != nil {
		t.Fatalf("creating meshidentity %s: %v", name, err)
	}
	return mi
}

// awaitStatus waits until the MeshIdentity's status satisfies check, which
// returns "" when it does and what is missing otherwise.
func (h *identityHarness) awaitStatus(t *testing.T, name, what string, check func(*meshv1alpha1.MeshIdentity) string) *meshv1alpha1.MeshIdentity {
	t.Helper()
	var mi meshv1alpha1.MeshIdentity
	await(t, name+": "+what, func(ctx context.Context) (bool, string, error) {
		if err := h.c.Get(ctx, types.NamespacedName{Name: name}, &mi); err != nil {
			return false, "", err
		}
		if miss := check(&mi); miss != "" {
			return false, fmt.Sprintf("%s (status %+v)", miss, mi.Status), nil
		}
		return true, "", nil
	})
	return &mi
}

// hasCondition checks a condition's status and reason, that its message
// holds every word in words, and that it describes the current generation.
func hasCondition(t string, status metav1.ConditionStatus, reason string, words ...string) func(*meshv1alpha1.MeshIdentity) string {
	return func(mi *meshv1alpha1.MeshIdentity) string {
		c := meta.FindStatusCondition(mi.Status.Conditions, t)
		switch {
		case c == nil:
			return "no " + t + " condition"
		case c.Status != status || c.Reason != reason:
			return fmt.Sprintf("%s is %s/%s, want %s/%s", t, c.Status, c.Reason, status, reason)
		case c.ObservedGeneration != mi.Generation:
			return fmt.Sprintf("%s describes generation %d, not %d", t, c.ObservedGeneration, mi.Generation)
		}
		for _, w := range words {
			if !strings.Contains(c.Message, w) {
				return fmt.Sprintf("%s message %q lacks %q", t, c.Message, w)
			}
		}
		return ""
	}
}

func all(checks ...func(*meshv1alpha1.MeshIdentity) string) func(*meshv1alpha1.MeshIdentity) string {
	return func(mi *meshv1alpha1.MeshIdentity) string {
		for _, c := range checks {
			if miss := c(mi); miss != "" {
				return miss
			}
		}
		return ""
	}
}

func counts(identities, ready int32) func(*meshv1alpha1.MeshIdentity) string {
	return func(mi *meshv1alpha1.MeshIdentity) string {
		if mi.Status.Identities != identities || mi.Status.ReadyIdentities != ready {
			return fmt.Sprintf("identities %d/%d ready, want %d/%d", mi.Status.ReadyIdentities, mi.Status.Identities, ready, identities)
		}
		if mi.Status.ObservedGeneration != mi.Generation {
			return "status.observedGeneration is behind"
		}
		return ""
	}
}

// certificateNames lists the Weft Certificates in a namespace.
func (h *identityHarness) certificateNames(ctx context.Context, ns string) ([]string, error) {
	var list cmapi.CertificateList
	if err := h.c.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{identity.LabelManagedBy: identity.ManagedByWeft}); err != nil {
		return nil, err
	}
	var names []string
	for _, c := range list.Items {
		if c.DeletionTimestamp == nil {
			names = append(names, c.Name)
		}
	}
	slices.Sort(names)
	return names, nil
}

func (h *identityHarness) awaitCertificates(t *testing.T, ns string, want ...string) {
	t.Helper()
	slices.Sort(want)
	await(t, fmt.Sprintf("certificates in %s to be %v", ns, want), func(ctx context.Context) (bool, string, error) {
		names, err := h.certificateNames(ctx, ns)
		return slices.Equal(names, want), fmt.Sprint(names), err
	})
}

func (h *identityHarness) bundle(ctx context.Context, ns string) ([]*x509.Certificate, error) {
	var cm corev1.ConfigMap
	if err := h.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: identity.TrustBundleName}, &cm); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	return identity.ParseCertificates([]byte(cm.Data[identity.TrustBundleKey]))
}

func (h *identityHarness) secret(ctx context.Context, ns, name string) (*corev1.Secret, error) {
	var s corev1.Secret
	err := h.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &s)
	return &s, err
}

func leafCertificate(s *corev1.Secret) (*x509.Certificate, error) {
	block, _ := pem.Decode(s.Data[corev1.TLSCertKey])
	if block == nil {
		return nil, errors.New("tls.crt holds no PEM")
	}
	return x509.ParseCertificate(block.Bytes)
}

func TestMeshIdentity(t *testing.T) {
	h := startIdentityHarness(t)
	t.Run("issuance", h.testIssuance)
	t.Run("service accounts come and go", h.testServiceAccountsComeAndGo)
	t.Run("issuer missing", h.testIssuerMissing)
	t.Run("namespaced issuer missing", h.testNamespacedIssuerMissing)
	t.Run("cert-manager failure", h.testCertificateFailure)
	t.Run("denied request", h.testDeniedRequest)
	t.Run("bundle tampering", h.testBundleTampering)
	t.Run("CA rotation", h.testCARotation)
	t.Run("conflicting MeshIdentities", h.testConflict)
	t.Run("invalid selector", h.testInvalidSelector)
	t.Run("renewal reaches a running server", h.testRenewalServedWithoutRestart)
	t.Run("config/certmanager manifests", h.testCertManagerManifests)
}

func (h *identityHarness) testIssuance(t *testing.T) {
	// The default selector: namespaces labelled weft.dev/inject=enabled.
	mi := h.meshIdentity(t, "issuance", func(mi *meshv1alpha1.MeshIdentity) { mi.Spec.NamespaceSelector = nil })
	h.awaitStatus(t, "issuance", "first status before any workload", all(
		counts(0, 0),
		hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonNoWorkloads),
		hasCondition(meshv1alpha1.ConditionAccepted, metav1.ConditionTrue, meshv1alpha1.ReasonAccepted),
		hasCondition(meshv1alpha1.ConditionDegraded, metav1.ConditionFalse, meshv1alpha1.ReasonNoWorkloads),
	))

	h.namespace(t, "shop", map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}, "web", "db", "batch")
	h.namespace(t, "outside", nil, "web")
	h.pod(t, "shop", "web-1", "web")
	h.pod(t, "shop", "web-2", "web")
	h.pod(t, "shop", "db-1", "db")
	h.pod(t, "shop", "plain", "")
	finished := h.pod(t, "shop", "job", "batch")
	h.setPodPhase(t, finished, corev1.PodSucceeded)
	h.pod(t, "outside", "web-1", "web")

	h.awaitCertificates(t, "shop", "weft-identity-db", "weft-identity-default", "weft-identity-web")
	if names, err := h.certificateNames(t.Context(), "outside"); err != nil || len(names) != 0 {
		t.Fatalf("certificates in an unselected namespace: %v %v", names, err)
	}

	var cert cmapi.Certificate
	if err := h.c.Get(t.Context(), types.NamespacedName{Namespace: "shop", Name: "weft-identity-web"}, &cert); err != nil {
		t.Fatal(err)
	}
	var live meshv1alpha1.MeshIdentity
	if err := h.c.Get(t.Context(), types.NamespacedName{Name: mi.Name}, &live); err != nil {
		t.Fatal(err)
	}
	want := identity.Certificate(&live, "shop", "web")
	if diff := cmp.Diff(want.Spec, cert.Spec); diff != "" {
		t.Errorf("certificate spec (-want +got):\n%s", diff)
	}
	if cert.Spec.URIs[0] != "spiffe://cluster.local/ns/shop/sa/web" || cert.Spec.Duration.Duration != 24*time.Hour || cert.Spec.RenewBefore.Duration != 8*time.Hour {
		t.Errorf("spec = %+v", cert.Spec)
	}
	if cert.Labels[meshv1alpha1.LabelIdentity] != "issuance" || cert.Labels[identity.LabelManagedBy] != "weft" {
		t.Errorf("labels = %v", cert.Labels)
	}
	owner := metav1.GetControllerOf(&cert)
	if owner == nil || owner.UID != live.UID || owner.Kind != "MeshIdentity" || !ptr.Deref(owner.BlockOwnerDeletion, false) {
		t.Errorf("controller reference = %+v, want the MeshIdentity", owner)
	}

	got := h.awaitStatus(t, "issuance", "all identities ready", all(
		counts(3, 3),
		hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonReady, "3 of 3"),
		hasCondition(meshv1alpha1.ConditionDegraded, metav1.ConditionFalse, meshv1alpha1.ReasonIssued),
		hasCondition(meshv1alpha1.ConditionResolvedRefs, metav1.ConditionTrue, meshv1alpha1.ReasonResolvedRefs),
		func(mi *meshv1alpha1.MeshIdentity) string {
			if mi.Status.SoonestExpiry == nil {
				return "no soonestExpiry"
			}
			return ""
		},
	))
	var soonest time.Time
	for _, name := range []string{"weft-identity-db", "weft-identity-default", "weft-identity-web"} {
		var c cmapi.Certificate
		if err := h.c.Get(t.Context(), types.NamespacedName{Namespace: "shop", Name: name}, &c); err != nil {
			t.Fatal(err)
		}
		soonest = sooner(soonest, c.Status.NotAfter.Time)
	}
	if !got.Status.SoonestExpiry.Time.Equal(soonest) {
		t.Errorf("soonestExpiry = %v, want the earliest notAfter %v", got.Status.SoonestExpiry, soonest)
	}

	await(t, "trust bundle in shop", func(ctx context.Context) (bool, string, error) {
		certs, err := h.bundle(ctx, "shop")
		if err != nil || len(certs) != 1 {
			return false, fmt.Sprintf("%d certificates", len(certs)), err
		}
		return certs[0].Equal(h.signer.CA()), "a certificate other than the CA", nil
	})

	// Nothing changed, so a reconcile must not write the status again.
	before := got.ResourceVersion
	if _, err := h.r.Reconcile(t.Context(), ctrl.Request{NamespacedName: types.NamespacedName{Name: "issuance"}}); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if err := h.c.Get(t.Context(), types.NamespacedName{Name: "issuance"}, &live); err != nil {
		t.Fatal(err)
	}
	if live.ResourceVersion != before {
		t.Errorf("an idle reconcile rewrote the MeshIdentity (resourceVersion %s -> %s)", before, live.ResourceVersion)
	}
}

func (h *identityHarness) testServiceAccountsComeAndGo(t *testing.T) {
	h.meshIdentity(t, "churn")
	h.namespace(t, "churn", map[string]string{"identity-test": "churn"}, "api", "worker")
	api := h.pod(t, "churn", "api", "api")
	worker := h.pod(t, "churn", "worker", "worker")
	h.awaitCertificates(t, "churn", "weft-identity-api", "weft-identity-worker")
	h.awaitStatus(t, "churn", "two identities ready", counts(2, 2))

	// A new service account appears.
	h.namespace(t, "churn-2", map[string]string{"identity-test": "churn"}, "cron")
	h.pod(t, "churn-2", "cron", "cron")
	h.awaitCertificates(t, "churn-2", "weft-identity-cron")
	h.awaitStatus(t, "churn", "three identities ready", counts(3, 3))

	// The last pod of a service account is deleted.
	if err := h.c.Delete(t.Context(), api, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	h.awaitCertificates(t, "churn", "weft-identity-worker")

	// A pod that terminates no longer needs its identity.
	h.setPodPhase(t, worker, corev1.PodFailed)
	h.awaitCertificates(t, "churn")

	// A namespace that leaves the selection loses certificates and bundle.
	var ns corev1.Namespace
	if err := h.c.Get(t.Context(), types.NamespacedName{Name: "churn-2"}, &ns); err != nil {
		t.Fatal(err)
	}
	await(t, "trust bundle in churn-2", func(ctx context.Context) (bool, string, error) {
		certs, err := h.bundle(ctx, "churn-2")
		return len(certs) > 0, "none", err
	})
	delete(ns.Labels, "identity-test")
	if err := h.c.Update(t.Context(), &ns); err != nil {
		t.Fatal(err)
	}
	h.awaitCertificates(t, "churn-2")
	await(t, "trust bundle in churn-2 to go", func(ctx context.Context) (bool, string, error) {
		err := h.c.Get(ctx, types.NamespacedName{Namespace: "churn-2", Name: identity.TrustBundleName}, &corev1.ConfigMap{})
		return apierrors.IsNotFound(err), fmt.Sprint(err), client.IgnoreNotFound(err)
	})
	h.awaitStatus(t, "churn", "no identities", all(
		counts(0, 0),
		hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonNoWorkloads),
	))
}

func (h *identityHarness) testIssuerMissing(t *testing.T) {
	h.meshIdentity(t, "noissuer", func(mi *meshv1alpha1.MeshIdentity) { mi.Spec.IssuerRef.Name = "absent-ca" })
	h.namespace(t, "noissuer", map[string]string{"identity-test": "noissuer"}, "app")
	h.pod(t, "noissuer", "app", "app")
	h.awaitCertificates(t, "noissuer", "weft-identity-app")
	h.awaitStatus(t, "noissuer", "degraded for the missing issuer", all(
		counts(1, 0),
		hasCondition(meshv1alpha1.ConditionDegraded, metav1.ConditionTrue, meshv1alpha1.ReasonIssuerNotFound, `ClusterIssuer "absent-ca"`, "spec.issuerRef"),
		hasCondition(meshv1alpha1.ConditionResolvedRefs, metav1.ConditionFalse, meshv1alpha1.ReasonIssuerNotFound, "absent-ca"),
		hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonIssuerNotFound, "absent-ca"),
	))

	// The issuer appears (no signer answers for it): no longer degraded,
	// still issuing.
	if err := h.c.Create(t.Context(), &cmapi.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: "absent-ca"},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}},
	}); err != nil {
		t.Fatal(err)
	}
	h.awaitStatus(t, "noissuer", "issuing once the issuer exists", all(
		hasCondition(meshv1alpha1.ConditionDegraded, metav1.ConditionFalse, meshv1alpha1.ReasonIssuing),
		hasCondition(meshv1alpha1.ConditionResolvedRefs, metav1.ConditionTrue, meshv1alpha1.ReasonResolvedRefs),
		hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonIssuing, "0 of 1", "noissuer/weft-identity-app"),
	))
}

func (h *identityHarness) testNamespacedIssuerMissing(t *testing.T) {
	h.meshIdentity(t, "nsissuer", func(mi *meshv1alpha1.MeshIdentity) {
		mi.Spec.IssuerRef = meshv1alpha1.IssuerReference{Name: "team-ca", Kind: "Issuer"}
	})
	h.namespace(t, "nsissuer-a", map[string]string{"identity-test": "nsissuer"}, "app")
	h.namespace(t, "nsissuer-b", map[string]string{"identity-test": "nsissuer"}, "app")
	h.pod(t, "nsissuer-a", "app", "app")
	h.pod(t, "nsissuer-b", "app", "app")
	if err := h.c.Create(t.Context(), &cmapi.Issuer{
		ObjectMeta: metav1.ObjectMeta{Name: "team-ca", Namespace: "nsissuer-a"},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}},
	}); err != nil {
		t.Fatal(err)
	}
	h.awaitStatus(t, "nsissuer", "degraded naming the namespace without the Issuer", all(
		hasCondition(meshv1alpha1.ConditionDegraded, metav1.ConditionTrue, meshv1alpha1.ReasonIssuerNotFound, `Issuer "team-ca"`, "nsissuer-b"),
		func(mi *meshv1alpha1.MeshIdentity) string {
			if strings.Contains(meta.FindStatusCondition(mi.Status.Conditions, meshv1alpha1.ConditionDegraded).Message, "nsissuer-a") {
				return "the namespace that has its Issuer is named"
			}
			return ""
		},
	))
}

func (h *identityHarness) testCertificateFailure(t *testing.T) {
	key := types.NamespacedName{Namespace: "failing", Name: "weft-identity-payments"}
	h.signer.Fail(key, "the CA refused to sign: key too weak")
	h.meshIdentity(t, "failing")
	h.namespace(t, "failing", map[string]string{"identity-test": "failing"}, "payments", "ledger")
	h.pod(t, "failing", "payments", "payments")
	h.pod(t, "failing", "ledger", "ledger")
	h.awaitStatus(t, "failing", "degraded naming the failing certificate", all(
		counts(2, 1),
		hasCondition(meshv1alpha1.ConditionDegraded, metav1.ConditionTrue, meshv1alpha1.ReasonCertificateFailed,
			"Certificate failing/weft-identity-payments", "key too weak"),
		hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonCertificateFailed, "1 of 2", "weft-identity-payments"),
	))

	h.signer.Recover(key)
	h.awaitStatus(t, "failing", "ready after the issuer recovers", all(
		counts(2, 2),
		hasCondition(meshv1alpha1.ConditionDegraded, metav1.ConditionFalse, meshv1alpha1.ReasonIssued),
		hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionTrue, meshv1alpha1.ReasonReady),
	))

	// A renewal that fails while the old certificate is still valid keeps
	// the identity usable but degrades the MeshIdentity.
	h.signer.Fail(key, "renewal refused by policy")
	h.signer.Renew(key)
	h.awaitStatus(t, "failing", "degraded by the failed renewal", all(
		counts(2, 2),
		hasCondition(meshv1alpha1.ConditionDegraded, metav1.ConditionTrue, meshv1alpha1.ReasonCertificateFailed, "weft-identity-payments", "renewal refused"),
	))
	h.signer.Recover(key)
	h.awaitStatus(t, "failing", "healthy again", hasCondition(meshv1alpha1.ConditionDegraded, metav1.ConditionFalse, meshv1alpha1.ReasonIssued))
}

func (h *identityHarness) testDeniedRequest(t *testing.T) {
	// An issuer that exists but that no signer answers for, so the
	// certificate waits for its request, which an approver denies.
	if err := h.c.Create(t.Context(), &cmapi.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: "gated-ca"},
		Spec:       cmapi.IssuerSpec{IssuerConfig: cmapi.IssuerConfig{SelfSigned: &cmapi.SelfSignedIssuer{}}},
	}); err != nil {
		t.Fatal(err)
	}
	h.meshIdentity(t, "denied", func(mi *meshv1alpha1.MeshIdentity) { mi.Spec.IssuerRef.Name = "gated-ca" })
	h.namespace(t, "denied", map[string]string{"identity-test": "denied"}, "app")
	h.pod(t, "denied", "app", "app")
	h.awaitCertificates(t, "denied", "weft-identity-app")
	h.awaitStatus(t, "denied", "issuing", hasCondition(meshv1alpha1.ConditionDegraded, metav1.ConditionFalse, meshv1alpha1.ReasonIssuing))

	var cert cmapi.Certificate
	if err := h.c.Get(t.Context(), types.NamespacedName{Namespace: "denied", Name: "weft-identity-app"}, &cert); err != nil {
		t.Fatal(err)
	}
	cr := &cmapi.CertificateRequest{
		ObjectMeta: metav1.ObjectMeta{
			Name: "weft-identity-app-1", Namespace: "denied",
			Annotations: map[string]string{
				cmapi.CertificateRequestRevisionAnnotationKey: "1",
				cmapi.CertificateNameKey:                      cert.Name,
			},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: cmapi.SchemeGroupVersion.String(), Kind: cmapi.CertificateKind,
				Name: cert.Name, UID: cert.UID, Controller: ptr.To(true),
			}},
		},
		Spec: cmapi.CertificateRequestSpec{
			Request:   csrPEM(t),
			IssuerRef: cmmeta.IssuerReference{Name: "gated-ca", Kind: "ClusterIssuer", Group: "cert-manager.io"},
		},
	}
	if err := h.c.Create(t.Context(), cr); err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	cr.Status.Conditions = []cmapi.CertificateRequestCondition{{
		Type: cmapi.CertificateRequestConditionDenied, Status: cmmeta.ConditionTrue, Reason: "policy.cert-manager.io",
		Message: "the URI SAN is not allowed for this namespace", LastTransitionTime: &now,
	}}
	if err := h.c.Status().Update(t.Context(), cr); err != nil {
		t.Fatal(err)
	}
	h.awaitStatus(t, "denied", "degraded naming the denied request", all(
		hasCondition(meshv1alpha1.ConditionDegraded, metav1.ConditionTrue, meshv1alpha1.ReasonCertificateFailed,
			"Certificate denied/weft-identity-app", "CertificateRequest weft-identity-app-1 was denied", "not allowed"),
		hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonCertificateFailed),
	))
}

func csrPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func (h *identityHarness) testCARotation(t *testing.T) {
	h.meshIdentity(t, "rotation")
	h.namespace(t, "rotation-a", map[string]string{"identity-test": "rotation"}, "a")
	h.namespace(t, "rotation-b", map[string]string{"identity-test": "rotation"}, "b")
	h.pod(t, "rotation-a", "a", "a")
	h.pod(t, "rotation-b", "b", "b")
	h.awaitStatus(t, "rotation", "ready before the rotation", counts(2, 2))

	oldCA := h.signer.CA()
	if err := h.signer.RotateCA(); err != nil {
		t.Fatal(err)
	}
	newCA := h.signer.CA()
	h.signer.RenewAll()

	secrets := []types.NamespacedName{{Namespace: "rotation-a", Name: "weft-identity-a"}, {Namespace: "rotation-b", Name: "weft-identity-b"}}
	await(t, "every workload renewed by the new CA", func(ctx context.Context) (bool, string, error) {
		for _, key := range secrets {
			s, err := h.secret(ctx, key.Namespace, key.Name)
			if err != nil {
				return false, "", err
			}
			leaf, err := leafCertificate(s)
			if err != nil {
				return false, "", err
			}
			if leaf.CheckSignatureFrom(newCA) != nil {
				return false, key.String() + " still signed by the old CA", nil
			}
		}
		return true, "", nil
	})
	for _, ns := range []string{"rotation-a", "rotation-b"} {
		await(t, "bundle in "+ns+" with the old and the new root", func(ctx context.Context) (bool, string, error) {
			certs, err := h.bundle(ctx, ns)
			if err != nil {
				return false, "", err
			}
			hasOld := slices.ContainsFunc(certs, oldCA.Equal)
			hasNew := slices.ContainsFunc(certs, newCA.Equal)
			return hasOld && hasNew && len(certs) == 2, fmt.Sprintf("%d roots, old %v, new %v", len(certs), hasOld, hasNew), nil
		})
	}
	oldFP, newFP := identity.Fingerprint(oldCA), identity.Fingerprint(newCA)
	rotated := h.awaitStatus(t, "rotation", "the old root recorded as retired", func(mi *meshv1alpha1.MeshIdentity) string {
		rec := recordedRoots(mi)
		if _, current := rec[newFP]; !current || rec[newFP] != "" || rec[oldFP] == "" || len(rec) != 2 {
			return fmt.Sprintf("status.trustRoots = %v, want %s current and %s retired", rec, newFP, oldFP)
		}
		return ""
	})
	for _, ns := range []string{"rotation-a", "rotation-b"} {
		var cm corev1.ConfigMap
		if err := h.c.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: identity.TrustBundleName}, &cm); err != nil {
			t.Fatal(err)
		}
		if len(cm.Annotations) != 0 {
			t.Errorf("bundle in %s carries annotations %v; it holds no state", ns, cm.Annotations)
		}
	}

	// The bundles are output only: one deleted comes back with both roots,
	// and the old root's retirement time does not move.
	var cm corev1.ConfigMap
	if err := h.c.Get(t.Context(), types.NamespacedName{Namespace: "rotation-a", Name: identity.TrustBundleName}, &cm); err != nil {
		t.Fatal(err)
	}
	if err := h.c.Delete(t.Context(), &cm); err != nil {
		t.Fatal(err)
	}
	await(t, "the deleted bundle published again with both roots", func(ctx context.Context) (bool, string, error) {
		var again corev1.ConfigMap
		if err := h.c.Get(ctx, types.NamespacedName{Namespace: "rotation-a", Name: identity.TrustBundleName}, &again); err != nil {
			return false, "", client.IgnoreNotFound(err)
		}
		if again.UID == cm.UID {
			return false, "not deleted yet", nil
		}
		certs, err := identity.ParseCertificates([]byte(again.Data[identity.TrustBundleKey]))
		return len(certs) == 2 && slices.ContainsFunc(certs, oldCA.Equal) && slices.ContainsFunc(certs, newCA.Equal), fmt.Sprintf("%d roots", len(certs)), err
	})
	h.awaitStatus(t, "rotation", "ready after the rotation", all(
		counts(2, 2),
		func(mi *meshv1alpha1.MeshIdentity) string {
			if !maps.Equal(recordedRoots(mi), recordedRoots(rotated)) {
				return fmt.Sprintf("status.trustRoots = %v, want it unchanged: %v", recordedRoots(mi), recordedRoots(rotated))
			}
			return ""
		},
	))
}

// A user who may write ConfigMaps in one covered namespace adds a root of
// their own to its trust bundle. It must not reach any other namespace nor
// the record, and the bundle is put back.
func (h *identityHarness) testBundleTampering(t *testing.T) {
	h.meshIdentity(t, "tamper")
	h.namespace(t, "tamper-a", map[string]string{"identity-test": "tamper"}, "a")
	h.namespace(t, "tamper-b", map[string]string{"identity-test": "tamper"}, "b")
	h.pod(t, "tamper-a", "a", "a")
	h.pod(t, "tamper-b", "b", "b")
	h.awaitStatus(t, "tamper", "ready", counts(2, 2))
	ca := h.signer.CA()
	onlyCA := func(ns string) func(ctx context.Context) (bool, string, error) {
		return func(ctx context.Context) (bool, string, error) {
			var cm corev1.ConfigMap
			if err := h.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: identity.TrustBundleName}, &cm); err != nil {
				return false, "", client.IgnoreNotFound(err)
			}
			certs, err := identity.ParseCertificates([]byte(cm.Data[identity.TrustBundleKey]))
			if err != nil {
				return false, "", err
			}
			ok := len(certs) == 1 && certs[0].Equal(ca) && len(cm.Data) == 1 && len(cm.BinaryData) == 0 && len(cm.Annotations) == 0 && !ptr.Deref(cm.Immutable, false)
			return ok, fmt.Sprintf("%d roots, keys %v, annotations %v, immutable %v", len(certs), slices.Collect(maps.Keys(cm.Data)), cm.Annotations, cm.Immutable), nil
		}
	}
	await(t, "bundle in tamper-a", onlyCA("tamper-a"))
	await(t, "bundle in tamper-b", onlyCA("tamper-b"))
	var other corev1.ConfigMap
	if err := h.c.Get(t.Context(), types.NamespacedName{Namespace: "tamper-b", Name: identity.TrustBundleName}, &other); err != nil {
		t.Fatal(err)
	}

	foreign, foreignPEM := testRoot(t, "foreign root", time.Now().Add(-time.Hour), time.Now().Add(1000*time.Hour))
	tamper := func(mutate func(*corev1.ConfigMap)) {
		t.Helper()
		var cm corev1.ConfigMap
		if err := h.c.Get(t.Context(), types.NamespacedName{Namespace: "tamper-a", Name: identity.TrustBundleName}, &cm); err != nil {
			t.Fatal(err)
		}
		cm.Data[identity.TrustBundleKey] += string(foreignPEM)
		mutate(&cm)
		if err := h.c.Update(t.Context(), &cm); err != nil {
			t.Fatalf("editing the bundle in tamper-a: %v", err)
		}
	}
	unspread := func(when string) {
		t.Helper()
		// A reconcile of its own, so that nothing is left to the timing of
		// the watch.
		if _, err := h.r.Reconcile(t.Context(), ctrl.Request{NamespacedName: types.NamespacedName{Name: "tamper"}}); err != nil {
			t.Fatalf("Reconcile: %v", err)
		}
		await(t, when+": bundle in tamper-a put back", onlyCA("tamper-a"))
		var now corev1.ConfigMap
		if err := h.c.Get(t.Context(), types.NamespacedName{Namespace: "tamper-b", Name: identity.TrustBundleName}, &now); err != nil {
			t.Fatal(err)
		}
		if now.ResourceVersion != other.ResourceVersion {
			t.Fatalf("%s: the bundle in tamper-b was rewritten: %q", when, now.Data[identity.TrustBundleKey])
		}
		var mi meshv1alpha1.MeshIdentity
		if err := h.c.Get(t.Context(), types.NamespacedName{Name: "tamper"}, &mi); err != nil {
			t.Fatal(err)
		}
		if rec := recordedRoots(&mi); !maps.Equal(rec, map[string]string{identity.Fingerprint(ca): ""}) {
			t.Fatalf("%s: status.trustRoots = %v, want only the issuing CA", when, rec)
		}
	}

	// A root added to ca.crt, with the retired-roots annotation earlier
	// versions kept on the ConfigMap forged to match, and a stray key.
	tamper(func(cm *corev1.ConfigMap) {
		cm.Annotations = map[string]string{identity.LegacyAnnotationRetiredRoots: fmt.Sprintf(`{%q:%q}`, identity.Fingerprint(foreign), time.Now().UTC().Format(time.RFC3339))}
		cm.Data["extra.crt"] = string(foreignPEM)
	})
	unspread("added root")

	// The same, made immutable so that it cannot be updated back.
	tamper(func(cm *corev1.ConfigMap) { cm.Immutable = ptr.To(true) })
	unspread("immutable bundle")
}

func (h *identityHarness) testConflict(t *testing.T) {
	// Names in creation order, so the name tie-break agrees with age when
	// both land in the same second.
	sel := func(mi *meshv1alpha1.MeshIdentity) {
		mi.Spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"identity-test": "conflict"}}
	}
	older := h.meshIdentity(t, "conflict-a", sel)
	h.namespace(t, "conflict", map[string]string{"identity-test": "conflict"}, "app")
	h.pod(t, "conflict", "app", "app")
	h.awaitStatus(t, "conflict-a", "ready", counts(1, 1))
	h.meshIdentity(t, "conflict-b", sel, func(mi *meshv1alpha1.MeshIdentity) { mi.Spec.TrustDomain = "other.example" })
	h.awaitStatus(t, "conflict-b", "conflicted", all(
		counts(0, 0),
		hasCondition(meshv1alpha1.ConditionAccepted, metav1.ConditionFalse, meshv1alpha1.ReasonConflicted, "conflict", "conflict-a", "spec.namespaceSelector"),
		hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonConflicted),
	))
	h.awaitStatus(t, "conflict-a", "still accepted", hasCondition(meshv1alpha1.ConditionAccepted, metav1.ConditionTrue, meshv1alpha1.ReasonAccepted))
	var cert cmapi.Certificate
	if err := h.c.Get(t.Context(), types.NamespacedName{Namespace: "conflict", Name: "weft-identity-app"}, &cert); err != nil {
		t.Fatal(err)
	}
	if cert.Spec.URIs[0] != "spiffe://cluster.local/ns/conflict/sa/app" {
		t.Fatalf("the newer MeshIdentity rewrote the certificate: %v", cert.Spec.URIs)
	}

	// The older one goes: the newer takes the namespace over. (No garbage
	// collector runs here, so the old Certificate is still there, owned by
	// the deleted MeshIdentity.)
	if err := h.c.Delete(t.Context(), older); err != nil {
		t.Fatal(err)
	}
	h.awaitStatus(t, "conflict-b", "accepted after the older one is gone", all(
		hasCondition(meshv1alpha1.ConditionAccepted, metav1.ConditionTrue, meshv1alpha1.ReasonAccepted),
		counts(1, 1),
	))
	var b meshv1alpha1.MeshIdentity
	if err := h.c.Get(t.Context(), types.NamespacedName{Name: "conflict-b"}, &b); err != nil {
		t.Fatal(err)
	}
	if err := h.c.Get(t.Context(), types.NamespacedName{Namespace: "conflict", Name: "weft-identity-app"}, &cert); err != nil {
		t.Fatal(err)
	}
	if ref := metav1.GetControllerOf(&cert); ref == nil || ref.UID != b.UID {
		t.Fatalf("controller of the certificate = %+v, want conflict-b", ref)
	}
	if cert.Spec.URIs[0] != "spiffe://other.example/ns/conflict/sa/app" || cert.Labels[meshv1alpha1.LabelIdentity] != "conflict-b" {
		t.Fatalf("certificate not rewritten for conflict-b: %v %v", cert.Spec.URIs, cert.Labels)
	}
}

func (h *identityHarness) testInvalidSelector(t *testing.T) {
	// Identities are issued first, so that the test sees whether a broken
	// selector takes them away.
	h.namespace(t, "selector-typo", map[string]string{"identity-test": "badselector"}, "api")
	h.pod(t, "selector-typo", "api-0", "api")
	mi := h.meshIdentity(t, "badselector")
	h.awaitCertificates(t, "selector-typo", "weft-identity-api")

	// The schema cannot check selector operators; the status must say.
	orig := mi.DeepCopy()
	mi.Spec.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Near", Values: []string{"x"}}}}
	if err := h.c.Patch(t.Context(), mi, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
	h.awaitStatus(t, "badselector", "invalid", all(
		hasCondition(meshv1alpha1.ConditionAccepted, metav1.ConditionFalse, meshv1alpha1.ReasonInvalid, "spec.namespaceSelector"),
		hasCondition(meshv1alpha1.ConditionReady, metav1.ConditionFalse, meshv1alpha1.ReasonInvalid),
	))
	// A typo must not take every identity away: the Certificate stays.
	names, err := h.certificateNames(t.Context(), "selector-typo")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"weft-identity-api"}) {
		t.Errorf("certificates after the selector broke: %v, want the issued one kept", names)
	}
}
