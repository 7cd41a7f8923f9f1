package inject

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weft-mesh/weft/internal/workload"
)

// Names inside the proxy's bootstrap.
const (
	XDSClusterName      = "weft-xds"
	AdminClusterName    = "weft-admin"
	ReadinessListener   = "weft-readiness"
	StatsListener       = "weft-prometheus"
	IdentitySecretName  = "weft-identity"
	TrustBundleName     = "weft-trust"
	ReadyPath           = "/ready"
	PrometheusStatsPath = "/stats/prometheus"
)

// GRPCCertProviderInstance is the certificate provider instance a proxyless
// gRPC workload's bootstrap defines; xDS resources for such workloads refer
// to it by this name for their mTLS certificates and trust bundle.
const GRPCCertProviderInstance = "weft-identity"

// xdsNode identifies the proxy to the xDS server.
type xdsNode struct {
	// nodeID is <pod>.<namespace>; the pod part is $(WEFT_POD_NAME) when the
	// name is generated after admission (the kubelet fills it in).
	nodeID         string
	namespace      string
	serviceAccount string
	// owner is the workload the pod belongs to.
	owner workload.Owner
}

func (w xdsNode) cluster() string { return w.serviceAccount + "." + w.namespace }

// envoyBootstrap builds the proxy's bootstrap. The proxy learns listeners
// and clusters over ADS from the xDS server, authenticating with the
// workload certificate; statically it only has the xDS cluster, a cluster for
// its own admin interface, and two listeners that expose the admin
// interface's /ready (15021) and /stats/prometheus (15090) and nothing else,
// because admin itself is bound to 127.0.0.1.
func envoyBootstrap(cfg Config, w xdsNode) (*bootstrapv3.Bootstrap, error) {
	b, err := envoyStatic(cfg)
	if err != nil {
		return nil, err
	}
	b.Node = envoyNode(cfg, w)
	b.StatsConfig = envoyStats(w)
	return b, nil
}

// Tags every statistic of an injected Envoy carries, so that its Prometheus
// series name the workload without relabelling: on the inbound side (the
// inbound|<port> listener and cluster) the workload is the destination,
// what Istio calls destination_workload and destination_workload_namespace.
const (
	StatsTagWorkload          = "workload"
	StatsTagWorkloadKind      = "workload_kind"
	StatsTagWorkloadNamespace = "workload_namespace"
	// StatsTagWorkloadRevision is the pod template hash of a Deployment's
	// or Rollout's pods: it tells a canary's pods from the stable ones of
	// the same Rollout.
	StatsTagWorkloadRevision = "workload_revision"
	// StatsTagDestinationService is, on an inbound port's per-Service
	// statistics (vhost.<service>.vcluster.inbound|<port>.*), the
	// Service the request was addressed to. It is in the pod's namespace.
	StatsTagDestinationService = "destination_service"
)

// DestinationServiceTagRegex extracts StatsTagDestinationService from the
// statistics of the inbound virtual hosts translate builds: the first
// group is cut from the name (as Envoy's own envoy_virtual_host tag cuts
// it), the second is the value. Outbound virtual hosts have no virtual
// clusters, and the catch-all "other" one Envoy adds is not inbound|.
const DestinationServiceTagRegex = `^vhost\.(([^.]+)\.)vcluster\.inbound\|\d+\.`

// envoyStats is the per-pod part of the bootstrap besides the node: fixed
// tags naming the workload. Envoy's default tag extraction stays on
// (envoy_cluster_name, envoy_response_code, ...).
func envoyStats(w xdsNode) *metricsv3.StatsConfig {
	fixed := func(name, value string) *metricsv3.TagSpecifier {
		return &metricsv3.TagSpecifier{TagName: name, TagValue: &metricsv3.TagSpecifier_FixedValue{FixedValue: value}}
	}
	sc := &metricsv3.StatsConfig{StatsTags: []*metricsv3.TagSpecifier{
		fixed(StatsTagWorkloadNamespace, w.namespace),
		fixed(StatsTagWorkload, w.owner.Name),
		fixed(StatsTagWorkloadKind, w.owner.Kind),
		{TagName: StatsTagDestinationService, TagValue: &metricsv3.TagSpecifier_Regex{Regex: DestinationServiceTagRegex}},
	}}
	if w.owner.Revision != "" {
		sc.StatsTags = append(sc.StatsTags, fixed(StatsTagWorkloadRevision, w.owner.Revision))
	}
	return sc
}

// envoyNode is the only part of the bootstrap that differs between pods.
func envoyNode(cfg Config, w xdsNode) *corev3.Node {
	return &corev3.Node{
		Id:      w.nodeID,
		Cluster: w.cluster(),
		Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"namespace":      structpb.NewStringValue(w.namespace),
			"serviceAccount": structpb.NewStringValue(w.serviceAccount),
			"proxyVersion":   structpb.NewStringValue(cfg.ProxyVersion),
			"trustDomain":    structpb.NewStringValue(cfg.TrustDomain),
		}},
	}
}

