// Package translate turns the mesh model (internal/ir) into Envoy xDS
// resources: the listeners, route configurations, clusters, endpoints and
// secrets of every sidecar proxy group, and the listeners, clusters and
// endpoints that proxyless gRPC clients and servers read.
//
// The package is pure. It takes everything as arguments and has no client,
// clock, randomness or global state; equal inputs give byte-identical output
// (every list is sorted and every embedded Any is marshalled
// deterministically), so the xDS cache does not churn.
//
// Translation is split in two so that serving many proxies stays linear in
// the size of the mesh: Prepare builds every Service port's filter chain,
// route configuration and cluster once, and (*Prepared).ForGroup then only
// assembles those shared, immutable messages with the group's own inbound
// listener. Callers must treat every returned message as read-only.
//
// This package must not import Kubernetes clients, controllers/ or
// webhooks/.
package translate
