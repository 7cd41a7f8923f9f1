package inject

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/workload"
)

// Mode is how a pod joins the mesh.
type Mode string

const (
	// ModeNativeSidecar: Envoy as an init container with restartPolicy Always.
	ModeNativeSidecar Mode = "native-sidecar"
	// ModeSidecar: Envoy as the first regular container (API servers before 1.29).
	ModeSidecar Mode = "sidecar"
	// ModeGRPCAgent: no proxy; gRPC clients and servers talk xDS themselves.
	ModeGRPCAgent Mode = "grpc-agent"
)

// SkipReason says why a pod is left unchanged.
type SkipReason string

const (
	// SkipSystemNamespace: kube-system and the control plane's namespace are never injected.
	SkipSystemNamespace SkipReason = "SystemNamespace"
	// SkipAlreadyInjected: the pod has the status annotation or a weft-proxy container.
	SkipAlreadyInjected SkipReason = "AlreadyInjected"
	// SkipOptedOut: the pod is annotated weft.dev/inject: "false".
	SkipOptedOut SkipReason = "OptedOut"
	// SkipNotEnabled: neither the namespace label nor a pod annotation asks for the mesh.
	SkipNotEnabled SkipReason = "NotEnabled"
	// SkipHostNetwork: the pod shares the node's network namespace.
	SkipHostNetwork SkipReason = "HostNetwork"
)

// Skip is the outcome for a pod that stays out of the mesh (or is in it
// already).
type Skip struct {
	Reason  SkipReason
	Message string
}

// Result is the outcome of Inject. Exactly one of Skip and Pod is set.
type Result struct {
	// Skip is set when the pod is left unchanged.
	Skip *Skip
	// Mode is the data plane the pod was given.
	Mode Mode
	// Pod is the injected copy of the input pod.
	Pod *corev1.Pod
	// Patch turns the input pod's JSON into Pod's JSON.
	Patch []jsonpatch.Operation
	// Status is what the weft.dev/status annotation records.
	Status *Status
	// Warnings are problems that do not stop injection but that the pod's
	// author should hear about (the webhook returns them as admission warnings).
	Warnings []string
}

// Status is recorded as JSON in the weft.dev/status annotation.
type Status struct {
	// Version of the proxy injected.
	Version string `json:"version"`
	// Mode of the data plane.
	Mode Mode `json:"mode"`
	// InitContainers added, in pod order.
	InitContainers []string `json:"initContainers,omitempty"`
	// Containers added.
	Containers []string `json:"containers,omitempty"`
	// Volumes added.
	Volumes []string `json:"volumes,omitempty"`
	// ConfiguredContainers are app containers that were given the gRPC
	// bootstrap and identity mount (grpc-agent mode).
	ConfiguredContainers []string `json:"configuredContainers,omitempty"`
}

// Injector injects pods according to one Config. It renders the proxy
// configuration every pod shares once, so an admission only builds what is
// specific to its pod. An Injector never changes after New and is safe for
// concurrent use; its Inject is as pure as the package-level Inject.
type Injector struct {
	cfg Config
	// staticBootstrap is the Envoy bootstrap without its node, as JSON.
	staticBootstrap string
	// sds is the identity SDS file, the same for every pod.
	sds string
}

// New validates cfg and prepares an Injector for it.
func New(cfg Config) (*Injector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid injector config: %w", err)
	}
	static, err := envoyStatic(cfg)
	if err != nil {
		return nil, err
	}
	staticJSON, err := marshalProto(static)
	if err != nil {
		return nil, err
	}
	sds, err := identitySDS()
	if err != nil {
		return nil, err
	}
	sdsJSON, err := marshalProto(sds)
	if err != nil {
		return nil, err
	}
	return &Injector{cfg: cfg, staticBootstrap: staticJSON, sds: sdsJSON}, nil
}

// Config returns the configuration the Injector was made with.
func (in *Injector) Config() Config { return in.cfg }

