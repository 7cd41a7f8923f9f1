package proxyapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Server serves a Handler over TLS; it runs on every replica.
type Server struct {
	Address string
	Handler http.Handler
	Certs   *ServingCerts
	Log     logr.Logger
}

// NeedLeaderElection is false: every replica serves its own proxies.
func (s *Server) NeedLeaderElection() bool { return false }

// Start serves until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	// A missing certificate fails each handshake, not the controller: the
	// debug API is not worth losing xDS for, and the Secret may come later.
	if _, _, _, err := s.Certs.load(); err != nil && s.Log.GetSink() != nil {
		s.Log.Error(err, "the proxy status API has no serving certificate yet")
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", s.Address)
	if err != nil {
		return fmt.Errorf("proxy API: %w", err)
	}
	srv := &http.Server{Handler: s.Handler, TLSConfig: s.Certs.TLSConfig(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(l, "", "") }()
	select {
	case err := <-done:
		return fmt.Errorf("proxy API: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx) //nolint:contextcheck // ctx is done; shutting down needs a fresh one
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

// EndpointPeers finds the other replicas among the ready endpoints of the
// Service the API server reaches the proxy API through.
type EndpointPeers struct {
	Reader             client.Reader
	Namespace, Service string
	// PortName is the Service port of the proxy API.
	PortName string
	// SelfIP is this replica's pod IP, left out.
	SelfIP string
}

// List returns every other replica.
func (p *EndpointPeers) List(ctx context.Context) ([]Peer, error) {
	var list discoveryv1.EndpointSliceList
	if err := p.Reader.List(ctx, &list, client.InNamespace(p.Namespace), client.MatchingLabels{discoveryv1.LabelServiceName: p.Service}); err != nil {
		return nil, err
	}
	var out []Peer
	for _, s := range list.Items {
		port := int32(0)
		for _, sp := range s.Ports {
			if sp.Name != nil && *sp.Name == p.PortName && sp.Port != nil {
				port = *sp.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				if a == p.SelfIP {
					continue
				}
				name := a
				if e.TargetRef != nil {
					name = e.TargetRef.Name
				}
				out = append(out, Peer{Name: name, URL: "https://" + net.JoinHostPort(a, strconv.Itoa(int(port)))})
			}
		}
	}
	slices.SortFunc(out, func(a, b Peer) int { return strings.Compare(a.URL, b.URL) })
	return slices.CompactFunc(out, func(a, b Peer) bool { return a.URL == b.URL }), nil
}
