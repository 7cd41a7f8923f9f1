package inject

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/weft-mesh/weft/internal/workload"
)

// AnnotationDefaultContainer is the kubectl annotation naming the container
// that logs and exec pick by default. Weft's own names are in api/v1alpha1.
const AnnotationDefaultContainer = "kubectl.kubernetes.io/default-container"

// Names and paths of what Inject adds to a pod.
const (
	InitContainerName  = "weft-init"
	ProxyContainerName = workload.ProxyContainerName
	// ProxyVolumeName is an emptyDir weft-init writes the proxy's bootstrap
	// and its own executable into; weft-proxy mounts it read-only.
	ProxyVolumeName = "weft-proxy"
	// IdentityVolumeName is a projected volume: the workload's certificate
	// and key from its Secret, and the namespace's trust bundle.
	IdentityVolumeName = "weft-identity"

	ProxyConfigDir = "/var/run/weft/proxy"
	IdentityDir    = "/var/run/weft/identity"
	BootstrapPath  = ProxyConfigDir + "/envoy.json"
	SDSPath        = ProxyConfigDir + "/sds.json"
	InitBinaryPath = ProxyConfigDir + "/weft-init"
	// The files of the identity volume: everything Envoy's SDS file and the
	// gRPC certificate provider read sits directly in IdentityDir, the one
	// directory they watch.
	CertificateFile = "tls.crt"
	PrivateKeyFile  = "tls.key"
	CAFile          = "ca.crt"
	CertificatePath = IdentityDir + "/" + CertificateFile
	PrivateKeyPath  = IdentityDir + "/" + PrivateKeyFile
	CAPath          = IdentityDir + "/" + CAFile

	// EnvPodName is set from the downward API; bootstraps refer to it as
	// $(WEFT_POD_NAME) when the pod name is generated after admission.
	EnvPodName = "WEFT_POD_NAME"
	// EnvProxyBootstrap and EnvProxySDS carry the files weft-init writes.
	EnvProxyBootstrap = "WEFT_PROXY_BOOTSTRAP"
	EnvProxySDS       = "WEFT_PROXY_SDS"
	// EnvGRPCBootstrapConfig is read by gRPC's xDS support (grpc-go, grpc-java,
	// grpc-core) as the bootstrap itself rather than a path to it.
	EnvGRPCBootstrapConfig = "GRPC_XDS_BOOTSTRAP_CONFIG"
	// EnvGRPCBootstrap is the path form; a container that sets either is left alone.
	EnvGRPCBootstrap = "GRPC_XDS_BOOTSTRAP"
)

// Proxy ports (see ARCHITECTURE.md).
const (
	AdminPort     = 15000
	OutboundPort  = 15001
	InboundPort   = 15006
	ReadinessPort = 15021
	StatsPort     = 15090
)

// LogLevels are the accepted proxy log levels.
var LogLevels = []string{"trace", "debug", "info", "warn", "error"}

// Config is the injector's configuration, fixed when the controller starts.
type Config struct {
	// ProxyImage runs Envoy; its entrypoint must accept Envoy's flags.
	ProxyImage string
	// InitImage runs weft-init.
	InitImage string
	// ProxyVersion is recorded on every injected pod.
	ProxyVersion string

	// Default proxy resources; a zero quantity leaves that entry unset.
	ProxyCPU         resource.Quantity
	ProxyMemory      resource.Quantity
	ProxyCPULimit    resource.Quantity
	ProxyMemoryLimit resource.Quantity

	// XDSAddress is host:port of the xDS server, e.g.
	// weft-xds.weft-system.svc:15010.
	XDSAddress string
	// ControlPlaneNamespace is never injected; xDS server certificates whose
	// SPIFFE ID is in this namespace of TrustDomain are trusted.
	ControlPlaneNamespace string
	// TrustDomain of the mesh's SPIFFE IDs.
	TrustDomain string
	// LogLevel is the default proxy log level, one of LogLevels.
	LogLevel string
	// NativeSidecars is true when the API server supports init containers
	// with restartPolicy Always (Kubernetes 1.29 and later).
	NativeSidecars bool
	// ProxyUID is the UID the proxy runs as; its traffic is not captured.
	ProxyUID int64
}

// DefaultConfig returns a Config with Weft's standard ports, resources and
// addresses. Images and version must still be set.
func DefaultConfig() Config {
	return Config{
		ProxyCPU:              resource.MustParse("100m"),
		ProxyMemory:           resource.MustParse("128Mi"),
		ProxyCPULimit:         resource.MustParse("2"),
		ProxyMemoryLimit:      resource.MustParse("1Gi"),
		XDSAddress:            "weft-xds.weft-system.svc:15010",
		ControlPlaneNamespace: "weft-system",
		TrustDomain:           "cluster.local",
		LogLevel:              "info",
		NativeSidecars:        true,
		ProxyUID:              1337,
	}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	for name, v := range map[string]string{"proxy image": c.ProxyImage, "init image": c.InitImage, "proxy version": c.ProxyVersion} {
		if strings.TrimSpace(v) == "" {
			errs = append(errs, fmt.Errorf("%s must be set", name))
		}
	}
	if _, _, err := c.xdsHostPort(); err != nil {
		errs = append(errs, err)
	}
	if msgs := validation.IsDNS1123Label(c.ControlPlaneNamespace); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("control plane namespace %q: %s", c.ControlPlaneNamespace, strings.Join(msgs, "; ")))
	}
	if msgs := validation.IsDNS1123Subdomain(c.TrustDomain); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("trust domain %q: %s", c.TrustDomain, strings.Join(msgs, "; ")))
	}
	if !slices.Contains(LogLevels, c.LogLevel) {
		errs = append(errs, fmt.Errorf("log level %q is not one of %s", c.LogLevel, strings.Join(LogLevels, ", ")))
	}
	// 0 would exempt every root process from capture; the redirect rules take a 32-bit UID.
	if c.ProxyUID <= 0 || c.ProxyUID > 1<<32-1 {
		errs = append(errs, fmt.Errorf("proxy uid %d must be between 1 and %d", c.ProxyUID, uint32(1<<32-1)))
	}
	for _, p := range []struct {
		name       string
		req, limit resource.Quantity
	}{{"cpu", c.ProxyCPU, c.ProxyCPULimit}, {"memory", c.ProxyMemory, c.ProxyMemoryLimit}} {
		if p.req.Sign() < 0 || p.limit.Sign() < 0 {
			errs = append(errs, fmt.Errorf("proxy %s request and limit must not be negative", p.name))
		}
		if !p.req.IsZero() && !p.limit.IsZero() && p.req.Cmp(p.limit) > 0 {
			errs = append(errs, fmt.Errorf("proxy %s request %s exceeds limit %s", p.name, p.req.String(), p.limit.String()))
		}
	}
	return errors.Join(errs...)
}

func (c Config) xdsHostPort() (string, uint32, error) {
	host, portStr, err := net.SplitHostPort(c.XDSAddress)
	if err != nil {
		return "", 0, fmt.Errorf("xds address %q: %w", c.XDSAddress, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 || host == "" {
		return "", 0, fmt.Errorf("xds address %q must be host:port", c.XDSAddress)
	}
	return host, uint32(port), nil
}