// Inject is New(cfg) followed by Injector.Inject, for callers that inject
// once; a webhook should keep an Injector.
func Inject(pod *corev1.Pod, namespaceLabels map[string]string, cfg Config) (*Result, error) {
	in, err := New(cfg)
	if err != nil {
		return nil, err
	}
	return in.Inject(pod, namespaceLabels)
}

// Inject decides whether pod joins the mesh and, if so, returns the injected
// pod and the JSON patch that produces it. namespaceLabels are the labels of
// the pod's namespace; pod.Namespace must be set (the admission request
// carries it when the pod does not). The input pod is not modified.
//
// A returned error is either a rejection (IsRejection: an annotation the
// user must fix, named in the message) or an internal failure.
func (in *Injector) Inject(pod *corev1.Pod, namespaceLabels map[string]string) (*Result, error) {
	cfg := in.cfg
	if pod == nil {
		return nil, errors.New("no pod to inject")
	}
	ns := pod.Namespace
	if ns == "" {
		return nil, errors.New("pod namespace is not set")
	}
	skip := func(reason SkipReason, format string, args ...any) (*Result, error) {
		return &Result{Skip: &Skip{Reason: reason, Message: fmt.Sprintf(format, args...)}}, nil
	}

	if ns == workload.KubeSystemNamespace || ns == cfg.ControlPlaneNamespace {
		return skip(SkipSystemNamespace, "namespace %s is never injected", ns)
	}
	// The same classification decides what ingest, the sidecar audit and
	// the xDS server make of the pod once it runs.
	wl := workload.Of(pod, namespaceLabels)
	if wl.Injected {
		return skip(SkipAlreadyInjected, "pod already has the weft proxy")
	}
	if wl.InvalidInject != "" {
		return nil, &AnnotationError{Annotation: meshv1alpha1.AnnotationInject, Value: wl.InvalidInject,
			Err: fmt.Errorf("not one of %s, %s, %s", meshv1alpha1.InjectTrue, meshv1alpha1.InjectFalse, meshv1alpha1.InjectGRPCAgent)}
	}
	switch wl.Reason {
	case workload.ReasonOptedOut:
		return skip(SkipOptedOut, "pod annotation %s=%s", meshv1alpha1.AnnotationInject, meshv1alpha1.InjectFalse)
	case workload.ReasonNotEnabled:
		return skip(SkipNotEnabled, "namespace %s is not labelled %s=%s and the pod has no %s annotation", ns, meshv1alpha1.LabelInject, meshv1alpha1.NamespaceInjectEnabled, meshv1alpha1.AnnotationInject)
	case workload.ReasonHostNetwork:
		return skip(SkipHostNetwork, "pod uses the host network: redirect rules would capture the node's traffic and the proxy's ports would clash between pods")
	}
	var mode Mode
	switch wl.Mode {
	case workload.ModeSidecar:
		mode = ModeNativeSidecar
		if !cfg.NativeSidecars {
			mode = ModeSidecar
		}
	case workload.ModeProxyless:
		mode = ModeGRPCAgent
	default:
		// Every reason for no mode is handled above.
		return nil, fmt.Errorf("pod %s/%s: no data plane (%s)", ns, pod.Name, wl.Reason)
	}

	o, err := parseOverrides(pod.Annotations, cfg)
	if err != nil {
		return nil, err
	}
	w := xdsNode{nodeID: wl.NodeID, namespace: ns, serviceAccount: wl.ServiceAccount, owner: workload.OwnerOf(pod)}
	if pod.Name == "" {
		w.nodeID = workload.NodeID("$("+EnvPodName+")", ns)
	}

	out := pod.DeepCopy()
	var status *Status
	var warnings []string
	if mode == ModeGRPCAgent {
		status, warnings, err = mutateGRPCAgent(out, cfg, o, w)
	} else {
		status, warnings, err = in.mutateSidecar(out, mode, o, w)
		if err == nil {
			warnings = append(warnings, scrapeAnnotations(out)...)
		}
	}
	if err != nil {
		return nil, err
	}
	if err := record(out, status); err != nil {
		return nil, err
	}
	patch, err := createPatch(pod, out)
	if err != nil {
		return nil, err
	}
	return &Result{Mode: mode, Pod: out, Patch: patch, Status: status, Warnings: warnings}, nil
}

