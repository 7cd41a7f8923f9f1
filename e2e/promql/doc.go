// Package promql proves the canary metric templates Weft ships
// (config/canary) with Prometheus's own PromQL engine: over series in the
// exposition format an injected Envoy emits (with the stats tags the
// injector gives it), and over what a real grpc-go server exports through
// its OpenTelemetry metrics, each query must compute the success rate and
// p99 latency the traffic had. The golden exposition is checked against
// Envoy's own naming rules (the tag extraction of its
// well_known_names.cc and the injected bootstrap's tags), so that a series
// no Envoy would emit fails. It is a module of its own so that
// Prometheus's dependencies stay out of Weft's go.mod.
package promql
