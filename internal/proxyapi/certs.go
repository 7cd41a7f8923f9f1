package proxyapi

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// ServingCerts are the replica's serving certificate, key and CA (tls.crt,
// tls.key, ca.crt in one directory, as a cert-manager Secret mounts),
// re-read when they are older than a few seconds so a renewal is picked up
// without a restart. Every replica mounts the same Secret, so the same
// certificate also proves one replica to another.
type ServingCerts struct {
	Dir string

	mu     sync.Mutex
	at     time.Time
	cert   *tls.Certificate
	leaf   *x509.Certificate
	pool   *x509.CertPool
	loaded error
}

const certRefresh = 5 * time.Second

func (c *ServingCerts) load() (*tls.Certificate, *x509.Certificate, *x509.CertPool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < certRefresh {
		return c.cert, c.leaf, c.pool, c.loaded
	}
	c.at = time.Now()
	cert, err := tls.LoadX509KeyPair(filepath.Join(c.Dir, "tls.crt"), filepath.Join(c.Dir, "tls.key"))
	if err != nil {
		c.loaded = fmt.Errorf("serving certificate: %w", err)
		return c.cert, c.leaf, c.pool, c.loaded
	}
	ca, err := os.ReadFile(filepath.Join(c.Dir, "ca.crt"))
	if err != nil {
		c.loaded = fmt.Errorf("serving certificate's CA: %w", err)
		return c.cert, c.leaf, c.pool, c.loaded
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		c.loaded = fmt.Errorf("%s holds no PEM certificate", filepath.Join(c.Dir, "ca.crt"))
		return c.cert, c.leaf, c.pool, c.loaded
	}
	c.cert, c.leaf, c.pool, c.loaded = &cert, cert.Leaf, pool, nil
	return c.cert, c.leaf, c.pool, nil
}

// GetCertificate serves the current certificate.
func (c *ServingCerts) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert, _, _, err := c.load()
	return cert, err
}

// VerifyPeer accepts a client certificate that the serving CA signed for
// one of the names of this replica's own serving certificate: another
// replica's.
func (c *ServingCerts) VerifyPeer(leaf *x509.Certificate, intermediates *x509.CertPool) error {
	_, own, pool, err := c.load()
	if err != nil {
		return err
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("not another replica: %w", err)
	}
	if !slices.ContainsFunc(leaf.DNSNames, func(n string) bool { return slices.Contains(own.DNSNames, n) }) {
		return errors.New("not another replica: the certificate names none of the control plane's names")
	}
	return nil
}

// PeerClient is an HTTP client that shows this replica's certificate and
// trusts another replica's only.
func (c *ServingCerts) PeerClient() (*http.Client, error) {
	cert, leaf, pool, err := c.load()
	if err != nil {
		return nil, err
	}
	if len(leaf.DNSNames) == 0 {
		return nil, errors.New("the serving certificate has no DNS name to check other replicas by")
	}
	return &http.Client{
		Timeout: peerTimeout,
		Transport: &http.Transport{
			// A client per request (the certificates may have been
			// renewed): nothing to keep connections open for.
			DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{*cert},
				RootCAs:      pool,
				// Replicas are dialled by pod IP; they serve the Service's
				// name, as this one does.
				ServerName: leaf.DNSNames[0],
			},
		},
	}, nil
}

// TLSConfig is the server side: the current certificate, and a client
// certificate asked for but checked per request (front proxy or replica).
func (c *ServingCerts) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: c.GetCertificate,
		ClientAuth:     tls.RequestClientCert,
	}
}
