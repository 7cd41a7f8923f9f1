package workload

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/identity"
)

// Mode is the data plane a pod has, or asks for.
type Mode string

const (
	// ModeNone: the pod is not in the mesh.
	ModeNone Mode = ""
	// ModeSidecar: an Envoy proxy runs beside the application (as a native
	// sidecar or as a regular container).
	ModeSidecar Mode = "Sidecar"
	// ModeProxyless: no proxy; the application's gRPC library talks xDS
	// itself (weft.dev/inject: grpc-agent).
	ModeProxyless Mode = "Proxyless"
)

// Reason names the rule that decided a pod's Mode.
type Reason string

const (
	// ReasonSystemNamespace: the pod is in kube-system, which is never meshed.
	ReasonSystemNamespace Reason = "SystemNamespace"
	// ReasonInjected: the injector already changed the pod.
	ReasonInjected Reason = "Injected"
	// ReasonOptedOut: the pod is annotated weft.dev/inject: "false".
	ReasonOptedOut Reason = "OptedOut"
	// ReasonPodAnnotation: the pod is annotated weft.dev/inject: "true" or
	// "grpc-agent".
	ReasonPodAnnotation Reason = "PodAnnotation"
	// ReasonNamespaceLabel: the pod's namespace is labelled
	// weft.dev/inject=enabled.
	ReasonNamespaceLabel Reason = "NamespaceLabel"
	// ReasonHostNetwork: the pod asks for the mesh but shares the node's
	// network namespace, where redirect rules would capture the node's
	// traffic and proxy ports would clash between pods.
	ReasonHostNetwork Reason = "HostNetwork"
	// ReasonNotEnabled: nothing asks for the mesh.
	ReasonNotEnabled Reason = "NotEnabled"
)

// KubeSystemNamespace is never meshed: its pods run the cluster, and a
// proxy that fails there takes the cluster down with it.
const KubeSystemNamespace = "kube-system"

// ProxyContainerName is the container (or native sidecar) that runs Envoy.
// A pod that has one went through the injector, or was given a proxy by
// hand; either way it must not be injected again.
const ProxyContainerName = "weft-proxy"

// Workload is what Weft makes of one pod.
type Workload struct {
	// Meshed is true when the pod is in the mesh now: Mode is not ModeNone
	// and the pod has not finished. Pods that are shutting down stay meshed
	// while they drain.
	Meshed bool
	// Mode is the data plane the pod has or asks for, whatever its phase,
	// so the injector can decide before the pod runs.
	Mode Mode
	// Reason is the rule that decided Mode.
	Reason Reason
	// Injected is true when the pod carries weft.dev/status or a weft-proxy
	// container.
	Injected bool
	// InvalidInject is set when weft.dev/inject has a value other than
	// "true", "false" and "grpc-agent"; it is that value. The injector
	// refuses such pods; for a pod that exists anyway (created before its
	// namespace was labelled) the namespace label decides, as if the
	// annotation were absent.
	InvalidInject string
	// ProxyVersion is the version the pod was injected with (the
	// weft.dev/proxy-version annotation, else the version in
	// weft.dev/status); empty when not known.
	ProxyVersion string

	// Namespace is the pod's namespace.
	Namespace string
	// NodeID is the xDS node ID of the pod's proxy or gRPC client; empty
	// while the pod has no name yet (during admission of a pod created
	// from generateName).
	NodeID string
	// ServiceAccount is the pod's service account, "default" when unset.
	ServiceAccount string
}

// Of classifies pod. namespaceLabels are the labels of the pod's namespace
// (nil when it is not known, as while the namespace is being deleted).
// pod.Namespace must be set.
func Of(pod *corev1.Pod, namespaceLabels map[string]string) Workload {
	w := Workload{
		Injected:       Injected(pod),
		Namespace:      pod.Namespace,
		ServiceAccount: ServiceAccount(pod),
	}
	if pod.Name != "" {
		w.NodeID = NodeID(pod.Name, pod.Namespace)
	}
	status := readStatus(pod)
	w.ProxyVersion = cmp.Or(pod.Annotations[meshv1alpha1.AnnotationProxyVersion], status.Version)

	value, annotated := pod.Annotations[meshv1alpha1.AnnotationInject]
	switch value {
	case meshv1alpha1.InjectTrue, meshv1alpha1.InjectFalse, meshv1alpha1.InjectGRPCAgent:
	default:
		if annotated {
			w.InvalidInject = value
		}
	}
	hostNetwork := pod.Spec.HostNetwork

	var mode Mode
	switch {
	case pod.Namespace == KubeSystemNamespace:
		w.Reason = ReasonSystemNamespace
	case w.Injected:
		w.Reason = ReasonInjected
		mode = injectedMode(pod, status.Mode)
	case value == meshv1alpha1.InjectFalse:
		w.Reason = ReasonOptedOut
	case value == meshv1alpha1.InjectTrue:
		w.Reason, mode = ReasonPodAnnotation, ModeSidecar
	case value == meshv1alpha1.InjectGRPCAgent:
		w.Reason, mode = ReasonPodAnnotation, ModeProxyless
	case NamespaceMeshed(namespaceLabels):
		w.Reason, mode = ReasonNamespaceLabel, ModeSidecar
	default:
		w.Reason = ReasonNotEnabled
	}
	if mode != ModeNone && hostNetwork {
		w.Reason, mode = ReasonHostNetwork, ModeNone
	}
	w.Mode = mode
	w.Meshed = mode != ModeNone && !Finished(pod)
	return w
}

// SpiffeID is the workload's identity in trustDomain, which must not be empty.
func (w Workload) SpiffeID(trustDomain string) string {
	return identity.SpiffeID(trustDomain, w.Namespace, w.ServiceAccount)
}

