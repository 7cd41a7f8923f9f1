// Package workload is Weft's one answer to "is this pod in the mesh, with
// which data plane, under which xDS node ID and which identity". The
// injector (internal/inject, and through it the admission webhook), the
// model builder (internal/ingest), the sidecar audit and the xDS server's
// authorization all ask Of, so they cannot disagree about a pod.
//
// The rules, in the order they apply:
//
//   - a pod in kube-system is never meshed;
//   - a pod the injector already changed (it carries weft.dev/status, or a
//     weft-proxy container) is meshed, unless it uses the host network;
//   - weft.dev/inject: "false" on the pod keeps it out;
//   - otherwise a pod is meshed when it asks for it, with weft.dev/inject
//     "true" or "grpc-agent" or by living in a namespace labelled
//     weft.dev/inject=enabled, and does not use the host network;
//   - a pod that has finished (Succeeded or Failed) is no longer meshed.
//
// Everything here is a function of its arguments: no client, no clock, no
// global state. It must not import Kubernetes clients, controller-runtime,
// controllers/, webhooks/, internal/xds or internal/ingest.
package workload
