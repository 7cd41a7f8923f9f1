// Package e2e proves end to end that Weft's configuration makes traffic
// behave: real grpc-go xDS clients and servers, configured only by the
// real weft-controller binary through the bootstrap the injector gives
// them, carry real calls while the tests change TrafficSplits, routes and
// policies through the API server. See docs/e2e.md.
package e2e
