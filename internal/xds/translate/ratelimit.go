package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	exprv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/rate_limit_descriptors/expr/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weft-mesh/weft/internal/ir"
)

const (
	localRateLimitFilterName = "envoy.filters.http.local_ratelimit"
	// callerKey is the descriptor entry that carries the caller's SPIFFE
	// ID, from the peer certificate's URI SAN.
	callerKey = "weft_caller"
	// maxCallers is how many callers' buckets a proxy keeps (least
	// recently used go first).
	maxCallers = 1000
	// unlimited stands for "no overall limit" when only per-caller limits
	// are set: the filter needs a bucket of its own.
	unlimited = 1 << 30
)

func tokenBucket(b *ir.TokenBucket) *typev3.TokenBucket {
	return &typev3.TokenBucket{MaxTokens: b.Burst, TokensPerFill: u32(b.Requests), FillInterval: dur(b.Interval.D())}
}

// always is 100% of requests, for filter_enabled and filter_enforced
// (whose default is 0%).
func always(key string) *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{
		DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED},
		RuntimeKey:   key,
	}
}

// rateLimitFilter is the local rate limit of a served port: the overall
// bucket, and a bucket per caller identity (a wildcard descriptor filled
// from the peer certificate's URI SAN). Limited requests get 429 with
// x-ratelimit-* headers, gRPC calls RESOURCE_EXHAUSTED. It runs after RBAC,
// so denied requests spend no tokens.
func rateLimitFilter(rl *ir.RateLimit) (*hcmv3.HttpFilter, error) {
	f := &localratelimitv3.LocalRateLimit{
		StatPrefix:                     "inbound_rate_limit",
		FilterEnabled:                  always("weft.local_rate_limit.enabled"),
		FilterEnforced:                 always("weft.local_rate_limit.enforced"),
		EnableXRatelimitHeaders:        ratelimitv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03,
		RateLimitedAsResourceExhausted: true,
	}
	if rl.Limit != nil {
		f.TokenBucket = tokenBucket(rl.Limit)
	}
	if c := rl.PerCaller; c != nil {
		if f.TokenBucket == nil {
			f.TokenBucket = &typev3.TokenBucket{MaxTokens: unlimited, TokensPerFill: u32(unlimited), FillInterval: dur(c.Interval.D())}
		}
		expr, err := toAny(&exprv3.Descriptor{
			DescriptorKey: callerKey,
			// Callers without a certificate make no descriptor and
			// count against the overall limit only.
			SkipIfError:   true,
			ExprSpecifier: &exprv3.Descriptor_Text{Text: "connection.uri_san_peer_certificate"},
		})
		if err != nil {
			return nil, err
		}
		f.RateLimits = []*routev3.RateLimit{{Actions: []*routev3.RateLimit_Action{{
			ActionSpecifier: &routev3.RateLimit_Action_Extension{Extension: &corev3.TypedExtensionConfig{
				Name: "envoy.rate_limit_descriptors.expr", TypedConfig: expr,
			}},
		}}}}
		f.Descriptors = []*ratelimitv3.LocalRateLimitDescriptor{{
			// No value: one bucket per distinct caller.
			Entries:     []*ratelimitv3.RateLimitDescriptor_Entry{{Key: callerKey}},
			TokenBucket: tokenBucket(c),
		}}
		f.MaxDynamicDescriptors = wrapperspb.UInt32(maxCallers)
		// Both limits hold: the overall bucket counts every request.
		f.AlwaysConsumeDefaultTokenBucket = wrapperspb.Bool(rl.Limit != nil)
	}
	cfg, err := toAny(f)
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{Name: localRateLimitFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: cfg}}, nil
}
