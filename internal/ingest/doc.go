// Package ingest turns a bundle of Kubernetes objects (Services,
// EndpointSlices, Pods, Namespaces, Weft's policies and Gateway API routes)
// into the mesh model (internal/ir) and the status every input object should
// carry.
//
// It is pure: everything comes in as arguments; there is no client, clock,
// randomness or global state, and equal bundles give equal results. Problems
// a user can fix become conditions on the object that has them, never errors
// that would drop the configuration of other workloads.
//
// It must not import controllers/, webhooks/, Kubernetes clients or
// go-control-plane.
package ingest
