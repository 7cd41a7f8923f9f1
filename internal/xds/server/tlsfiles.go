package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// FileTLS serves with the certificate in dir (tls.crt, tls.key) and trusts
// client certificates signed by dir/ca.crt. It re-reads the files when they
// change, so a renewed certificate (a kubelet-projected Secret is swapped
// atomically) is used without a restart.
type FileTLS struct {
	dir string

	mu      sync.Mutex
	checked time.Time
	modTime time.Time
	config  *tls.Config
}

// NewFileTLS loads the files once to fail early when they are missing.
func NewFileTLS(dir string) (*FileTLS, error) {
	f := &FileTLS{dir: dir}
	if _, err := f.current(); err != nil {
		return nil, err
	}
	return f, nil
}

// Config is a server TLS configuration requiring verified client certificates.
func (f *FileTLS) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAndVerifyClientCert,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return f.current()
		},
	}
}

func (f *FileTLS) current() (*tls.Config, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if f.config != nil && now.Sub(f.checked) < time.Second {
		return f.config, nil
	}
	f.checked = now
	var newest time.Time
	for _, name := range []string{"tls.crt", "tls.key", "ca.crt"} {
		st, err := os.Stat(filepath.Join(f.dir, name))
		if err != nil {
			if f.config != nil {
				return f.config, nil // mid-rotation: keep serving the last good files
			}
			return nil, fmt.Errorf("xds tls: %w", err)
		}
		if st.ModTime().After(newest) {
			newest = st.ModTime()
		}
	}
	if f.config != nil && !newest.After(f.modTime) {
		return f.config, nil
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(f.dir, "tls.crt"), filepath.Join(f.dir, "tls.key"))
	if err != nil {
		if f.config != nil {
			return f.config, nil
		}
		return nil, fmt.Errorf("xds tls: loading key pair: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(f.dir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("xds tls: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		if f.config != nil {
			return f.config, nil
		}
		return nil, errors.New("xds tls: ca.crt holds no certificate")
	}
	f.config = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		NextProtos:   []string{"h2"},
	}
	f.modTime = newest
	return f.config, nil
}
