// Package inject builds, for a pod that joins the mesh, the mutated pod and
// the RFC 6902 JSON patch that turns the submitted pod into it. Whether the
// pod joins, and with which data plane, is internal/workload's answer, the
// same one ingest and the sidecar audit use.
//
// Inject is a pure function: it reads only its arguments (the pod, its
// namespace's labels and a Config) and has no client, clock, randomness or
// global state, so the same input always gives the same patch. The admission
// webhook in webhooks/ is a thin wrapper around it.
//
// Two data planes are supported:
//
//   - Envoy sidecar: a weft-init init container installs the traffic redirect
//     rules (internal/capture) and writes the proxy's bootstrap, then the
//     weft-proxy container runs Envoy. On Kubernetes 1.29 and later weft-proxy
//     is a native sidecar (an init container with restartPolicy Always);
//     before that it is the first regular container.
//   - Proxyless gRPC (weft.dev/inject: grpc-agent): no proxy and no redirect
//     rules; every app container gets a gRPC xDS bootstrap in the
//     GRPC_XDS_BOOTSTRAP_CONFIG environment variable and the workload
//     identity mounted read-only.
//
// Only the Pod is ever changed. This package must not import controllers/,
// webhooks/, or any Kubernetes client code.
package inject
