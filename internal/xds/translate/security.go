package translate

import (
	"path"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/ir"
)

const tlsTransportSocket = "envoy.transport_sockets.tls"

// alpn is what a TLS connection negotiates for the port's protocol, so that
// HTTP/2 survives the mTLS hop.
func alpn(p ir.Protocol) []string {
	switch p {
	case ir.ProtocolHTTP2, ir.ProtocolGRPC:
		return []string{"h2"}
	case ir.ProtocolHTTP:
		return []string{"http/1.1"}
	}
	return nil
}

func sdsSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: ads()}
}

func providerInstance(name string) *tlsv3.CertificateProviderPluginInstance {
	return &tlsv3.CertificateProviderPluginInstance{InstanceName: name}
}

// upstreamTLS originates mTLS to a Service and checks that the server's
// certificate carries one of the Service's SPIFFE IDs.
func (b *builder) upstreamTLS(svc *ir.Service, proto ir.Protocol, fl flavor) (*corev3.TransportSocket, error) {
	common := &tlsv3.CommonTlsContext{}
	switch fl {
	case flavorGRPC:
		// gRPC reads only certificate provider instances and only the
		// untyped SAN matchers; a URI SAN is matched by its string form.
		// The one provider instance of the bootstrap supplies both the
		// certificate and the trust bundle.
		common.TlsCertificateProviderInstance = providerInstance(GRPCCertificateProvider)
		vc := &tlsv3.CertificateValidationContext{CaCertificateProviderInstance: providerInstance(GRPCCertificateProvider)}
		for _, id := range svc.Identities {
			vc.MatchSubjectAltNames = append(vc.MatchSubjectAltNames, exactString(id)) //nolint:staticcheck // grpc-go reads only the untyped matchers
		}
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
	default:
		common.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{sdsSecret(IdentitySecret)}
		def := &tlsv3.CertificateValidationContext{}
		for _, id := range svc.Identities {
			def.MatchTypedSubjectAltNames = append(def.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{
				SanType: tlsv3.SubjectAltNameMatcher_URI,
				Matcher: exactString(id),
			})
		}
		common.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         def,
				ValidationContextSdsSecretConfig: sdsSecret(TrustSecret),
			},
		}
		common.AlpnProtocols = alpn(proto)
	}
	cfg, err := toAny(&tlsv3.UpstreamTlsContext{CommonTlsContext: common, Sni: svc.Hostname})
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: tlsTransportSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: cfg}}, nil
}

// downstreamTLS terminates mTLS from mesh clients: any certificate the
// trust bundle vouches for is accepted, and who may call is decided by
// RBAC on the peer's SPIFFE ID.
func downstreamTLS(protocols []string, fl flavor) (*corev3.TransportSocket, error) {
	common := &tlsv3.CommonTlsContext{}
	switch fl {
	case flavorGRPC:
		common.TlsCertificateProviderInstance = providerInstance(GRPCCertificateProvider)
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{
			ValidationContext: &tlsv3.CertificateValidationContext{CaCertificateProviderInstance: providerInstance(GRPCCertificateProvider)},
		}
	default:
		common.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{sdsSecret(IdentitySecret)}
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
			ValidationContextSdsSecretConfig: sdsSecret(TrustSecret),
		}
		common.AlpnProtocols = protocols
	}
	cfg, err := toAny(&tlsv3.DownstreamTlsContext{
		CommonTlsContext:         common,
		RequireClientCertificate: wrapperspb.Bool(true),
	})
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: tlsTransportSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: cfg}}, nil
}

// secrets are the workload certificate and the trust bundle, read from the
// files the injector mounts. Envoy watches the directories, so the atomic
// symlink swap kubelet does when a Secret changes rotates them in place.
func secrets(opts Options) []types.Resource {
	id, trust := opts.identityDir(), opts.trustBundleDir()
	return []types.Resource{
		&tlsv3.Secret{
			Name: TrustSecret,
			Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa:        fileSource(path.Join(trust, "ca.crt")),
				WatchedDirectory: &corev3.WatchedDirectory{Path: trust},
			}},
		},
		&tlsv3.Secret{
			Name: IdentitySecret,
			Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: fileSource(path.Join(id, "tls.crt")),
				PrivateKey:       fileSource(path.Join(id, "tls.key")),
				WatchedDirectory: &corev3.WatchedDirectory{Path: id},
			}},
		},
	}
}

func fileSource(name string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: name}}
}

func exactString(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func prefixString(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

func regexString(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: s}}}
}
