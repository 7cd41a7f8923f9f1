// Package server serves Weft's xDS configuration over ADS (state of the
// world and delta) with go-control-plane, to Envoy sidecars and proxyless
// gRPC clients.
//
// It authenticates every stream: a proxy's client certificate carries a
// SPIFFE ID, and an Authorizer decides whether that identity may receive
// the configuration of the node it names, so a proxy gets its own
// configuration only. It tracks what every proxy acknowledged or rejected
// (ACK/NACK), does not re-send a rejected version in a loop, and exposes
// Prometheus metrics.
//
// It must not import controllers/ or webhooks/.
package server