// NamespaceMeshed reports whether a namespace's labels mesh its pods.
func NamespaceMeshed(namespaceLabels map[string]string) bool {
	return namespaceLabels[meshv1alpha1.LabelInject] == meshv1alpha1.NamespaceInjectEnabled
}

// NodeID is the xDS node ID of a pod's proxy or gRPC client:
// <pod>.<namespace>. The xDS server splits it at the last dot, which a
// namespace (a DNS label) never contains.
func NodeID(podName, namespace string) string { return podName + "." + namespace }

// ServiceAccount is the service account a pod runs as: the API server
// fills in "default" when the pod names none, and so does this.
func ServiceAccount(pod *corev1.Pod) string {
	return cmp.Or(pod.Spec.ServiceAccountName, "default")
}

// Injected reports whether the pod went through the injector (or someone
// added a proxy by hand): it carries weft.dev/status or a weft-proxy
// container.
func Injected(pod *corev1.Pod) bool {
	_, recorded := pod.Annotations[meshv1alpha1.AnnotationStatus]
	return recorded || hasProxy(pod)
}

func hasProxy(pod *corev1.Pod) bool {
	named := func(c corev1.Container) bool { return c.Name == ProxyContainerName }
	return slices.ContainsFunc(pod.Spec.Containers, named) || slices.ContainsFunc(pod.Spec.InitContainers, named)
}

// Finished reports whether the pod's containers have all ended for good:
// it runs nothing, so it needs neither configuration nor an identity.
func Finished(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// status is the part of the injector's weft.dev/status record this package
// reads (internal/inject writes it; its tests check the two agree).
type status struct {
	Version string `json:"version"`
	Mode    string `json:"mode"`
}

func readStatus(pod *corev1.Pod) status {
	var st status
	if raw, ok := pod.Annotations[meshv1alpha1.AnnotationStatus]; ok {
		// A record that does not parse leaves the other signals to decide.
		_ = json.Unmarshal([]byte(raw), &st)
	}
	return st
}

// injectedMode is the data plane of an injected pod. What the injector
// recorded wins over the weft.dev/inject annotation, which may have been
// edited since: the pod keeps what it was given until it is recreated.
func injectedMode(pod *corev1.Pod, recorded string) Mode {
	switch recorded {
	case meshv1alpha1.InjectGRPCAgent:
		return ModeProxyless
	case "":
	default:
		return ModeSidecar
	}
	if hasProxy(pod) {
		return ModeSidecar
	}
	if pod.Annotations[meshv1alpha1.AnnotationInject] == meshv1alpha1.InjectGRPCAgent {
		return ModeProxyless
	}
	return ModeSidecar
}

// Owner is the workload a pod belongs to, as users name it: the
// Deployment (or Argo Rollouts Rollout) behind a ReplicaSet's pods, the
// StatefulSet, DaemonSet, Job or other controller, or the pod itself.
type Owner struct {
	Kind string
	Name string
	// Revision is the pod template hash of a Deployment's or Rollout's
	// pods, which tells a canary's pods from the stable ones; empty for
	// other workloads.
	Revision string
}

// pod-template-hash labels: Kubernetes' ReplicaSets under a Deployment, and
// Argo Rollouts' under a Rollout.
var templateHashLabels = []string{"pod-template-hash", "rollouts-pod-template-hash"}

// OwnerOf names the workload of pod from its controller reference, read at
// admission as well as later: a ReplicaSet named <name>-<hash> whose pods
// carry that hash belongs to Deployment (or Rollout) <name>. A pod without
// a controller is its own workload.
func OwnerOf(pod *corev1.Pod) Owner {
	var ref *metav1.OwnerReference
	for i := range pod.OwnerReferences {
		if r := &pod.OwnerReferences[i]; r.Controller != nil && *r.Controller {
			ref = r
			break
		}
	}
	if ref == nil {
		name := pod.Name
		if name == "" {
			name = strings.TrimSuffix(pod.GenerateName, "-")
		}
		return Owner{Kind: "Pod", Name: name}
	}
	if ref.Kind == "ReplicaSet" {
		for _, l := range templateHashLabels {
			if hash := pod.Labels[l]; hash != "" {
				if name, ok := strings.CutSuffix(ref.Name, "-"+hash); ok && name != "" {
					kind := "Deployment"
					if l == "rollouts-pod-template-hash" {
						kind = "Rollout"
					}
					return Owner{Kind: kind, Name: name, Revision: hash}
				}
			}
		}
	}
	return Owner{Kind: ref.Kind, Name: ref.Name}
}

// RestartHint tells how to recreate the pod, naming its workload when the
// owner reference says which it is.
func RestartHint(pod *corev1.Pod) string {
	owner := metav1.GetControllerOfNoCopy(pod)
	if owner == nil {
		return fmt.Sprintf("delete and recreate the pod (kubectl delete pod %s -n %s, then apply it again)", pod.Name, pod.Namespace)
	}
	kind, name := owner.Kind, owner.Name
	// A Deployment's ReplicaSet is named <deployment>-<pod-template-hash>.
	if hash := pod.Labels["pod-template-hash"]; kind == "ReplicaSet" && hash != "" && strings.HasSuffix(name, "-"+hash) {
		kind, name = "Deployment", strings.TrimSuffix(name, "-"+hash)
	}
	switch kind {
	case "Deployment", "StatefulSet", "DaemonSet":
		return fmt.Sprintf("restart its workload: kubectl rollout restart %s/%s -n %s", strings.ToLower(kind), name, pod.Namespace)
	}
	return fmt.Sprintf("recreate it through its %s %s (deleting the pod lets the %s replace it)", kind, name, kind)
}
