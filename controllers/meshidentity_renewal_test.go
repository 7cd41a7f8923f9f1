package controllers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/tls/certprovider"
	"google.golang.org/grpc/credentials/tls/certprovider/pemfile"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/identity"
)

// projectedVolume writes files into a directory the way the kubelet updates
// a Secret or ConfigMap volume: the files live in a timestamped directory,
// ..data points at it, and each visible name is a symlink through ..data.
// An update writes a new directory and renames a new ..data over the old
// one, so a reader sees either every old file or every new one.
type projectedVolume struct {
	dir     string
	current string
	n       int
}

func newProjectedVolume(t *testing.T, files map[string][]byte) *projectedVolume {
	t.Helper()
	v := &projectedVolume{dir: t.TempDir()}
	v.update(t, files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(v.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func (v *projectedVolume) update(t *testing.T, files map[string][]byte) {
	t.Helper()
	v.n++
	ts := fmt.Sprintf("..%s.%d", time.Now().UTC().Format("2006_01_02_15_04_05"), v.n)
	if err := os.Mkdir(filepath.Join(v.dir, ts), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(v.dir, ts, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if v.current != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, v.current)); err != nil {
			t.Fatal(err)
		}
	}
	v.current = ts
}

func (v *projectedVolume) path(name string) string { return filepath.Join(v.dir, name) }

// workloadFiles is what a meshed pod mounts: its Secret's key pair and the
// namespace's trust bundle.
func (h *identityHarness) workloadFiles(ctx context.Context, ns, sa string) (map[string][]byte, *big.Int, error) {
	s, err := h.secret(ctx, ns, identity.CertificateName(sa))
	if err != nil {
		return nil, nil, err
	}
	leaf, err := leafCertificate(s)
	if err != nil {
		return nil, nil, err
	}
	var cm corev1.ConfigMap
	if err := h.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: identity.TrustBundleName}, &cm); err != nil {
		return nil, nil, err
	}
	return map[string][]byte{
		corev1.TLSCertKey:       s.Data[corev1.TLSCertKey],
		corev1.TLSPrivateKeyKey: s.Data[corev1.TLSPrivateKeyKey],
		identity.TrustBundleKey: []byte(cm.Data[identity.TrustBundleKey]),
	}, leaf.SerialNumber, nil
}

func newFileProvider(t *testing.T, v *projectedVolume) certprovider.Provider {
	t.Helper()
	p, err := pemfile.NewProvider(pemfile.Options{
		CertFile:        v.path(corev1.TLSCertKey),
		KeyFile:         v.path(corev1.TLSPrivateKeyKey),
		RootFile:        v.path(identity.TrustBundleKey),
		RefreshDuration: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// verifySVID checks a server's chain against the trust bundle and its
// SPIFFE ID against the one expected. Workload certificates carry no DNS names,
// so this replaces Go's hostname verification.
func verifySVID(roots *x509.CertPool, rawCerts [][]byte, want string) error {
	if len(rawCerts) == 0 {
		return errors.New("peer sent no certificate")
	}
	certs := make([]*x509.Certificate, 0, len(rawCerts))
	for _, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return fmt.Errorf("peer certificate: %w", err)
		}
		certs = append(certs, c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("peer certificate: %w", err)
	}
	id, err := identity.IDFromCertificate(certs[0])
	if err != nil {
		return err
	}
	if id.String() != want {
		return fmt.Errorf("peer is %s, want %s", id, want)
	}
	return nil
}

// serverCredentials read the key pair and roots from the provider on every
// handshake, so a renewed certificate is served without a restart.
func serverCredentials(p certprovider.Provider, clientID string) credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			km, err := p.KeyMaterial(hello.Context())
			if err != nil {
				return nil, err
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: km.Certs,
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    km.Roots,
				NextProtos:   []string{"h2"},
				VerifyPeerCertificate: func(_ [][]byte, chains [][]*x509.Certificate) error {
					id, err := identity.IDFromCertificate(chains[0][0])
					if err != nil {
						return err
					}
					if id.String() != clientID {
						return fmt.Errorf("client is %s, want %s", id, clientID)
					}
					return nil
				},
			}, nil
		},
	})
}

