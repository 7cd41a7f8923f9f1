package webhookcert

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weft-mesh/weft/internal/testenv"
)

const (
	ns   = "weft-system"
	host = "weft-webhook.weft-system.svc"
)

// TestManager runs two replicas' certificate managers against a real API
// server through the certificate's life: they agree on one Secret, serve
// it and put its CA in every webhook of the configuration; nothing is
// written while nothing is due; the serving certificate is renewed two
// thirds through its life under the same CA; the CA is renewed in its last
// year with the old CA kept in the bundle; a damaged Secret is replaced.
func TestManager(t *testing.T) {
	env := testenv.Start(t)
	c := env.Client
	ctx := t.Context()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	hook := func(name string) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name: name, AdmissionReviewVersions: []string{"v1"}, SideEffects: ptr.To(admissionregistrationv1.SideEffectClassNone),
			ClientConfig: admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Namespace: ns, Name: "weft-webhook", Path: ptr.To("/inject")}},
		}
	}
	if err := c.Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-injector"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{hook("namespace.inject.weft.dev"), hook("pod.inject.weft.dev")},
	}); err != nil {
		t.Fatal(err)
	}

	apiService := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": "v1alpha1.debug.weft.dev"},
		"spec": map[string]any{
			"group": "debug.weft.dev", "version": "v1alpha1", "groupPriorityMinimum": int64(1000), "versionPriority": int64(15),
			"service": map[string]any{"namespace": ns, "name": "weft-webhook", "port": int64(9445)},
		},
	}}
	if err := c.Create(ctx, apiService); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	var mu sync.Mutex
	clock := start
	setClock := func(at time.Time) { mu.Lock(); clock = at; mu.Unlock() }
	replica := func() *Manager {
		return &Manager{
			Client: c, Namespace: ns, SecretName: "weft-webhook-tls", DNSNames: []string{host, host + ".cluster.local"},
			Webhook: "weft-injector", APIService: "v1alpha1.debug.weft.dev", CertDir: t.TempDir(),
			Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return clock },
		}
	}
	a, b := replica(), replica()
	ensure := func(m *Manager) {
		t.Helper()
		if err := m.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
	}
	secret := func() corev1.Secret {
		t.Helper()
		var s corev1.Secret
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "weft-webhook-tls"}, &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	// check: both replicas serve the Secret's pair, every webhook trusts
	// its CA bundle, and the pair is valid for the Service's name now.
	check := func(what string, at time.Time) corev1.Secret {
		t.Helper()
		s := secret()
		for i, m := range []*Manager{a, b} {
			for _, f := range []string{"tls.crt", "tls.key", "ca.crt"} {
				got, err := os.ReadFile(filepath.Join(m.CertDir, f))
				if err != nil || !bytes.Equal(got, s.Data[f]) {
					t.Errorf("%s: replica %d serves a %s other than the Secret's (%v)", what, i, f, err)
				}
			}
		}
		var wh admissionregistrationv1.MutatingWebhookConfiguration
		if err := c.Get(ctx, client.ObjectKey{Name: "weft-injector"}, &wh); err != nil {
			t.Fatal(err)
		}
		for _, w := range wh.Webhooks {
			if !bytes.Equal(w.ClientConfig.CABundle, s.Data["ca.crt"]) {
				t.Errorf("%s: webhook %s has another caBundle", what, w.Name)
			}
		}
		if err := c.Get(ctx, client.ObjectKey{Name: apiService.GetName()}, apiService); err != nil {
			t.Fatal(err)
		}
		if got, _, _ := unstructured.NestedString(apiService.Object, "spec", "caBundle"); got != base64.StdEncoding.EncodeToString(s.Data["ca.crt"]) {
			t.Errorf("%s: the APIService has another caBundle", what)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(s.Data["ca.crt"])
		cert, err := parseCert(s.Data["tls.crt"])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: host, Roots: pool, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("%s: the served certificate does not verify for %s: %v", what, host, err)
		}
		return s
	}

	// Two replicas start at once.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, m := range []*Manager{a, b} {
		wg.Go(func() { errs[i] = m.Ensure(ctx) })
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("starting together: %v, %v", errs[0], errs[1])
	}
	first := check("at start", start)

	// Nothing due: nothing written.
	ensure(a)
	ensure(b)
	if s := secret(); s.ResourceVersion != first.ResourceVersion {
		t.Errorf("a check with nothing due rewrote the Secret")
	}

	// Eight months on: a new serving certificate from the same CA; the
	// other replica picks it up at its next check.
	later := start.Add(245 * 24 * time.Hour)
	setClock(later)
	ensure(a)
	ensure(b)
	renewed := check("eight months on", later)
	if bytes.Equal(renewed.Data["tls.crt"], first.Data["tls.crt"]) || !bytes.Equal(renewed.Data["ca.crt"], first.Data["ca.crt"]) {
		t.Errorf("eight months on: want a new serving certificate under the same CA")
	}

	// In the CA's last year: a new CA; the bundle keeps the old one, which
	// signed what other replicas may still serve.
	caDue := start.Add(CAValidity - 200*24*time.Hour)
	setClock(caDue)
	ensure(b)
	ensure(a)
	rotated := check("in the CA's last year", caDue)
	if cas := parseCerts(rotated.Data["ca.crt"]); len(cas) != 2 || !cas[1].Equal(parseCerts(first.Data["ca.crt"])[0]) {
		t.Errorf("after the CA's renewal the bundle holds %d CAs, want the new one and the old one", len(cas))
	}

	// A damaged Secret (a key that is not the certificate's) is replaced.
	s := secret()
	s.Data["tls.key"] = renewed.Data["tls.key"]
	if err := c.Update(ctx, &s); err != nil {
		t.Fatal(err)
	}
	ensure(a)
	ensure(b)
	check("after damage", caDue)
}
