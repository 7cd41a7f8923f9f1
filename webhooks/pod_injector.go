package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/inject"
)

// InjectPath is where the API server sends pod admission requests.
const InjectPath = "/inject-weft-dev-v1-pod"

// EventRecorderName is the reporting controller of injection events.
const EventRecorderName = meshv1alpha1.InjectorName

// Event reasons and actions.
const (
	ReasonInjected = "Injected"
	actionInject   = "Inject"
)

// Two webhook entries share the handler. The first covers namespaces
// labelled weft.dev/inject=enabled and leaves out opted-out pods before they
// reach the webhook; the second covers every other namespace but only pods
// that opt in by annotation. Both leave out host-network pods, which share
// the node's network and are never injected. Both exclude kube-system and the
// control plane's namespace, so failurePolicy=fail can only ever block pods
// that asked for the mesh. kube-system and weft-system are the defaults;
// deployments in another control-plane namespace patch the selectors.
//
// +kubebuilder:webhook:path=/inject-weft-dev-v1-pod,mutating=true,failurePolicy=fail,sideEffects=None,timeoutSeconds=5,admissionReviewVersions=v1,matchPolicy=Equivalent,groups="",resources=pods,verbs=create,versions=v1,name=namespace.inject.weft.dev,patch=`{"namespaceSelector":{"matchExpressions":[{"key":"weft.dev/inject","operator":"In","values":["enabled"]},{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["kube-system","weft-system"]}]},"matchConditions":[{"name":"not-opted-out","expression":"!has(object.metadata.annotations) || !('weft.dev/inject' in object.metadata.annotations) || object.metadata.annotations['weft.dev/inject'] != 'false'"},{"name":"not-host-network","expression":"!has(object.spec.hostNetwork) || !object.spec.hostNetwork"}]}`
// +kubebuilder:webhook:path=/inject-weft-dev-v1-pod,mutating=true,failurePolicy=fail,sideEffects=None,timeoutSeconds=5,admissionReviewVersions=v1,matchPolicy=Equivalent,groups="",resources=pods,verbs=create,versions=v1,name=pod.inject.weft.dev,patch=`{"namespaceSelector":{"matchExpressions":[{"key":"weft.dev/inject","operator":"NotIn","values":["enabled"]},{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["kube-system","weft-system"]}]},"matchConditions":[{"name":"opted-in","expression":"has(object.metadata.annotations) && 'weft.dev/inject' in object.metadata.annotations && object.metadata.annotations['weft.dev/inject'] in ['true', 'grpc-agent']"},{"name":"not-host-network","expression":"!has(object.spec.hostNetwork) || !object.spec.hostNetwork"}]}`
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// PodInjector is the admission handler for Pod CREATE.
type PodInjector struct {
	// Injector decides and builds the patch.
	Injector *inject.Injector
	// Namespaces reads namespace labels, normally from the manager's cache.
	Namespaces client.Reader
	// APIReader is asked when the cache does not know a namespace yet (one
	// created a moment ago). May be nil.
	APIReader client.Reader
	// Decoder decodes the pod in the request.
	Decoder admission.Decoder
	// Recorder records an Injected event per injected pod. May be nil.
	Recorder events.EventRecorder
}

var _ admission.Handler = (*PodInjector)(nil)

// SetupWithManager builds the injector from cfg and registers it on the
// manager's webhook server at InjectPath.
func SetupWithManager(mgr ctrl.Manager, cfg inject.Config) error {
	in, err := inject.New(cfg)
	if err != nil {
		return err
	}
	h := &PodInjector{
		Injector:   in,
		Namespaces: mgr.GetClient(),
		APIReader:  mgr.GetAPIReader(),
		Decoder:    admission.NewDecoder(mgr.GetScheme()),
		Recorder:   mgr.GetEventRecorder(EventRecorderName),
	}
	mgr.GetWebhookServer().Register(InjectPath, &admission.Webhook{Handler: h, RecoverPanic: ptr.To(true)})
	return nil
}

// ServerSupportsNativeSidecars asks the API server for its version and
// reports whether it runs native sidecars, for inject.Config.NativeSidecars.
func ServerSupportsNativeSidecars(cfg *rest.Config) (bool, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return false, fmt.Errorf("discovery client: %w", err)
	}
	info, err := dc.ServerVersion()
	if err != nil {
		return false, fmt.Errorf("api server version: %w", err)
	}
	return inject.SupportsNativeSidecars(info.GitVersion)
}