// envoyStatic is the bootstrap without its node: the same for every pod.
func envoyStatic(cfg Config) (*bootstrapv3.Bootstrap, error) {
	xdsHost, xdsPort, err := cfg.xdsHostPort()
	if err != nil {
		return nil, err
	}
	ads := &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}

	h2, err := anypb.New(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		},
	})
	if err != nil {
		return nil, err
	}
	sdsFile := &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{PathConfigSource: &corev3.PathConfigSource{Path: SDSPath}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
	xdsTLS, err := anypb.New(&tlsv3.UpstreamTlsContext{
		Sni: xdsHost,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams: &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{
				{Name: IdentitySecretName, SdsConfig: sdsFile},
			},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: xdsServerSANs(cfg, xdsHost)},
					ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: TrustBundleName, SdsConfig: sdsFile},
				},
			},
		},
	})
	if err != nil {
		return nil, err
	}
	xdsCluster := &clusterv3.Cluster{
		Name:                          XDSClusterName,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
		ConnectTimeout:                durationpb.New(time.Second),
		TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2},
		LoadAssignment:                endpoints(XDSClusterName, xdsHost, xdsPort),
		TransportSocket: &corev3.TransportSocket{
			Name:       "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: xdsTLS},
		},
	}
	if _, err := netip.ParseAddr(xdsHost); err == nil {
		xdsCluster.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	}
	adminCluster := &clusterv3.Cluster{
		Name:                 AdminClusterName,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment:       endpoints(AdminClusterName, "127.0.0.1", AdminPort),
	}

	readiness, err := adminPathListener(ReadinessListener, ReadinessPort, ReadyPath)
	if err != nil {
		return nil, err
	}
	stats, err := adminPathListener(StatsListener, StatsPort, PrometheusStatsPath)
	if err != nil {
		return nil, err
	}

	return &bootstrapv3.Bootstrap{
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Listeners: []*listenerv3.Listener{readiness, stats},
			Clusters:  []*clusterv3.Cluster{xdsCluster, adminCluster},
		},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			// Incremental (delta) ADS: after a change the proxy receives only
			// the resources that changed, not every route and cluster of the
			// mesh again, which keeps pushes small as the mesh grows.
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:             corev3.ApiConfigSource_DELTA_GRPC,
				TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{
					TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: XDSClusterName}},
				}},
				SetNodeOnFirstMessageOnly: true,
			},
			LdsConfig: ads,
			CdsConfig: ads,
		},
		Admin: &bootstrapv3.Admin{Address: socketAddress("127.0.0.1", AdminPort)},
	}, nil
}

// xdsServerSANs accepts the xDS server by its DNS name or by a SPIFFE ID in
// the control plane's namespace, so the server may use either kind of
// certificate; both are issued by the mesh CA that ca.crt pins.
func xdsServerSANs(cfg Config, host string) []*tlsv3.SubjectAltNameMatcher {
	var sans []*tlsv3.SubjectAltNameMatcher
	if _, err := netip.ParseAddr(host); err == nil {
		sans = append(sans, &tlsv3.SubjectAltNameMatcher{
			SanType: tlsv3.SubjectAltNameMatcher_IP_ADDRESS,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: host}},
		})
	} else {
		sans = append(sans, &tlsv3.SubjectAltNameMatcher{
			SanType: tlsv3.SubjectAltNameMatcher_DNS,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: host}},
		})
	}
	return append(sans, &tlsv3.SubjectAltNameMatcher{
		SanType: tlsv3.SubjectAltNameMatcher_URI,
		Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{
			Prefix: "spiffe://" + cfg.TrustDomain + "/ns/" + cfg.ControlPlaneNamespace + "/",
		}},
	})
}

// identitySDS is the SDS file the bootstrap points at. Delivering the
// certificate through file-based SDS, rather than inline in the bootstrap, is
// what lets Envoy reload it. The kubelet updates the projected identity
// volume by writing a new timestamped directory and renaming a ..data
// symlink over the old one inside IdentityDir; the files there are symlinks
// through ..data. Envoy's watched_directory fires on exactly that rename, so
// a renewed certificate and a changed trust bundle (a root rotation) both
// reach the proxy without a restart, and each reload reads one consistent
// snapshot of all three files.
func identitySDS() (*discoveryv3.DiscoveryResponse, error) {
	watch := &corev3.WatchedDirectory{Path: IdentityDir}
	cert, err := anypb.New(&tlsv3.Secret{
		Name: IdentitySecretName,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: fileSource(CertificatePath),
			PrivateKey:       fileSource(PrivateKeyPath),
			WatchedDirectory: watch,
		}},
	})
	if err != nil {
		return nil, err
	}
	trust, err := anypb.New(&tlsv3.Secret{
		Name: TrustBundleName,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa:        fileSource(CAPath),
			WatchedDirectory: watch,
		}},
	})
	if err != nil {
		return nil, err
	}
	return &discoveryv3.DiscoveryResponse{Resources: []*anypb.Any{cert, trust}}, nil
}

