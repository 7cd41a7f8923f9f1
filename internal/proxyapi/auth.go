package proxyapi

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The ConfigMap in which the API server publishes how it authenticates
// itself to aggregated APIs (its front proxy), and its keys.
const (
	AuthConfigMapNamespace = "kube-system"
	AuthConfigMapName      = "extension-apiserver-authentication"
	keyClientCA            = "requestheader-client-ca-file"
	keyAllowedNames        = "requestheader-allowed-names"
	keyUserHeaders         = "requestheader-username-headers"
	keyGroupHeaders        = "requestheader-group-headers"
)

// RequestHeader is how the API server's front proxy identifies itself and
// the user it forwards.
type RequestHeader struct {
	// CAs sign the front proxy's client certificate.
	CAs *x509.CertPool
	// AllowedNames are the common names the certificate may carry; empty
	// allows any the CAs signed.
	AllowedNames []string
	// UserHeaders and GroupHeaders carry the authenticated user.
	UserHeaders, GroupHeaders []string
}

// ParseRequestHeader reads the front proxy's settings from the API server's
// extension-apiserver-authentication ConfigMap.
func ParseRequestHeader(cm *corev1.ConfigMap) (*RequestHeader, error) {
	ca := cm.Data[keyClientCA]
	if ca == "" {
		return nil, fmt.Errorf("%s/%s has no %s: the API server runs without --requestheader-client-ca-file, so it cannot call aggregated APIs", cm.Namespace, cm.Name, keyClientCA)
	}
	rh := &RequestHeader{CAs: x509.NewCertPool()}
	if !rh.CAs.AppendCertsFromPEM([]byte(ca)) {
		return nil, fmt.Errorf("%s/%s: %s holds no PEM certificate", cm.Namespace, cm.Name, keyClientCA)
	}
	for key, into := range map[string]*[]string{keyAllowedNames: &rh.AllowedNames, keyUserHeaders: &rh.UserHeaders, keyGroupHeaders: &rh.GroupHeaders} {
		if v := cm.Data[key]; v != "" {
			if err := json.Unmarshal([]byte(v), into); err != nil {
				return nil, fmt.Errorf("%s/%s: %s: %w", cm.Namespace, cm.Name, key, err)
			}
		}
	}
	if len(rh.UserHeaders) == 0 {
		rh.UserHeaders = []string{"X-Remote-User"}
	}
	return rh, nil
}

// Authenticator decides who is calling: the API server's front proxy,
// whose client certificate the API server's published CA signed (the API
// server authenticated and authorised the user before forwarding), or
// another replica, whose client certificate is the control plane's own
// serving certificate.
type Authenticator struct {
	// FrontProxy returns the API server's front proxy settings.
	FrontProxy func(ctx context.Context) (*RequestHeader, error)
	// Certs are this replica's serving certificates.
	Certs *ServingCerts
}

// Authenticate returns the user a request comes from, or why it is refused.
func (a *Authenticator) Authenticate(r *http.Request) (string, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", errNoCredentials
	}
	leaf := r.TLS.PeerCertificates[0]
	intermediates := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		intermediates.AddCert(c)
	}
	var errs []error
	if a.FrontProxy != nil {
		rh, err := a.FrontProxy(r.Context())
		if err == nil {
			user, ferr := rh.authenticate(r, leaf, intermediates)
			if ferr == nil {
				return user, nil
			}
			errs = append(errs, ferr)
		} else {
			errs = append(errs, err)
		}
	}
	if a.Certs != nil {
		if err := a.Certs.VerifyPeer(leaf, intermediates); err == nil {
			return "replica " + leaf.Subject.CommonName, nil
		} else {
			errs = append(errs, err)
		}
	}
	return "", errors.Join(errs...)
}

func (rh *RequestHeader) authenticate(r *http.Request, leaf *x509.Certificate, intermediates *x509.CertPool) (string, error) {
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: rh.CAs, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return "", fmt.Errorf("not the API server's front proxy: %w", err)
	}
	if len(rh.AllowedNames) > 0 && !slices.Contains(rh.AllowedNames, leaf.Subject.CommonName) {
		return "", fmt.Errorf("front proxy certificate %q is not among the allowed names %v", leaf.Subject.CommonName, rh.AllowedNames)
	}
	for _, h := range rh.UserHeaders {
		if u := r.Header.Get(h); u != "" {
			return u, nil
		}
	}
	// The API server's own availability checks carry no user.
	return "(the API server)", nil
}

// ConfigMapFrontProxy reads the front proxy settings through r (which
// should read the API server directly: the ConfigMap is in kube-system),
// at most once per refresh interval.
func ConfigMapFrontProxy(r client.Reader, refresh time.Duration) func(context.Context) (*RequestHeader, error) {
	var (
		mu   sync.Mutex
		last *RequestHeader
		at   time.Time
	)
	return func(ctx context.Context) (*RequestHeader, error) {
		mu.Lock()
		defer mu.Unlock()
		if last != nil && time.Since(at) < refresh {
			return last, nil
		}
		var cm corev1.ConfigMap
		if err := r.Get(ctx, client.ObjectKey{Namespace: AuthConfigMapNamespace, Name: AuthConfigMapName}, &cm); err != nil {
			return nil, fmt.Errorf("reading the API server's front proxy settings: %w", err)
		}
		rh, err := ParseRequestHeader(&cm)
		if err != nil {
			return nil, err
		}
		last, at = rh, time.Now()
		return rh, nil
	}
}
