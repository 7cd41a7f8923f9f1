package translate

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/weft-mesh/weft/internal/ir"
)

// Listener names, ports and the names of the clusters and secrets that do
// not belong to one Service.
const (
	// OutboundListener captures the application's outgoing connections.
	OutboundListener = "outbound"
	// OutboundPort is where the capture rules send outgoing connections.
	OutboundPort = 15001
	// InboundListener receives connections for the application.
	InboundListener = "inbound"
	// InboundPort is where the capture rules send incoming connections.
	InboundPort = 15006

	// PassthroughCluster forwards outbound connections to destinations
	// outside the mesh to their original destination.
	PassthroughCluster = "passthrough"
	// BlackholeCluster has no endpoints: connections routed to it fail.
	BlackholeCluster = "blackhole"
	// InboundPassthroughCluster forwards inbound connections for ports no
	// Service names to the application, at their original destination.
	InboundPassthroughCluster = "inbound-passthrough" //nolint:gosec // a cluster name, not a credential
	// TracingCluster reaches the OpenTelemetry collector.
	TracingCluster = "weft-tracing"

	// IdentitySecret is the SDS secret (sent over ADS) with the workload
	// certificate that Envoy presents.
	IdentitySecret = "default"
	// TrustSecret is the SDS secret (sent over ADS) with the trust bundle
	// Envoy checks peers against.
	TrustSecret = "ROOTCA"
	// GRPCCertificateProvider is the certificate provider instance that a
	// proxyless gRPC workload's bootstrap defines (internal/inject writes
	// it): one file watcher for the certificate, key and trust bundle, so
	// TLS contexts for gRPC name it as both identity and root provider.
	GRPCCertificateProvider = "weft-identity"

	// GRPCServerListenerTemplate is the server_listener_resource_name_template
	// a proxyless gRPC server's bootstrap must carry; %s is the listening
	// address as host:port.
	GRPCServerListenerTemplate = "weft/inbound/%s"

	// DefaultIdentityDir is where the injector mounts the workload's
	// certificate (tls.crt, tls.key).
	DefaultIdentityDir = "/var/run/weft/identity"
	// DefaultTrustBundleDir is where the injector mounts the trust bundle
	// (ca.crt): the same projected volume as the certificate, so that one
	// atomic update carries both.
	DefaultTrustBundleDir = DefaultIdentityDir
)

// ConsumerRouteConfigName is the route configuration that clients in
// namespace ns use for a Service port when routes declared in ns replace
// the Service's own.
func ConsumerRouteConfigName(hostname string, port int32, ns string) string {
	return ir.RouteConfigName(hostname, port) + "@" + ns
}

// OriginalDstClusterName is the cluster that carries connections to one
// endpoint of a headless Service port, chosen by the client, to that
// endpoint (with mTLS when the Service requires it).
func OriginalDstClusterName(hostname string, port int32) string {
	return fmt.Sprintf("outbound|%d|original-dst|%s", port, hostname)
}

// GRPCServerListenerName is the listener a proxyless gRPC server listening
// on addr:port asks for.
func GRPCServerListenerName(addr string, port int32) string {
	return fmt.Sprintf(GRPCServerListenerTemplate, net.JoinHostPort(addr, strconv.Itoa(int(port))))
}

// ParseGRPCServerListenerName is the inverse of GRPCServerListenerName, so
// a server can build a listener on demand from the name a gRPC server asks
// for.
func ParseGRPCServerListenerName(name string) (addr string, port int32, ok bool) {
	prefix, _, _ := strings.Cut(GRPCServerListenerTemplate, "%s")
	hostport, found := strings.CutPrefix(name, prefix)
	if !found {
		return "", 0, false
	}
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, false
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 || net.ParseIP(host) == nil {
		return "", 0, false
	}
	return host, int32(n), true
}
