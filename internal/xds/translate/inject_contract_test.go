package translate

import (
	"path"
	"testing"

	"github.com/weft-mesh/weft/internal/inject"
)

// TestInjectorContract: the names and paths the translated configuration
// refers to are the ones the injector puts into the pod and its bootstraps.
func TestInjectorContract(t *testing.T) {
	opts := Options{}
	for _, c := range []struct{ what, ours, theirs string }{
		{"certificate", path.Join(opts.identityDir(), "tls.crt"), inject.CertificatePath},
		{"private key", path.Join(opts.identityDir(), "tls.key"), inject.PrivateKeyPath},
		{"trust bundle", path.Join(opts.trustBundleDir(), "ca.crt"), inject.CAPath},
		{"gRPC certificate provider", GRPCCertificateProvider, inject.GRPCCertProviderInstance},
		{"gRPC server listener template", GRPCServerListenerTemplate, inject.GRPCServerListenerTemplate},
	} {
		if c.ours != c.theirs {
			t.Errorf("%s: translation uses %q, the injector %q", c.what, c.ours, c.theirs)
		}
	}
	if OutboundPort != inject.OutboundPort || InboundPort != inject.InboundPort {
		t.Errorf("capture ports: translation %d/%d, injector %d/%d", OutboundPort, InboundPort, inject.OutboundPort, inject.InboundPort)
	}
}
