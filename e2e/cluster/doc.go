// Package cluster is Weft's cluster in a box: everything a Kubernetes
// cluster would do for a mesh of proxyless gRPC workloads, run on one
// machine inside a private network namespace, around the real
// weft-controller binary.
//
// The box runs a local API server and etcd (envtest), installs Weft's,
// Gateway API's and cert-manager's CRDs, stands in for cert-manager with
// internal/testsigner, and does the work of the components envtest does not
// run: it writes EndpointSlices for Services as the endpointslice
// controller would, and plays the kubelet for the pods it runs (pod status,
// projected identity volumes with atomic ..data swaps, readiness). Every
// pod is injected by internal/inject exactly as the webhook would inject it,
// and its workload is a real grpc-go xDS server or client reading the
// GRPC_XDS_BOOTSTRAP_CONFIG the injector gave it.
//
// Pod IPs exist only on the loopback interface of the box's network
// namespace (see EnterSandbox), so no traffic ever leaves the machine.
//
// The e2e tests and the local demo (hack/demo) both use this package, so
// the demo shows exactly what the tests check. It is test infrastructure:
// controller code must never import it.
package cluster