// Handle injects the pod in req, or explains why not.
func (h *PodInjector) Handle(ctx context.Context, req admission.Request) admission.Response {
	log := ctrl.LoggerFrom(ctx)
	if h.Injector == nil || h.Namespaces == nil || h.Decoder == nil {
		return admission.Errored(http.StatusInternalServerError, errIncomplete)
	}
	if req.Operation != admissionv1.Create {
		return admission.Allowed("pods are injected on create only")
	}
	pod := &corev1.Pod{}
	if err := h.Decoder.Decode(req, pod); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode pod: %w", err))
	}
	// The pod's own namespace field is optional on create; the request's is not.
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	nsLabels, err := h.namespaceLabels(ctx, pod.Namespace)
	if err != nil {
		log.Error(err, "reading namespace labels failed", "namespace", pod.Namespace)
		return admission.Errored(http.StatusInternalServerError, err)
	}

	res, err := h.Injector.Inject(pod, nsLabels)
	switch {
	case inject.IsRejection(err):
		return admission.Denied(err.Error())
	case err != nil:
		log.Error(err, "injection failed", "namespace", pod.Namespace, "pod", podName(pod))
		return admission.Errored(http.StatusInternalServerError, err)
	case res.Skip != nil:
		log.V(1).Info("pod not injected", "namespace", pod.Namespace, "pod", podName(pod), "reason", res.Skip.Reason)
		resp := admission.Allowed(fmt.Sprintf("not injected (%s): %s", res.Skip.Reason, res.Skip.Message))
		// Say so when the pod asked for the mesh and did not get it.
		if res.Skip.Reason == inject.SkipHostNetwork || res.Skip.Reason == inject.SkipSystemNamespace {
			resp = resp.WithWarnings("weft: pod not injected: " + res.Skip.Message)
		}
		return resp
	}

	version := res.Status.Version
	log.Info("injected pod", "namespace", pod.Namespace, "pod", podName(pod), "mode", res.Mode, "version", version)
	if !ptr.Deref(req.DryRun, false) {
		h.recordInjected(ctx, pod, res, version)
	}
	warnings := make([]string, len(res.Warnings))
	for i, w := range res.Warnings {
		warnings[i] = "weft: " + w
	}
	return admission.Patched(fmt.Sprintf("injected weft %s (%s)", version, res.Mode), res.Patch...).WithWarnings(warnings...)
}

func (h *PodInjector) namespaceLabels(ctx context.Context, name string) (map[string]string, error) {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	err := h.Namespaces.Get(ctx, types.NamespacedName{Name: name}, ns)
	if apierrors.IsNotFound(err) && h.APIReader != nil {
		err = h.APIReader.Get(ctx, types.NamespacedName{Name: name}, ns)
	}
	if err != nil {
		return nil, fmt.Errorf("get namespace %s: %w", name, err)
	}
	return ns.Labels, nil
}

// recordInjected records the Injected event. A pod created from a
// generateName has no name yet during admission, so an event about it
// could never be found; the event then goes to the pod's controller (a
// ReplicaSet, Job, StatefulSet...), where `kubectl describe` shows it.
func (h *PodInjector) recordInjected(ctx context.Context, pod *corev1.Pod, res *inject.Result, version string) {
	if h.Recorder == nil {
		return
	}
	var regarding runtime.Object = pod
	note := fmt.Sprintf("injected weft %s (%s)", version, res.Mode)
	if pod.Name == "" {
		owner := metav1.GetControllerOfNoCopy(pod)
		if owner == nil {
			ctrl.LoggerFrom(ctx).V(1).Info("no object to record the injection on", "namespace", pod.Namespace, "generateName", pod.GenerateName)
			return
		}
		ref := &metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{APIVersion: owner.APIVersion, Kind: owner.Kind},
			ObjectMeta: metav1.ObjectMeta{Name: owner.Name, Namespace: pod.Namespace, UID: owner.UID},
		}
		regarding = ref
		note = fmt.Sprintf("injected weft %s (%s) into a new pod %s*", version, res.Mode, pod.GenerateName)
	}
	h.Recorder.Eventf(regarding, nil, corev1.EventTypeNormal, ReasonInjected, actionInject, "%s", note)
}

func podName(pod *corev1.Pod) string {
	if pod.Name != "" {
		return pod.Name
	}
	return pod.GenerateName + "*"
}

// errIncomplete guards against a PodInjector built without SetupWithManager.
var errIncomplete = errors.New("pod injector is missing its injector, namespace reader or decoder")
