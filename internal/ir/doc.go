// Package ir is Weft's model of the mesh: Services with their ports, routes,
// endpoints and policies, and the groups of identical proxies that consume
// them. internal/ingest builds it from Kubernetes objects; internal/xds/translate
// turns it into Envoy resources.
//
// Every node remembers the object it came from (ObjectRef) so that a problem
// found later can be reported as a condition on that object. All slices are
// sorted by ingest, so equal inputs give equal models.
//
// This package holds data only: it must not import Kubernetes clients,
// go-control-plane, controllers/ or webhooks/.
package ir
