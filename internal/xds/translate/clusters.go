package translate

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	cswrrv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/client_side_weighted_round_robin/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/ir"
)

// connectTimeout bounds establishing an upstream connection. Inside a
// cluster network a connection that takes longer is not coming.
const connectTimeout = 5 * time.Second

const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// flavor says which client a cluster is for: Envoy reads certificates from
// SDS secrets, proxyless gRPC from certificate provider instances in its
// bootstrap.
type flavor int

const (
	flavorEnvoy flavor = iota
	flavorGRPC
)

// needsTLS says whether clients must originate mTLS to the Service.
func needsTLS(svc *ir.Service) bool {
	return svc.MTLS == ir.MTLSStrict || svc.MTLS == ir.MTLSPermissive
}

// StatName is the name Envoy reports a cluster's statistics under (its
// alt_stat_name): the cluster name with dots as underscores. Envoy's
// default tag extraction takes a cluster's name up to the first dot, so
// outbound|8080||checkout.shop.svc.cluster.local would become the tag
// "outbound|8080||checkout" and spill the rest into the metric's name;
// envoy_cluster_name="outbound|8080||checkout_shop_svc_cluster_local"
// names the destination Service whole.
func StatName(cluster string) string { return strings.ReplaceAll(cluster, ".", "_") }

// outboundCluster is the EDS cluster of a Service port.
func (b *builder) outboundCluster(svc *ir.Service, port *ir.Port, fl flavor) (*clusterv3.Cluster, error) {
	c := &clusterv3.Cluster{
		Name:                 port.Cluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()},
		ConnectTimeout:       dur(connectTimeout),
	}
	if err := setLB(c, svc.LoadBalancer); err != nil {
		return nil, err
	}
	return c, b.decorate(c, svc, port, port.Protocol, fl)
}

// originalDstCluster carries a connection to the headless Service endpoint
// the client picked.
func (b *builder) originalDstCluster(svc *ir.Service, port *ir.Port) (*clusterv3.Cluster, error) {
	c := &clusterv3.Cluster{
		Name:                 OriginalDstClusterName(svc.Hostname, port.Port),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       dur(connectTimeout),
	}
	// The connection is carried as opaque bytes, so nothing is negotiated
	// at the TLS layer: the server's HTTP connection manager recognises
	// HTTP/1 or HTTP/2 from what the client sends.
	return c, b.decorate(c, svc, port, ir.ProtocolTCP, flavorEnvoy)
}

// decorate adds what every cluster of a Service port carries: protocol
// options, limits, outlier detection and mTLS.
func (b *builder) decorate(c *clusterv3.Cluster, svc *ir.Service, port *ir.Port, proto ir.Protocol, fl flavor) error {
	if fl == flavorEnvoy {
		c.AltStatName = StatName(c.Name)
	}
	h2 := proto == ir.ProtocolHTTP2 || proto == ir.ProtocolGRPC
	if h2 {
		opts, err := b.http2Options()
		if err != nil {
			return err
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: opts}
	}
	c.CircuitBreakers = circuitBreakers(port.CircuitBreaker, port.RetryBudget)
	if cb := port.CircuitBreaker; cb != nil {
		c.OutlierDetection = outlierDetection(cb.Outlier)
		if cb.ConnectTimeout > 0 {
			c.ConnectTimeout = dur(cb.ConnectTimeout.D())
		}
		if cb.IdleTimeout > 0 && proto.IsHTTP() {
			opts, err := httpIdleOptions(cb.IdleTimeout, h2)
			if err != nil {
				return err
			}
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: opts}
		}
	}
	if needsTLS(svc) {
		ts, err := b.upstreamTLS(svc, proto, fl)
		if err != nil {
			return err
		}
		c.TransportSocket = ts
	}
	return nil
}

func setLB(c *clusterv3.Cluster, lb ir.LoadBalancer) error {
	switch lb.Policy {
	case ir.LBRoundRobin:
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	case ir.LBWeightedRoundRobin:
		// Envoy and grpc-go both read the policy's typed config, and weigh
		// each endpoint by the ORCA load reports it sends with its
		// responses (endpoint-load-metrics-bin); the defaults hold: a 10s
		// blackout before a new endpoint's weight counts, weights
		// recomputed every second, reports older than 3 minutes dropped.
		// lb_policy is what a client that does not know the policy falls
		// back to.
		cfg, err := toAny(&cswrrv3.ClientSideWeightedRoundRobin{})
		if err != nil {
			return err
		}
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
		c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{{
			TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "envoy.load_balancing_policies.client_side_weighted_round_robin", TypedConfig: cfg},
		}}}
	case ir.LBRingHash:
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
			HashFunction: clusterv3.Cluster_RingHashLbConfig_XX_HASH,
		}}
	default:
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
			ChoiceCount: u32(2),
		}}
	}
	return nil
}

