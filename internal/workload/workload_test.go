package workload_test

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/workload"
)

var enabled = map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}

func pod(ns string, edit ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "cart-1", Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, e := range edit {
		e(p)
	}
	return p
}

func annotated(kv ...string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			p.Annotations[kv[i]] = kv[i+1]
		}
	}
}

func hostNetwork(p *corev1.Pod) { p.Spec.HostNetwork = true }

func phase(ph corev1.PodPhase) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Status.Phase = ph }
}

func proxyContainer(p *corev1.Pod) {
	p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: workload.ProxyContainerName})
}

func injected(mode string) func(*corev1.Pod) {
	return annotated(meshv1alpha1.AnnotationStatus, `{"version":"v1.2.0","mode":"`+mode+`"}`)
}

func TestOf(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pod      *corev1.Pod
		nsLabels map[string]string
		meshed   bool
		mode     workload.Mode
		reason   workload.Reason
	}{
		{"meshed namespace", pod("shop"), enabled, true, workload.ModeSidecar, workload.ReasonNamespaceLabel},
		{"plain namespace", pod("shop"), nil, false, workload.ModeNone, workload.ReasonNotEnabled},
		{"namespace label with another value", pod("shop"), map[string]string{meshv1alpha1.LabelInject: "true"}, false, workload.ModeNone, workload.ReasonNotEnabled},
		{"opted in", pod("shop", annotated(meshv1alpha1.AnnotationInject, "true")), nil, true, workload.ModeSidecar, workload.ReasonPodAnnotation},
		{"grpc-agent", pod("shop", annotated(meshv1alpha1.AnnotationInject, "grpc-agent")), nil, true, workload.ModeProxyless, workload.ReasonPodAnnotation},
		{"grpc-agent in a meshed namespace", pod("shop", annotated(meshv1alpha1.AnnotationInject, "grpc-agent")), enabled, true, workload.ModeProxyless, workload.ReasonPodAnnotation},
		{"opted out", pod("shop", annotated(meshv1alpha1.AnnotationInject, "false")), enabled, false, workload.ModeNone, workload.ReasonOptedOut},
		{"host network in a meshed namespace", pod("shop", hostNetwork), enabled, false, workload.ModeNone, workload.ReasonHostNetwork},
		{"host network opted in", pod("shop", hostNetwork, annotated(meshv1alpha1.AnnotationInject, "true")), nil, false, workload.ModeNone, workload.ReasonHostNetwork},
		{"host network without a request", pod("shop", hostNetwork), nil, false, workload.ModeNone, workload.ReasonNotEnabled},
		{"host network opted out", pod("shop", hostNetwork, annotated(meshv1alpha1.AnnotationInject, "false")), enabled, false, workload.ModeNone, workload.ReasonOptedOut},
		{"injected", pod("shop", injected("native-sidecar")), nil, true, workload.ModeSidecar, workload.ReasonInjected},
		{"injected, then opted out: keeps its proxy", pod("shop", injected("sidecar"), annotated(meshv1alpha1.AnnotationInject, "false")), nil, true, workload.ModeSidecar, workload.ReasonInjected},
		{"injected as grpc-agent", pod("shop", injected("grpc-agent"), annotated(meshv1alpha1.AnnotationInject, "grpc-agent")), nil, true, workload.ModeProxyless, workload.ReasonInjected},
		// The record says what the pod was given; an annotation edited
		// later changes nothing until the pod is recreated.
		{"injected as grpc-agent, annotation removed since", pod("shop", injected("grpc-agent")), enabled, true, workload.ModeProxyless, workload.ReasonInjected},
		{"injected with a sidecar, annotation changed to grpc-agent since", pod("shop", injected("native-sidecar"), annotated(meshv1alpha1.AnnotationInject, "grpc-agent")), nil, true, workload.ModeSidecar, workload.ReasonInjected},
		{"injected, record without a mode", pod("shop", annotated(meshv1alpha1.AnnotationStatus, "{}", meshv1alpha1.AnnotationInject, "grpc-agent")), nil, true, workload.ModeProxyless, workload.ReasonInjected},
		{"injected, record unreadable", pod("shop", annotated(meshv1alpha1.AnnotationStatus, "not json")), nil, true, workload.ModeSidecar, workload.ReasonInjected},
		{"proxy added by hand", pod("shop", proxyContainer), nil, true, workload.ModeSidecar, workload.ReasonInjected},
		{"injected on the host network", pod("shop", injected("sidecar"), hostNetwork), enabled, false, workload.ModeNone, workload.ReasonHostNetwork},
		{"kube-system, labelled and opted in", pod("kube-system", annotated(meshv1alpha1.AnnotationInject, "true")), enabled, false, workload.ModeNone, workload.ReasonSystemNamespace},
		{"kube-system, injected", pod("kube-system", injected("sidecar")), enabled, false, workload.ModeNone, workload.ReasonSystemNamespace},
		{"succeeded", pod("shop", phase(corev1.PodSucceeded)), enabled, false, workload.ModeSidecar, workload.ReasonNamespaceLabel},
		{"failed and injected", pod("shop", phase(corev1.PodFailed), injected("sidecar")), nil, false, workload.ModeSidecar, workload.ReasonInjected},
		{"pending", pod("shop", phase(corev1.PodPending)), enabled, true, workload.ModeSidecar, workload.ReasonNamespaceLabel},
		{"shutting down", pod("shop", func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{} }), enabled, true, workload.ModeSidecar, workload.ReasonNamespaceLabel},
		{"invalid value in a meshed namespace", pod("shop", annotated(meshv1alpha1.AnnotationInject, "yes")), enabled, true, workload.ModeSidecar, workload.ReasonNamespaceLabel},
		{"invalid value elsewhere", pod("shop", annotated(meshv1alpha1.AnnotationInject, "yes")), nil, false, workload.ModeNone, workload.ReasonNotEnabled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := workload.Of(tc.pod, tc.nsLabels)
			if w.Meshed != tc.meshed || w.Mode != tc.mode || w.Reason != tc.reason {
				t.Errorf("Of = meshed %v, mode %q, reason %s; want meshed %v, mode %q, reason %s", w.Meshed, w.Mode, w.Reason, tc.meshed, tc.mode, tc.reason)
			}
		})
	}
}

