package translate

import "path"

// Options tune the translation for one installation. The zero value is the
// default: unknown destinations pass through, access logs are on, the
// certificate directories are the injector's defaults and tracing is off.
type Options struct {
	// BlockUnknown refuses outbound connections to destinations outside
	// the mesh instead of letting them through.
	BlockUnknown bool
	// DisableAccessLog turns off the access log on stdout.
	DisableAccessLog bool
	// AccessLogFormat is "json" (the default, one JSON object a line) or
	// "logfmt" (key=value pairs a line).
	AccessLogFormat string
	// IdentityDir is where the workload certificate (tls.crt, tls.key) is
	// mounted; DefaultIdentityDir when empty.
	IdentityDir string
	// TrustBundleDir is where the trust bundle (ca.crt) is mounted;
	// DefaultTrustBundleDir when empty.
	TrustBundleDir string
	// Tracing, when set, makes every HTTP connection manager report spans
	// to an OpenTelemetry collector.
	Tracing *Tracing
}

// Access log formats.
const (
	AccessLogJSON   = "json"
	AccessLogLogfmt = "logfmt"
)

// Tracing locates the OpenTelemetry collector (OTLP over gRPC).
type Tracing struct {
	// Address is the collector's IP address or DNS name.
	Address string `json:"address"`
	// Port is the collector's OTLP gRPC port, normally 4317.
	Port uint32 `json:"port"`
	// SamplingPercent is the share of requests traced, 0 to 100.
	SamplingPercent float64 `json:"samplingPercent"`
}

func (o Options) identityDir() string {
	if o.IdentityDir == "" {
		return DefaultIdentityDir
	}
	return path.Clean(o.IdentityDir)
}

func (o Options) trustBundleDir() string {
	if o.TrustBundleDir == "" {
		return DefaultTrustBundleDir
	}
	return path.Clean(o.TrustBundleDir)
}