// Prometheus' conventional scrape annotations, which the common
// kubernetes-pods scrape job follows.
const (
	AnnotationPrometheusScrape = "prometheus.io/scrape"
	AnnotationPrometheusPort   = "prometheus.io/port"
	AnnotationPrometheusPath   = "prometheus.io/path"
)

// scrapeAnnotations points Prometheus at the proxy's statistics (port
// StatsPort, PrometheusStatsPath) unless the pod already uses the
// annotations for its own metrics, which they are left to; the warning
// says how the proxy's are scraped then (the PodMonitor in config/monitoring).
func scrapeAnnotations(pod *corev1.Pod) []string {
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	for _, k := range []string{AnnotationPrometheusScrape, AnnotationPrometheusPort, AnnotationPrometheusPath} {
		if _, ok := pod.Annotations[k]; ok {
			return []string{fmt.Sprintf("the pod sets %s for its own metrics, so the proxy's (port %d, %s) are not announced by annotation; scrape them with the weft-proxies PodMonitor or a job of your own", k, StatsPort, PrometheusStatsPath)}
		}
	}
	pod.Annotations[AnnotationPrometheusScrape] = "true"
	pod.Annotations[AnnotationPrometheusPort] = strconv.Itoa(StatsPort)
	pod.Annotations[AnnotationPrometheusPath] = PrometheusStatsPath
	return nil
}

// record writes the status annotation and the proxy version.
func record(pod *corev1.Pod, status *Status) error {
	raw, err := json.Marshal(status)
	if err != nil {
		return fmt.Errorf("marshal status: %w", err)
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[meshv1alpha1.AnnotationStatus] = string(raw)
	pod.Annotations[meshv1alpha1.AnnotationProxyVersion] = status.Version
	// A label makes stale pods selectable (kubectl get pods -l
	// 'weft.dev/proxy-version!=v1.2.0'), but only some versions are valid
	// label values; the annotation always has it.
	if len(validation.IsValidLabelValue(status.Version)) == 0 {
		if pod.Labels == nil {
			pod.Labels = map[string]string{}
		}
		pod.Labels[meshv1alpha1.LabelProxyVersion] = status.Version
	}
	return nil
}

// createPatch diffs the two pods' JSON. The diff library walks maps in
// random order, so the operations are sorted afterwards: the patch for a pod
// is then byte-for-byte stable. The order keeps the patch valid: operations
// on different keys commute, additions to an array are by ascending index
// and removals by descending index, as the library emits them.
func createPatch(orig, mutated *corev1.Pod) ([]jsonpatch.Operation, error) {
	a, err := json.Marshal(orig)
	if err != nil {
		return nil, fmt.Errorf("marshal pod: %w", err)
	}
	b, err := json.Marshal(mutated)
	if err != nil {
		return nil, fmt.Errorf("marshal injected pod: %w", err)
	}
	ops, err := jsonpatch.CreatePatch(a, b)
	if err != nil {
		return nil, fmt.Errorf("create patch: %w", err)
	}
	slices.SortStableFunc(ops, comparePatchOps)
	return ops, nil
}

func comparePatchOps(a, b jsonpatch.Operation) int {
	as, bs := strings.Split(a.Path, "/"), strings.Split(b.Path, "/")
	for i := range min(len(as), len(bs)) {
		if as[i] == bs[i] {
			continue
		}
		an, aerr := strconv.Atoi(as[i])
		bn, berr := strconv.Atoi(bs[i])
		if aerr != nil || berr != nil {
			return strings.Compare(as[i], bs[i])
		}
		if a.Operation == "remove" && b.Operation == "remove" && i == len(as)-1 && i == len(bs)-1 {
			return cmp.Compare(bn, an)
		}
		return cmp.Compare(an, bn)
	}
	return cmp.Compare(len(as), len(bs))
}
