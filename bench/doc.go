// Package bench compares Weft's control plane with istiod side by side:
// both run as their own processes against one local API server, with the
// same Services, pods and GAMMA HTTPRoutes, and the same number of
// simulated Envoy proxies connected to each over delta ADS. It is its own
// Go module so that istio.io/istio stays out of the product's
// dependencies, and it runs from `make bench`, not `make test`: building
// pilot-discovery takes minutes.
package bench
