// Package identity holds the pure parts of Weft's workload identity: SPIFFE
// IDs for service accounts, the cert-manager Certificate that gives a service
// account its identity, and the trust bundle every meshed namespace receives.
//
// A workload's identity is spiffe://<trust domain>/ns/<namespace>/sa/<service
// account>. The MeshIdentity reconciler asks cert-manager for one Certificate
// per service account in use and publishes the union of the issuing CAs as the
// weft-trust-bundle ConfigMap; the xDS server uses ParseSpiffeID and
// IDFromCertificate to check that a proxy presents the identity of the pod it
// claims to be.
//
// Everything here is a function of its arguments: no client, no clock (callers
// pass the time), no randomness and no global state. The package may import
// the Weft and cert-manager API types and Kubernetes apimachinery; it must not
// import Kubernetes clients, controller-runtime, controllers/, webhooks/ or
// internal/xds.
package identity
