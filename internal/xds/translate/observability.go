package translate

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resourcedetectorsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/tracers/opentelemetry/resource_detectors/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// httpLogFields is the JSON access log of an HTTP request: when, what, how
// it ended, where it went and who asked.
var httpLogFields = map[string]string{
	"start_time":              "%START_TIME%",
	"method":                  "%REQ(:METHOD)%",
	"path":                    "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
	"protocol":                "%PROTOCOL%",
	"authority":               "%REQ(:AUTHORITY)%",
	"response_code":           "%RESPONSE_CODE%",
	"grpc_status":             "%GRPC_STATUS%",
	"response_flags":          "%RESPONSE_FLAGS%",
	"duration_ms":             "%DURATION%",
	"bytes_received":          "%BYTES_RECEIVED%",
	"bytes_sent":              "%BYTES_SENT%",
	"upstream_host":           "%UPSTREAM_HOST%",
	"upstream_cluster":        "%UPSTREAM_CLUSTER%",
	"request_id":              "%REQ(X-REQUEST-ID)%",
	"downstream_peer_uri_san": "%DOWNSTREAM_PEER_URI_SAN%",
	"downstream_remote":       "%DOWNSTREAM_REMOTE_ADDRESS%",
}

// tcpLogFields is the JSON access log of a TCP connection.
var tcpLogFields = map[string]string{
	"start_time":              "%START_TIME%",
	"response_flags":          "%RESPONSE_FLAGS%",
	"duration_ms":             "%DURATION%",
	"bytes_received":          "%BYTES_RECEIVED%",
	"bytes_sent":              "%BYTES_SENT%",
	"upstream_host":           "%UPSTREAM_HOST%",
	"upstream_cluster":        "%UPSTREAM_CLUSTER%",
	"downstream_peer_uri_san": "%DOWNSTREAM_PEER_URI_SAN%",
	"downstream_remote":       "%DOWNSTREAM_REMOTE_ADDRESS%",
}

func stdoutLog(fields map[string]string, logfmt bool) ([]*accesslogv3.AccessLog, error) {
	var format *corev3.SubstitutionFormatString
	if logfmt {
		// The same fields as key=value pairs, in name order; values
		// that may hold spaces are quoted.
		var b strings.Builder
		for i, k := range slices.Sorted(maps.Keys(fields)) {
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%s=%q", k, fields[k])
		}
		b.WriteByte('\n')
		format = &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormatSource{
			TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: b.String()}},
		}}
	} else {
		obj := make(map[string]any, len(fields))
		for k, v := range fields {
			obj[k] = v
		}
		s, err := structpb.NewStruct(obj)
		if err != nil {
			return nil, err
		}
		format = &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: s}}
	}
	cfg, err := toAny(&streamv3.StdoutAccessLog{AccessLogFormat: &streamv3.StdoutAccessLog_LogFormat{LogFormat: format}})
	if err != nil {
		return nil, err
	}
	return []*accesslogv3.AccessLog{{
		Name:       "envoy.access_loggers.stdout",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: cfg},
	}}, nil
}

// tracing reports spans over OTLP/gRPC through TracingCluster. The
// environment resource detector lets each pod name itself
// (OTEL_RESOURCE_ATTRIBUTES=service.name=...) while the configuration stays
// the same for every proxy.
func tracing(t *Tracing) (*hcmv3.HttpConnectionManager_Tracing, error) {
	detector, err := toAny(&resourcedetectorsv3.EnvironmentResourceDetectorConfig{})
	if err != nil {
		return nil, err
	}
	cfg, err := toAny(&tracev3.OpenTelemetryConfig{
		GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
			EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: TracingCluster},
		}},
		ResourceDetectors: []*corev3.TypedExtensionConfig{{
			Name:        "envoy.tracers.opentelemetry.resource_detectors.environment",
			TypedConfig: detector,
		}},
	})
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: clampPercent(t.SamplingPercent)},
		Provider: &tracev3.Tracing_Http{
			Name:       "envoy.tracers.opentelemetry",
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: cfg},
		},
	}, nil
}
