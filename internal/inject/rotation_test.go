package inject

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/credentials/tls/certprovider"
	"google.golang.org/grpc/credentials/tls/certprovider/pemfile"
	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

// TestEnvoyWatchesTheIdentityVolume checks that every file Envoy's SDS file
// names lies directly in the directory it watches, and that this directory
// is where the proxy mounts the whole projected identity volume. The kubelet
// updates a projected volume by renaming its ..data symlink inside the mount
// directory, and Envoy's watched_directory reloads on a rename into the
// watched directory; a file in a subdirectory, or a subPath mount (never
// updated by the kubelet), would miss rotations.
func TestEnvoyWatchesTheIdentityVolume(t *testing.T) {
	ns, pod := loadCase(t, "namespace-label")
	res, err := Inject(pod, ns.Labels, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	proxy := container(res.Pod, ProxyContainerName)
	i := slices.IndexFunc(proxy.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == IdentityVolumeName })
	if i < 0 {
		t.Fatal("weft-proxy does not mount the identity volume")
	}
	if m := proxy.VolumeMounts[i]; m.MountPath != IdentityDir || m.SubPath != "" || m.SubPathExpr != "" {
		t.Fatalf("identity mounted as %+v, want the whole volume at %s", m, IdentityDir)
	}

	e, ok := env(container(res.Pod, InitContainerName), EnvProxySDS)
	if !ok {
		t.Fatalf("weft-init has no %s", EnvProxySDS)
	}
	var sds discoveryv3.DiscoveryResponse
	if err := protojson.Unmarshal([]byte(e.Value), &sds); err != nil {
		t.Fatal(err)
	}
	files := map[string]bool{}
	for _, a := range sds.GetResources() {
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		var watched string
		var names []string
		switch {
		case s.GetTlsCertificate() != nil:
			c := s.GetTlsCertificate()
			watched = c.GetWatchedDirectory().GetPath()
			names = []string{c.GetCertificateChain().GetFilename(), c.GetPrivateKey().GetFilename()}
		case s.GetValidationContext() != nil:
			v := s.GetValidationContext()
			watched = v.GetWatchedDirectory().GetPath()
			names = []string{v.GetTrustedCa().GetFilename()}
		default:
			t.Fatalf("unexpected SDS secret %s", s.GetName())
		}
		if watched != IdentityDir {
			t.Errorf("secret %s watches %q, want %s", s.GetName(), watched, IdentityDir)
		}
		for _, n := range names {
			if path.Dir(n) != watched {
				t.Errorf("secret %s reads %s outside its watched directory %s", s.GetName(), n, watched)
			}
			files[path.Base(n)] = true
		}
	}
	for _, f := range []string{CertificateFile, PrivateKeyFile, CAFile} {
		if !files[f] {
			t.Errorf("Envoy does not read %s", f)
		}
	}
}