func adminPathListener(name string, port uint32, path string) (*listenerv3.Listener, error) {
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: name,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    name,
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					// An exact path: everything else on admin (config dumps,
					// mutating endpoints) stays unreachable from outside.
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: path}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: AdminClusterName}}},
				}},
			}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router},
		}},
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{
		Name:    name,
		Address: socketAddress("0.0.0.0", port),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       "envoy.filters.network.http_connection_manager",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
			}},
		}},
	}, nil
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func endpoints(cluster, host string, port uint32) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: cluster,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(host, port)}},
			}},
		}},
	}
}

func fileSource(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

// spliceNode renders a bootstrap from the JSON of its node and of the rest
// (rendered once per Injector). Node is field 1 of Bootstrap, so protojson
// writes it first; the result is byte-identical to marshalling the whole
// bootstrap, at a fraction of the cost per pod.
func spliceNode(node *corev3.Node, stats *metricsv3.StatsConfig, rest string) (string, error) {
	nodeJSON, err := marshalProto(node)
	if err != nil {
		return "", err
	}
	head := `{"node":` + nodeJSON
	if stats != nil {
		statsJSON, err := marshalProto(stats)
		if err != nil {
			return "", err
		}
		head += `,"stats_config":` + statsJSON
	}
	if len(rest) < 2 || rest[0] != '{' {
		return "", fmt.Errorf("bootstrap without node is not a JSON object: %.20q", rest)
	}
	if rest == "{}" {
		return head + `}`, nil
	}
	return head + "," + rest[1:], nil
}

// marshalProto renders m as compact JSON. protojson deliberately varies its
// whitespace between builds; compacting removes that, so the same pod always
// gets byte-identical bootstrap text and the same patch.
func marshalProto(m proto.Message) (string, error) {
	// Proto field names, as Envoy's documentation and config dumps spell them.
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("marshal %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return "", fmt.Errorf("compact %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return buf.String(), nil
}

// grpcBootstrap is the xDS bootstrap of a proxyless gRPC client, in the
// format gRPC's xDS support reads (gRFC A27, with certificate providers from
// A29 and server listeners from A36).
type grpcBootstrap struct {
	XDSServers                         []grpcXDSServer             `json:"xds_servers"`
	Node                               grpcNode                    `json:"node"`
	CertificateProviders               map[string]grpcCertProvider `json:"certificate_providers"`
	ServerListenerResourceNameTemplate string                      `json:"server_listener_resource_name_template"`
}

type grpcXDSServer struct {
	ServerURI      string            `json:"server_uri"`
	ChannelCreds   []grpcChannelCred `json:"channel_creds"`
	ServerFeatures []string          `json:"server_features"`
}

type grpcChannelCred struct {
	Type   string         `json:"type"`
	Config *grpcTLSConfig `json:"config,omitempty"`
}

// grpcTLSConfig is the config of the "tls" channel credential and of the
// "file_watcher" certificate provider, which share their fields.
type grpcTLSConfig struct {
	CertificateFile   string `json:"certificate_file"`
	PrivateKeyFile    string `json:"private_key_file"`
	CACertificateFile string `json:"ca_certificate_file"`
	RefreshInterval   string `json:"refresh_interval,omitempty"`
}

type grpcNode struct {
	ID       string            `json:"id"`
	Cluster  string            `json:"cluster"`
	Metadata map[string]string `json:"metadata"`
}

type grpcCertProvider struct {
	PluginName string        `json:"plugin_name"`
	Config     grpcTLSConfig `json:"config"`
}

// GRPCServerListenerTemplate names the Listener a proxyless gRPC server asks
// for; %s is its listening address.
const GRPCServerListenerTemplate = "weft/inbound/%s"

func grpcBootstrapJSON(cfg Config, w xdsNode) (string, error) {
	files := grpcTLSConfig{CertificateFile: CertificatePath, PrivateKeyFile: PrivateKeyPath, CACertificateFile: CAPath}
	watcher := files
	// The kubelet refreshes projected Secret and ConfigMap contents about
	// once a minute; checking as often costs nothing and keeps renewal and
	// root rotation latency low. The watcher re-reads the paths, so it
	// follows the kubelet's ..data symlink swap.
	watcher.RefreshInterval = "60s"
	b := grpcBootstrap{
		XDSServers: []grpcXDSServer{{
			ServerURI:      cfg.XDSAddress,
			ChannelCreds:   []grpcChannelCred{{Type: "tls", Config: &files}},
			ServerFeatures: []string{"xds_v3"},
		}},
		Node: grpcNode{
			ID:      w.nodeID,
			Cluster: w.cluster(),
			Metadata: map[string]string{
				"namespace":      w.namespace,
				"serviceAccount": w.serviceAccount,
				"proxyVersion":   cfg.ProxyVersion,
				"trustDomain":    cfg.TrustDomain,
			},
		},
		CertificateProviders:               map[string]grpcCertProvider{GRPCCertProviderInstance: {PluginName: "file_watcher", Config: watcher}},
		ServerListenerResourceNameTemplate: GRPCServerListenerTemplate,
	}
	raw, err := json.Marshal(b)
	if err != nil {
		return "", fmt.Errorf("marshal grpc bootstrap: %w", err)
	}
	return string(raw), nil
}