// http2Options makes the cluster speak HTTP/2 to its endpoints. The
// message is the same for every cluster, so it is packed once.
func (b *builder) http2Options() (*anypb.Any, error) {
	if b.h2 != nil {
		return b.h2, nil
	}
	a, err := toAny(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		},
	})
	b.h2 = a
	return a, err
}

// httpIdleOptions closes pooled upstream connections idle for d, keeping
// the cluster's protocol.
func httpIdleOptions(d ir.Duration, h2 bool) (*anypb.Any, error) {
	o := &upstreamhttpv3.HttpProtocolOptions{
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: dur(d.D())},
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
		}},
	}
	if h2 {
		o.UpstreamProtocolOptions = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}}
	}
	return toAny(o)
}

func circuitBreakers(cb *ir.CircuitBreaker, budget *ir.RetryBudget) *clusterv3.CircuitBreakers {
	if cb == nil && budget == nil {
		return nil
	}
	t := &clusterv3.CircuitBreakers_Thresholds{Priority: corev3.RoutingPriority_DEFAULT}
	if cb != nil {
		t.MaxConnections = u32p(cb.MaxConnections)
		t.MaxPendingRequests = u32p(cb.MaxPendingRequests)
		t.MaxRequests = u32p(cb.MaxRequests)
		t.MaxRetries = u32p(cb.MaxRetries)
	}
	if budget != nil {
		t.RetryBudget = &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent:       &typev3.Percent{Value: clampPercent(budget.Percent)},
			MinRetryConcurrency: u32(budget.MinRetryConcurrency),
		}
	}
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{t}}
}

// outlierDetection turns on exactly the detectors the model names. Envoy
// enables the consecutive-5xx and success-rate detectors by default, so
// every detector not asked for is switched off explicitly.
func outlierDetection(od *ir.OutlierDetection) *clusterv3.OutlierDetection {
	if od == nil {
		return nil
	}
	out := &clusterv3.OutlierDetection{
		EnforcingSuccessRate:               u32(0),
		EnforcingConsecutive_5Xx:           u32(0),
		EnforcingConsecutiveGatewayFailure: u32(0),
		EnforcingFailurePercentage:         u32(0),
		MaxEjectionPercent:                 u32(min(od.MaxEjectionPercent, 100)),
	}
	if od.Interval > 0 {
		out.Interval = dur(od.Interval.D())
	}
	if od.BaseEjectionTime > 0 {
		out.BaseEjectionTime = dur(od.BaseEjectionTime.D())
	}
	if od.Consecutive5xx != nil {
		out.Consecutive_5Xx = u32(*od.Consecutive5xx)
		out.EnforcingConsecutive_5Xx = u32(100)
	}
	if od.ConsecutiveGateway != nil {
		out.ConsecutiveGatewayFailure = u32(*od.ConsecutiveGateway)
		out.EnforcingConsecutiveGatewayFailure = u32(100)
	}
	if fp := od.FailurePercentage; fp != nil {
		out.FailurePercentageThreshold = u32(min(fp.Threshold, 100))
		out.FailurePercentageMinimumHosts = u32(fp.MinimumHosts)
		out.FailurePercentageRequestVolume = u32(fp.RequestVolume)
		out.EnforcingFailurePercentage = u32(100)
	}
	return out
}

// staticCluster sends to fixed addresses; a DNS name makes it STRICT_DNS.
func staticCluster(name, host string, port uint32) *clusterv3.Cluster {
	typ := clusterv3.Cluster_STATIC
	if _, err := netip.ParseAddr(host); err != nil {
		typ = clusterv3.Cluster_STRICT_DNS
	}
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: typ},
		ConnectTimeout:       dur(connectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(host, port, corev3.HealthStatus_UNKNOWN)},
			}},
		},
	}
}

// inboundCluster forwards to the application on the loopback interface.
func (b *builder) inboundCluster(p *ir.InboundPort) (*clusterv3.Cluster, error) {
	c := staticCluster(ir.InboundClusterName(p.Port), "127.0.0.1", uint32(p.Port))
	if p.Protocol == ir.ProtocolHTTP2 || p.Protocol == ir.ProtocolGRPC {
		opts, err := b.http2Options()
		if err != nil {
			return nil, err
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: opts}
	}
	return c, nil
}

func originalDst(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       dur(connectTimeout),
	}
}

func blackhole() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 BlackholeCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       dur(connectTimeout),
		LoadAssignment:       &endpointv3.ClusterLoadAssignment{ClusterName: BlackholeCluster},
	}
}

func (b *builder) tracingCluster() (*clusterv3.Cluster, error) {
	t := b.opts.Tracing
	c := staticCluster(TracingCluster, t.Address, t.Port)
	opts, err := b.http2Options()
	if err != nil {
		return nil, err
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: opts}
	if err := validate(c); err != nil {
		return nil, fmt.Errorf("tracing collector %s:%d: %w", t.Address, t.Port, err)
	}
	return c, nil
}
