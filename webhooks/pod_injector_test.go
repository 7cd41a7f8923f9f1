package webhooks

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/inject"
	"github.com/weft-mesh/weft/internal/workload"
)

func testInjector(t *testing.T) *inject.Injector {
	t.Helper()
	cfg := inject.DefaultConfig()
	cfg.ProxyImage = "example.com/weft/proxy:v0.1.0"
	cfg.InitImage = "example.com/weft/init:v0.1.0"
	cfg.ProxyVersion = "v0.1.0"
	in, err := inject.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

var meshed = map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}

type harness struct {
	handler  *PodInjector
	recorder *events.FakeRecorder
}

func newHarness(t *testing.T, cached []client.Object, live ...client.Object) *harness {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	rec := events.NewFakeRecorder(10)
	rec.Verbose = true
	h := &PodInjector{
		Injector:   testInjector(t),
		Namespaces: fake.NewClientBuilder().WithScheme(scheme).WithObjects(cached...).Build(),
		Decoder:    admission.NewDecoder(scheme),
		Recorder:   rec,
	}
	if len(live) > 0 {
		h.APIReader = fake.NewClientBuilder().WithScheme(scheme).WithObjects(live...).Build()
	}
	return &harness{handler: h, recorder: rec}
}

func appPod(mutate ...func(*corev1.Pod)) *corev1.Pod {
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "cart-7d9f8", Namespace: "shop"},
		Spec: corev1.PodSpec{
			ServiceAccountName: "cart",
			Containers:         []corev1.Container{{Name: "cart", Image: "example.com/shop/cart:1.4.2"}},
		},
	}
	for _, m := range mutate {
		m(pod)
	}
	return pod
}

func request(t *testing.T, pod *corev1.Pod, op admissionv1.Operation) admission.Request {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	ns := pod.Namespace
	if ns == "" {
		ns = "shop"
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       types.UID("req-1"),
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: ns,
		Name:      pod.Name,
		Operation: op,
		Object:    runtime.RawExtension{Raw: raw},
	}}
}

// applyResponse applies the response's patch to the request's pod, as the
// API server would.
func applyResponse(t *testing.T, req admission.Request, resp admission.Response) *corev1.Pod {
	t.Helper()
	if err := resp.Complete(req); err != nil {
		t.Fatal(err)
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type %v, want JSONPatch", resp.PatchType)
	}
	p, err := jsonpatchapply.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := p.Apply(req.Object.Raw)
	if err != nil {
		t.Fatalf("patch does not apply to the submitted pod: %v", err)
	}
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		t.Fatal(err)
	}
	return &pod
}

func recorded(r *events.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-r.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func TestInjectsPodInMeshedNamespace(t *testing.T) {
	h := newHarness(t, []client.Object{namespace("shop", meshed)})
	req := request(t, appPod(), admissionv1.Create)
	resp := h.handler.Handle(t.Context(), req)
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("response %+v, want allowed with a patch", resp.AdmissionResponse)
	}
	pod := applyResponse(t, req, resp)
	if len(pod.Spec.InitContainers) != 2 || pod.Spec.InitContainers[0].Name != inject.InitContainerName || pod.Spec.InitContainers[1].Name != inject.ProxyContainerName {
		t.Errorf("init containers after patch: %+v", pod.Spec.InitContainers)
	}
	if pod.Annotations[meshv1alpha1.AnnotationStatus] == "" {
		t.Error("no status annotation after patch")
	}

	// The handler returns exactly what the pure injector computes.
	want, err := h.handler.Injector.Inject(appPod(), meshed)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(resp.Patches)
	wantJSON, _ := json.Marshal(want.Patch)
	if string(got) != string(wantJSON) {
		t.Errorf("handler patch differs from inject.Inject's")
	}

	evs := recorded(h.recorder)
	if len(evs) != 1 || !strings.HasPrefix(evs[0], "Normal Injected Inject injected weft v0.1.0 (native-sidecar)") || !strings.Contains(evs[0], "kind=Pod") {
		t.Errorf("events %q, want one Injected event on the pod", evs)
	}
}

