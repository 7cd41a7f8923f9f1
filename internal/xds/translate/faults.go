package translate

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weft-mesh/weft/internal/ir"
)

// faultFilterName is the HTTP fault filter: in every Envoy outbound HTTP
// connection manager without faults of its own (so a FaultInjection only
// changes routes, never listeners), and in a proxyless client's when one
// of its routes has faults. A route's faults are its per-filter config.
const faultFilterName = "envoy.filters.http.fault"

func faultFilter() (*hcmv3.HttpFilter, error) {
	cfg, err := toAny(&faultv3.HTTPFault{})
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{Name: faultFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: cfg}}, nil
}

// percent of requests, in millionths.
func percent(p uint32) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: min(p, 100) * 10000, Denominator: typev3.FractionalPercent_MILLION}
}

// faultConfig is a route's faults as the fault filter's per-route config.
func faultConfig(f *ir.Fault) (*anypb.Any, error) {
	hf := &faultv3.HTTPFault{}
	if d := f.Delay; d != nil {
		hf.Delay = &commonfaultv3.FaultDelay{
			FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: dur(d.Fixed.D())},
			Percentage:         percent(d.Percent),
		}
	}
	if a := f.Abort; a != nil {
		hf.Abort = &faultv3.FaultAbort{Percentage: percent(a.Percent)}
		if a.GRPCStatus != nil {
			hf.Abort.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: *a.GRPCStatus}
		} else {
			hf.Abort.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: a.HTTPStatus}
		}
	}
	// Headers become a route match of their own (see routes).
	return toAny(hf)
}

// hasFaults says whether any route of a route configuration injects faults.
func hasFaults(rc *routev3.RouteConfiguration) bool {
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if _, ok := r.GetTypedPerFilterConfig()[faultFilterName]; ok {
				return true
			}
		}
	}
	return false
}
