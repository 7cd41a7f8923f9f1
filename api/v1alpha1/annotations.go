package v1alpha1

// The weft.dev names users put on, or find on, their own objects. They are
// part of the API as much as the kinds are: manifests, selectors and
// dashboards spell them out, so they are declared here once and every
// package refers to these constants. Constants only, so controller-gen has
// nothing to generate from this file.

// Pod injection: what a user writes to ask for the mesh.
const (
	// LabelInject on a Namespace: NamespaceInjectEnabled meshes every pod
	// in it (unless a pod opts out with AnnotationInject). It also selects
	// the namespaces of a MeshIdentity without a namespaceSelector.
	LabelInject = "weft.dev/inject"
	// AnnotationInject on a Pod: InjectTrue opts in, InjectFalse opts out,
	// InjectGRPCAgent opts in as a proxyless gRPC workload. Any other value
	// is refused by the injector.
	AnnotationInject = "weft.dev/inject"

	// NamespaceInjectEnabled is the value of LabelInject that meshes a
	// namespace.
	NamespaceInjectEnabled = "enabled"
	// InjectTrue is the AnnotationInject value that gives a pod an Envoy sidecar.
	InjectTrue = "true"
	// InjectFalse is the AnnotationInject value that keeps a pod out of the mesh.
	InjectFalse = "false"
	// InjectGRPCAgent is the AnnotationInject value for proxyless gRPC:
	// no proxy, the gRPC library talks xDS itself.
	InjectGRPCAgent = "grpc-agent"
)

// What the injector records on the pods it changes.
const (
	// AnnotationStatus records what was injected, as JSON. Its presence
	// marks a pod as injected.
	AnnotationStatus = "weft.dev/status"
	// AnnotationProxyVersion records the proxy version a pod was injected with.
	AnnotationProxyVersion = "weft.dev/proxy-version"
	// LabelProxyVersion carries the same version as a label, so pods still on
	// an old proxy can be selected (when the version is a valid label value).
	LabelProxyVersion = "weft.dev/proxy-version"
)

// Per-pod proxy settings, as pod annotations.
const (
	// AnnotationExcludeInboundPorts lists inbound ports the proxy does not
	// capture (comma-separated).
	AnnotationExcludeInboundPorts = "weft.dev/exclude-inbound-ports"
	// AnnotationExcludeOutboundPorts lists outbound ports the proxy does not
	// capture (comma-separated).
	AnnotationExcludeOutboundPorts = "weft.dev/exclude-outbound-ports"
	// AnnotationExcludeOutboundCIDRs lists destinations the proxy does not
	// capture (comma-separated CIDRs).
	AnnotationExcludeOutboundCIDRs = "weft.dev/exclude-outbound-cidrs"
	// AnnotationProxyCPU is the proxy's CPU request.
	AnnotationProxyCPU = "weft.dev/proxy-cpu"
	// AnnotationProxyMemory is the proxy's memory request.
	AnnotationProxyMemory = "weft.dev/proxy-memory"
	// AnnotationProxyCPULimit is the proxy's CPU limit.
	AnnotationProxyCPULimit = "weft.dev/proxy-cpu-limit"
	// AnnotationProxyMemoryLimit is the proxy's memory limit.
	AnnotationProxyMemoryLimit = "weft.dev/proxy-memory-limit"
	// AnnotationProxyLogLevel is the proxy's log level.
	AnnotationProxyLogLevel = "weft.dev/proxy-log-level"
	// AnnotationProxyImage replaces the proxy image for one pod.
	AnnotationProxyImage = "weft.dev/proxy-image"
)

// Other objects' names.
const (
	// AnnotationLoadBalancer on a Service picks its load-balancing policy.
	AnnotationLoadBalancer = "weft.dev/load-balancer"
	// AnnotationExportTo on a Service or a Namespace limits which
	// namespaces' proxies are sent the Service: a comma-separated list of
	// namespace names, "." (the Service's own namespace), "*" (every
	// namespace, the default) or "~" (none). On a Namespace it is the
	// default of its Services; a Service's own annotation wins.
	AnnotationExportTo = "weft.dev/export-to"
	// LabelIdentity names the MeshIdentity a Certificate, its Secret or a
	// trust bundle ConfigMap belongs to.
	LabelIdentity = "weft.dev/identity"
)

// Names Weft reports itself under.
const (
	// GatewayControllerName is the Gateway API controller name Weft writes
	// into route status parents.
	GatewayControllerName = "weft.dev/mesh-controller"
	// InjectorName is the reporting controller of the injector's events.
	InjectorName = "weft.dev/injector"
	// SidecarAuditName is the reporting controller of the sidecar audit's events.
	SidecarAuditName = "weft.dev/sidecar-audit"
	// LeaderElectionID is the Lease the controller replicas elect a leader with.
	LeaderElectionID = "weft-controller.weft.dev"
)