func TestEventForGeneratedNameGoesToOwner(t *testing.T) {
	h := newHarness(t, []client.Object{namespace("shop", meshed)})
	pod := appPod(func(p *corev1.Pod) {
		p.Name = ""
		p.GenerateName = "cart-7d9f8b6c4-"
		p.OwnerReferences = []metav1.OwnerReference{{
			APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "cart-7d9f8b6c4", UID: "6b1c", Controller: ptr.To(true),
		}}
	})
	req := request(t, pod, admissionv1.Create)
	resp := h.handler.Handle(t.Context(), req)
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("response %+v, want allowed with a patch", resp.AdmissionResponse)
	}
	evs := recorded(h.recorder)
	if len(evs) != 1 || !strings.Contains(evs[0], "into a new pod cart-7d9f8b6c4-*") || !strings.Contains(evs[0], "kind=ReplicaSet,apiVersion=apps/v1") {
		t.Errorf("events %q, want one Injected event on the ReplicaSet", evs)
	}

	// Without an owner there is nothing to attach the event to; injection
	// still happens.
	pod.OwnerReferences = nil
	req = request(t, pod, admissionv1.Create)
	resp = h.handler.Handle(t.Context(), req)
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("response %+v, want allowed with a patch", resp.AdmissionResponse)
	}
	if evs := recorded(h.recorder); len(evs) != 0 {
		t.Errorf("events %q, want none for an ownerless generated pod", evs)
	}
}

func TestRejectsBadAnnotation(t *testing.T) {
	h := newHarness(t, []client.Object{namespace("shop", meshed)})
	pod := appPod(func(p *corev1.Pod) {
		p.Annotations = map[string]string{meshv1alpha1.AnnotationExcludeOutboundPorts: "5432,postgres"}
	})
	resp := h.handler.Handle(t.Context(), request(t, pod, admissionv1.Create))
	if resp.Allowed {
		t.Fatal("allowed, want denied")
	}
	if resp.Result.Code != http.StatusForbidden || !strings.Contains(resp.Result.Message, meshv1alpha1.AnnotationExcludeOutboundPorts) || !strings.Contains(resp.Result.Message, `"postgres"`) {
		t.Errorf("result %+v, want 403 naming the annotation and the bad entry", resp.Result)
	}
	if evs := recorded(h.recorder); len(evs) != 0 {
		t.Errorf("events %q for a rejected pod", evs)
	}
}

func TestSkipsExplainThemselves(t *testing.T) {
	h := newHarness(t, []client.Object{namespace("shop", meshed), namespace("kube-system", meshed)})
	for _, tc := range []struct {
		name        string
		pod         *corev1.Pod
		reason      inject.SkipReason
		wantWarning bool
	}{
		{"host network", appPod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), inject.SkipHostNetwork, true},
		{"system namespace", appPod(func(p *corev1.Pod) { p.Namespace = "kube-system" }), inject.SkipSystemNamespace, true},
		{"opted out", appPod(func(p *corev1.Pod) { p.Annotations = map[string]string{meshv1alpha1.AnnotationInject: "false"} }), inject.SkipOptedOut, false},
		{"already injected", appPod(func(p *corev1.Pod) { p.Annotations = map[string]string{meshv1alpha1.AnnotationStatus: "{}"} }), inject.SkipAlreadyInjected, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := h.handler.Handle(t.Context(), request(t, tc.pod, admissionv1.Create))
			if !resp.Allowed || len(resp.Patches) != 0 {
				t.Fatalf("response %+v, want allowed without a patch", resp.AdmissionResponse)
			}
			if !strings.Contains(resp.Result.Message, string(tc.reason)) {
				t.Errorf("message %q, want it to give the reason %s", resp.Result.Message, tc.reason)
			}
			if got := len(resp.Warnings) > 0; got != tc.wantWarning {
				t.Errorf("warnings %q, want warning=%v", resp.Warnings, tc.wantWarning)
			}
			if evs := recorded(h.recorder); len(evs) != 0 {
				t.Errorf("events %q for a skipped pod", evs)
			}
		})
	}
}

func TestInjectionWarningsReachTheUser(t *testing.T) {
	h := newHarness(t, []client.Object{namespace("shop", nil)})
	pod := appPod(func(p *corev1.Pod) {
		p.Annotations = map[string]string{meshv1alpha1.AnnotationInject: meshv1alpha1.InjectGRPCAgent, meshv1alpha1.AnnotationProxyMemory: "1Gi"}
	})
	resp := h.handler.Handle(t.Context(), request(t, pod, admissionv1.Create))
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("response %+v, want allowed with a patch", resp.AdmissionResponse)
	}
	if len(resp.Warnings) != 1 || !strings.HasPrefix(resp.Warnings[0], "weft: ") || !strings.Contains(resp.Warnings[0], meshv1alpha1.AnnotationProxyMemory) {
		t.Errorf("warnings %q, want one about %s", resp.Warnings, meshv1alpha1.AnnotationProxyMemory)
	}
}

func TestNamespaceComesFromRequest(t *testing.T) {
	h := newHarness(t, []client.Object{namespace("shop", meshed)})
	pod := appPod(func(p *corev1.Pod) { p.Namespace = "" })
	req := request(t, pod, admissionv1.Create)
	resp := h.handler.Handle(t.Context(), req)
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("response %+v, want allowed with a patch", resp.AdmissionResponse)
	}
	patched := applyResponse(t, req, resp)
	if patched.Namespace != "" {
		t.Errorf("patch set the namespace to %q; the API server fills it in", patched.Namespace)
	}
}

