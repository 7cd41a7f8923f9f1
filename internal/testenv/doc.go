// Package testenv starts a real kube-apiserver and etcd (envtest) with Weft's
// CRDs, the Gateway API standard CRDs and cert-manager's CRDs installed, for
// tests only. The binaries come from hack/envtest (KUBEBUILDER_ASSETS, set by
// the Makefile); the Gateway API and cert-manager CRDs are read from their Go
// modules' directories, so none of them are copied into this repository.
//
// It must only be imported from tests.
package testenv