// TestGRPCFileWatcherFollowsRotation runs grpc-go's file_watcher
// certificate provider, configured as the injected bootstrap configures it,
// on a directory the test updates the way the kubelet updates a projected
// volume. It must pick up a trust bundle change on its own (the ConfigMap
// changes when a new root appears, while the workload's Secret does not),
// and then the renewed certificate signed by the new root.
func TestGRPCFileWatcherFollowsRotation(t *testing.T) {
	ns, pod := loadCase(t, "grpc-agent")
	res, err := Inject(pod, ns.Labels, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	e, ok := env(container(res.Pod, "cart"), EnvGRPCBootstrapConfig)
	if !ok {
		t.Fatalf("no %s", EnvGRPCBootstrapConfig)
	}
	var boot struct {
		CertificateProviders map[string]struct {
			PluginName string          `json:"plugin_name"`
			Config     json.RawMessage `json:"config"`
		} `json:"certificate_providers"`
	}
	if err := json.Unmarshal([]byte(e.Value), &boot); err != nil {
		t.Fatal(err)
	}
	p, ok := boot.CertificateProviders[GRPCCertProviderInstance]
	if !ok || p.PluginName != pemfile.PluginName {
		t.Fatalf("certificate providers %+v, want %s using %s", boot.CertificateProviders, GRPCCertProviderInstance, pemfile.PluginName)
	}

	// The mount directory moves into the test's temporary directory and the
	// refresh interval shrinks; the rest is the injected configuration.
	dir := t.TempDir()
	cfg := strings.ReplaceAll(string(p.Config), `"`+IdentityDir+`/`, `"`+filepath.ToSlash(dir)+`/`)
	cfg = strings.Replace(cfg, `"refresh_interval":"60s"`, `"refresh_interval":"0.020s"`, 1)
	if strings.Contains(cfg, IdentityDir) || !strings.Contains(cfg, "0.020s") {
		t.Fatalf("could not relocate the provider config %s", p.Config)
	}

	oldRoot, newRoot := newTestCA(t, "old root"), newTestCA(t, "new root")
	spiffeID := "spiffe://mesh.example/ns/shop/sa/cart"
	oldCert, oldKey := issue(t, oldRoot, spiffeID)
	kw := &kubeletWriter{t: t, dir: dir}
	kw.write(map[string][]byte{CertificateFile: oldCert, PrivateKeyFile: oldKey, CAFile: oldRoot.PEM})

	prov, err := certprovider.GetProvider(p.PluginName, json.RawMessage(cfg), certprovider.BuildOptions{WantIdentity: true, WantRoot: true})
	if err != nil {
		t.Fatalf("grpc-go rejects the provider config: %v", err)
	}
	t.Cleanup(prov.Close)

	awaitKeyMaterial(t, prov, "the initial certificate and root", oldCert, oldRoot)

	// A new root appears: the trust bundle ConfigMap changes, the Secret does not.
	kw.write(map[string][]byte{CertificateFile: oldCert, PrivateKeyFile: oldKey, CAFile: slices.Concat(oldRoot.PEM, newRoot.PEM)})
	awaitKeyMaterial(t, prov, "the bundle with both roots", oldCert, oldRoot, newRoot)

	// cert-manager renews the certificate from the new root.
	newCert, newKey := issue(t, newRoot, spiffeID)
	kw.write(map[string][]byte{CertificateFile: newCert, PrivateKeyFile: newKey, CAFile: slices.Concat(oldRoot.PEM, newRoot.PEM)})
	awaitKeyMaterial(t, prov, "the renewed certificate", newCert, oldRoot, newRoot)
}

// awaitKeyMaterial waits until prov serves certPEM as its identity and
// exactly roots as its trust.
func awaitKeyMaterial(t *testing.T, prov certprovider.Provider, what string, certPEM []byte, roots ...*xdstest.CA) {
	t.Helper()
	want := x509.NewCertPool()
	for _, r := range roots {
		want.AddCert(r.Cert)
	}
	leaf, _ := pem.Decode(certPEM)
	var last string
	err := wait.PollUntilContextTimeout(t.Context(), 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		km, err := prov.KeyMaterial(ctx)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		if len(km.Certs) != 1 || len(km.Certs[0].Certificate) == 0 || !slices.Equal(km.Certs[0].Certificate[0], leaf.Bytes) {
			last = "identity is another certificate"
			return false, nil
		}
		if km.Roots == nil || !km.Roots.Equal(want) {
			last = "roots differ"
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v (last: %s)", what, err, last)
	}
}

// kubeletWriter updates a directory the way the kubelet's atomic writer
// updates Secret, ConfigMap and projected volumes: each version of the
// payload goes into a new hidden directory, a ..data symlink is renamed over
// the old one in a single step, and the visible files are symlinks through
// ..data that never change.
type kubeletWriter struct {
	t   *testing.T
	dir string
	n   int
}

func (w *kubeletWriter) write(files map[string][]byte) {
	w.t.Helper()
	w.n++
	version := fmt.Sprintf("..2026_01_01_00_00_%02d.%09d", w.n, w.n)
	if err := os.Mkdir(filepath.Join(w.dir, version), 0o755); err != nil {
		w.t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(w.dir, version, name), data, 0o444); err != nil {
			w.t.Fatal(err)
		}
	}
	previous, _ := os.Readlink(filepath.Join(w.dir, "..data"))
	if err := os.Symlink(version, filepath.Join(w.dir, "..data_tmp")); err != nil {
		w.t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(w.dir, "..data_tmp"), filepath.Join(w.dir, "..data")); err != nil {
		w.t.Fatal(err)
	}
	for name := range files {
		link := filepath.Join(w.dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			w.t.Fatal(err)
		}
	}
	if previous != "" {
		if err := os.RemoveAll(filepath.Join(w.dir, previous)); err != nil {
			w.t.Fatal(err)
		}
	}
}

func newTestCA(t *testing.T, name string) *xdstest.CA {
	t.Helper()
	ca, err := xdstest.NewRoot(name, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *xdstest.CA, spiffeID string) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(spiffeID, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}
