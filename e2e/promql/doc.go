// Package promql proves the canary metric templates Weft ships
// (config/canary) with Prometheus's own PromQL engine: over series in the
// exposition format an injected Envoy emits (with the stats tags the
// injector gives it), and over what a real grpc-go server exports through
// its OpenTelemetry metrics, each query must compute the success rate and
// p99 latency the traffic had. It is a module of its own so that
// Prometheus's dependencies stay out of Weft's go.mod.
package promql