func clientCredentials(p certprovider.Provider, serverID string) credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verified below against the trust bundle and the SPIFFE ID.
		InsecureSkipVerify: true, // SPIFFE peers have no DNS name to check
		GetClientCertificate: func(info *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			km, err := p.KeyMaterial(info.Context())
			if err != nil {
				return nil, err
			}
			return &km.Certs[0], nil
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			km, err := p.KeyMaterial(context.Background())
			if err != nil {
				return err
			}
			return verifySVID(km.Roots, raw, serverID)
		},
	})
}

// servedSerial makes a new connection and returns the serial number of the
// certificate the server presents.
func servedSerial(ctx context.Context, addr string, creds credentials.TransportCredentials) (*big.Int, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var p peer.Peer
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
		return nil, err
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil, fmt.Errorf("no TLS peer information (%T)", p.AuthInfo)
	}
	return info.State.PeerCertificates[0].SerialNumber, nil
}

func (h *identityHarness) testRenewalServedWithoutRestart(t *testing.T) {
	h.meshIdentity(t, "renewal", func(mi *meshv1alpha1.MeshIdentity) { mi.Spec.KeyAlgorithm = meshv1alpha1.KeyEd25519 })
	h.namespace(t, "renewal", map[string]string{"identity-test": "renewal"}, "server", "client")
	h.pod(t, "renewal", "server", "server")
	h.pod(t, "renewal", "client", "client")
	h.awaitStatus(t, "renewal", "ready", counts(2, 2))
	serverID := identity.SpiffeID("cluster.local", "renewal", "server")
	clientID := identity.SpiffeID("cluster.local", "renewal", "client")

	var (
		serverFiles, clientFiles map[string][]byte
		firstSerial              *big.Int
	)
	await(t, "workload secrets and trust bundle", func(ctx context.Context) (bool, string, error) {
		var err error
		if serverFiles, firstSerial, err = h.workloadFiles(ctx, "renewal", "server"); err != nil {
			return false, err.Error(), nil
		}
		if clientFiles, _, err = h.workloadFiles(ctx, "renewal", "client"); err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	})
	serverVol := newProjectedVolume(t, serverFiles)
	clientVol := newProjectedVolume(t, clientFiles)
	serverProv := newFileProvider(t, serverVol)
	clientProv := newFileProvider(t, clientVol)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(serverCredentials(serverProv, clientID)))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	addr := lis.Addr().String()
	creds := clientCredentials(clientProv, serverID)

	got, err := servedSerial(t.Context(), addr, creds)
	if err != nil {
		t.Fatalf("first call: %v", err)
	}
	if got.Cmp(firstSerial) != 0 {
		t.Fatalf("server presents serial %v, the Secret holds %v", got, firstSerial)
	}

	// A peer with another identity is refused.
	if _, err := servedSerial(t.Context(), addr, clientCredentials(clientProv, clientID)); err == nil {
		t.Fatal("the client accepted a server whose SPIFFE ID it did not expect")
	}

	// cert-manager renews the server's certificate; the kubelet updates
	// the volume; the running server must present the new certificate.
	h.signer.Renew(types.NamespacedName{Namespace: "renewal", Name: identity.CertificateName("server")})
	var renewedSerial *big.Int
	await(t, "the server's secret renewed", func(ctx context.Context) (bool, string, error) {
		files, serial, err := h.workloadFiles(ctx, "renewal", "server")
		if err != nil {
			return false, err.Error(), nil
		}
		if serial.Cmp(firstSerial) == 0 {
			return false, "same serial", nil
		}
		serverFiles, renewedSerial = files, serial
		return true, "", nil
	})
	serverVol.update(t, serverFiles)

	await(t, "the running server to present the renewed certificate", func(ctx context.Context) (bool, string, error) {
		got, err := servedSerial(ctx, addr, creds)
		if err != nil {
			return false, err.Error(), nil
		}
		return got.Cmp(renewedSerial) == 0, fmt.Sprintf("serial %v", got), nil
	})
}
