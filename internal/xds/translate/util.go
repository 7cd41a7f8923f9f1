package translate

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// deterministic is how every embedded message is serialised, so that equal
// inputs give equal bytes even where a message holds a map.
var deterministic = proto.MarshalOptions{Deterministic: true}

type validator interface {
	ValidateAll() error
}

// toAny validates m with Envoy's own rules and packs it. Validating here
// matters: a resource's ValidateAll does not look inside an Any.
func toAny(m proto.Message) (*anypb.Any, error) {
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			return nil, fmt.Errorf("invalid %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
		}
	}
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, deterministic); err != nil {
		return nil, fmt.Errorf("packing %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return a, nil
}

// validate runs a top-level resource's ValidateAll.
func validate(m types.Resource) error {
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("invalid %s %q: %w", m.ProtoReflect().Descriptor().Name(), resourceName(m), err)
		}
	}
	return nil
}

// ads is the config source of every dynamic resource: the ADS stream the
// proxy already has.
func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func u32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

func u32p(p *uint32) *wrapperspb.UInt32Value {
	if p == nil {
		return nil
	}
	return wrapperspb.UInt32(*p)
}

func clampPercent(v float64) float64 {
	if math.IsNaN(v) || v < 0 {
		return 0
	}
	return min(v, 100)
}

// resourceName is the name a resource is sorted and served by.
func resourceName(r types.Resource) string {
	switch v := r.(type) {
	case *endpointv3.ClusterLoadAssignment:
		return v.GetClusterName()
	case interface{ GetName() string }:
		return v.GetName()
	}
	return ""
}

func sortResources(rs []types.Resource) {
	slices.SortStableFunc(rs, func(a, b types.Resource) int { return cmp.Compare(resourceName(a), resourceName(b)) })
}

// mergeSorted merges two lists that are each sorted by name.
func mergeSorted(a, b []types.Resource) []types.Resource {
	if len(b) == 0 {
		return a
	}
	if len(a) == 0 {
		return b
	}
	out := make([]types.Resource, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		if resourceName(a[i]) <= resourceName(b[j]) {
			out = append(out, a[i])
			i++
		} else {
			out = append(out, b[j])
			j++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}
