package controllers

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weft-mesh/weft/internal/inject"
	"github.com/weft-mesh/weft/internal/manifest"
	"github.com/weft-mesh/weft/internal/testenv"
)

// readManifests decodes every object of the YAML files in config/certmanager
// (not the kustomization itself).
func readManifests(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "config", "certmanager", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var objs []*unstructured.Unstructured
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs, err := manifest.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		objs = append(objs, docs...)
	}
	if len(objs) == 0 {
		t.Fatal("no manifests in config/certmanager")
	}
	return objs
}

// The manifests in config/certmanager must pass cert-manager's schema, and
// the xDS certificate must carry the name injected proxies dial.
func (h *identityHarness) testCertManagerManifests(t *testing.T) {
	for _, ns := range []string{"weft-system", "cert-manager"} {
		if err := h.c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	var xds *cmapi.Certificate
	for _, u := range readManifests(t) {
		// A server-side apply dry run validates whether or not the object
		// exists (the harness has made a mesh-ca ClusterIssuer already).
		if err := h.c.Patch(t.Context(), u, client.Apply, //nolint:staticcheck // unstructured manifests have no apply configuration types
			client.DryRunAll, client.FieldOwner("weft-manifest-test"), client.ForceOwnership); err != nil {
			t.Errorf("%s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
		if u.GetKind() == cmapi.CertificateKind && u.GetName() == "weft-xds" {
			xds = &cmapi.Certificate{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, xds); err != nil {
				t.Fatal(err)
			}
		}
	}
	if xds == nil {
		t.Fatal("no weft-xds Certificate")
	}
	host, _, err := net.SplitHostPort(inject.DefaultConfig().XDSAddress)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(xds.Spec.DNSNames, host) {
		t.Errorf("the xDS certificate names %v, but proxies dial %s", xds.Spec.DNSNames, host)
	}
}