func TestNewNamespaceMissingFromCache(t *testing.T) {
	h := newHarness(t, nil, namespace("shop", meshed))
	resp := h.handler.Handle(t.Context(), request(t, appPod(), admissionv1.Create))
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("response %+v, want the namespace read from the API server and the pod injected", resp.AdmissionResponse)
	}

	h = newHarness(t, nil)
	resp = h.handler.Handle(t.Context(), request(t, appPod(), admissionv1.Create))
	if resp.Allowed || resp.Result.Code != http.StatusInternalServerError || !strings.Contains(resp.Result.Message, "namespace shop") {
		t.Errorf("response %+v, want an error naming the unknown namespace", resp.AdmissionResponse)
	}
}

func TestOnlyCreateIsInjected(t *testing.T) {
	h := newHarness(t, []client.Object{namespace("shop", meshed)})
	resp := h.handler.Handle(t.Context(), request(t, appPod(), admissionv1.Update))
	if !resp.Allowed || len(resp.Patches) != 0 {
		t.Errorf("update: %+v, want allowed untouched", resp.AdmissionResponse)
	}
}

func TestDryRunRecordsNoEvent(t *testing.T) {
	h := newHarness(t, []client.Object{namespace("shop", meshed)})
	req := request(t, appPod(), admissionv1.Create)
	req.DryRun = ptr.To(true)
	resp := h.handler.Handle(t.Context(), req)
	if !resp.Allowed || len(resp.Patches) == 0 {
		t.Fatalf("response %+v, want the same patch as a real create", resp.AdmissionResponse)
	}
	if evs := recorded(h.recorder); len(evs) != 0 {
		t.Errorf("events %q on a dry run (the webhook declares sideEffects=None)", evs)
	}
}

func TestBadRequestObject(t *testing.T) {
	h := newHarness(t, []client.Object{namespace("shop", meshed)})
	req := request(t, appPod(), admissionv1.Create)
	req.Object.Raw = []byte(`{"apiVersion":"v1","kind":"Pod","spec":`)
	resp := h.handler.Handle(t.Context(), req)
	if resp.Allowed || resp.Result.Code != http.StatusBadRequest {
		t.Errorf("response %+v, want 400", resp.AdmissionResponse)
	}
}

// What the webhook admits must be what the rest of Weft then sees: a pod
// the classification meshes comes out injected with its data plane, any
// other pod comes out unchanged.
func TestAdmittedPodsMatchTheirClassification(t *testing.T) {
	h := newHarness(t, []client.Object{namespace("shop", meshed), namespace("plain", nil)})
	inNS := func(ns string, mutate ...func(*corev1.Pod)) *corev1.Pod {
		return appPod(append([]func(*corev1.Pod){func(p *corev1.Pod) { p.Namespace = ns }}, mutate...)...)
	}
	annotate := func(v string) func(*corev1.Pod) {
		return func(p *corev1.Pod) { p.Annotations = map[string]string{meshv1alpha1.AnnotationInject: v} }
	}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
	}{
		{"meshed namespace", inNS("shop")},
		{"opted out", inNS("shop", annotate(meshv1alpha1.InjectFalse))},
		{"grpc-agent in a meshed namespace", inNS("shop", annotate(meshv1alpha1.InjectGRPCAgent))},
		{"host network", inNS("shop", func(p *corev1.Pod) { p.Spec.HostNetwork = true })},
		{"plain namespace", inNS("plain")},
		{"opted in", inNS("plain", annotate(meshv1alpha1.InjectTrue))},
		{"grpc-agent", inNS("plain", annotate(meshv1alpha1.InjectGRPCAgent))},
		{"generateName", inNS("shop", func(p *corev1.Pod) { p.Name, p.GenerateName = "", "cart-" })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nsLabels := map[string]string(nil)
			if tc.pod.Namespace == "shop" {
				nsLabels = meshed
			}
			before := workload.Of(tc.pod, nsLabels)
			req := request(t, tc.pod, admissionv1.Create)
			resp := h.handler.Handle(t.Context(), req)
			if !resp.Allowed {
				t.Fatalf("denied: %+v", resp.Result)
			}
			if !before.Meshed {
				if len(resp.Patches) != 0 {
					t.Errorf("pod classified %s was patched", before.Reason)
				}
				return
			}
			after := workload.Of(applyResponse(t, req, resp), nsLabels)
			if !after.Injected || !after.Meshed || after.Mode != before.Mode {
				t.Errorf("classified %s (%s) before admission, injected %v meshed %v %s after", before.Mode, before.Reason, after.Injected, after.Meshed, after.Mode)
			}
		})
	}
}