func TestOfIdentity(t *testing.T) {
	w := workload.Of(pod("shop"), enabled)
	if w.NodeID != "cart-1.shop" || w.Namespace != "shop" || w.ServiceAccount != "default" {
		t.Errorf("node %q namespace %q service account %q, want cart-1.shop, shop, default", w.NodeID, w.Namespace, w.ServiceAccount)
	}
	if got, want := w.SpiffeID("mesh.example"), "spiffe://mesh.example/ns/shop/sa/default"; got != want {
		t.Errorf("SpiffeID = %q, want %q", got, want)
	}

	w = workload.Of(pod("shop", func(p *corev1.Pod) { p.Spec.ServiceAccountName = "cart" }), enabled)
	if got, want := w.SpiffeID("mesh.example"), "spiffe://mesh.example/ns/shop/sa/cart"; got != want {
		t.Errorf("SpiffeID = %q, want %q", got, want)
	}

	// During admission a generateName pod has no name, so no node ID yet.
	if w := workload.Of(pod("shop", func(p *corev1.Pod) { p.Name, p.GenerateName = "", "cart-" }), enabled); w.NodeID != "" {
		t.Errorf("NodeID of an unnamed pod = %q, want empty", w.NodeID)
	}
}

func TestOfInvalidInject(t *testing.T) {
	for value, want := range map[string]string{"yes": "yes", "": "", "True": "True", "true": "", "false": "", "grpc-agent": ""} {
		w := workload.Of(pod("shop", annotated(meshv1alpha1.AnnotationInject, value)), nil)
		if w.InvalidInject != want {
			t.Errorf("weft.dev/inject=%q: InvalidInject %q, want %q", value, w.InvalidInject, want)
		}
	}
	if w := workload.Of(pod("shop"), nil); w.InvalidInject != "" {
		t.Errorf("no annotation: InvalidInject %q, want empty", w.InvalidInject)
	}
}

func TestOfProxyVersion(t *testing.T) {
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want string
	}{
		{"annotation", pod("shop", annotated(meshv1alpha1.AnnotationStatus, `{"version":"v1.0.0"}`, meshv1alpha1.AnnotationProxyVersion, "v1.1.0")), "v1.1.0"},
		{"record only", pod("shop", annotated(meshv1alpha1.AnnotationStatus, `{"version":"v1.0.0"}`)), "v1.0.0"},
		{"unreadable record", pod("shop", annotated(meshv1alpha1.AnnotationStatus, `{`)), ""},
		{"not injected", pod("shop"), ""},
	} {
		if got := workload.Of(tc.pod, nil).ProxyVersion; got != tc.want {
			t.Errorf("%s: ProxyVersion %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestOwnerOf(t *testing.T) {
	ctrl := func(kind, name string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{Kind: kind, Name: name, Controller: ptr.To(true)}}
	}
	for _, c := range []struct {
		name string
		pod  corev1.Pod
		want workload.Owner
	}{
		{"Deployment", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "checkout-v2-5d8f7c9b4-x2x9k", Labels: map[string]string{"pod-template-hash": "5d8f7c9b4"}, OwnerReferences: ctrl("ReplicaSet", "checkout-v2-5d8f7c9b4")}}, workload.Owner{Kind: "Deployment", Name: "checkout-v2", Revision: "5d8f7c9b4"}},
		{"at admission, before the name", corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "checkout-v2-5d8f7c9b4-", Labels: map[string]string{"pod-template-hash": "5d8f7c9b4"}, OwnerReferences: ctrl("ReplicaSet", "checkout-v2-5d8f7c9b4")}}, workload.Owner{Kind: "Deployment", Name: "checkout-v2", Revision: "5d8f7c9b4"}},
		{"Argo Rollouts", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"rollouts-pod-template-hash": "7b9c"}, OwnerReferences: ctrl("ReplicaSet", "checkout-7b9c")}}, workload.Owner{Kind: "Rollout", Name: "checkout", Revision: "7b9c"}},
		{"bare ReplicaSet", corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: ctrl("ReplicaSet", "batch")}}, workload.Owner{Kind: "ReplicaSet", Name: "batch"}},
		{"StatefulSet", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", OwnerReferences: ctrl("StatefulSet", "db")}}, workload.Owner{Kind: "StatefulSet", Name: "db"}},
		{"a non-controller owner is not the workload", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "solo", OwnerReferences: []metav1.OwnerReference{{Kind: "ConfigMap", Name: "x"}}}}, workload.Owner{Kind: "Pod", Name: "solo"}},
		{"bare pod at admission", corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "debug-"}}, workload.Owner{Kind: "Pod", Name: "debug"}},
	} {
		if got := workload.OwnerOf(&c.pod); got != c.want {
			t.Errorf("%s: OwnerOf = %+v, want %+v", c.name, got, c.want)
		}
	}
}
