package controllers

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
)

// The audit's verdict on single pods, without an API server (the envtest
// suite covers events and gauges).
func TestSidecarAuditVerdict(t *testing.T) {
	r := &SidecarAuditReconciler{ProxyVersion: "v1.0.0"}
	meshedNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}}}
	plainNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}}
	pod := func(ns string, edit func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cart-1"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning},
		}
		if edit != nil {
			edit(p)
		}
		return p
	}
	annotated := func(kv ...string) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			p.Annotations = map[string]string{}
			for i := 0; i+1 < len(kv); i += 2 {
				p.Annotations[kv[i]] = kv[i+1]
			}
		}
	}
	for _, tc := range []struct {
		name   string
		pod    *corev1.Pod
		ns     *corev1.Namespace
		reason string
		why    string
	}{
		{"not injected in a meshed namespace", pod("shop", nil), meshedNS, ReasonNotInjected, "namespace shop is labelled weft.dev/inject=enabled"},
		{"opted in elsewhere", pod("plain", annotated(meshv1alpha1.AnnotationInject, "grpc-agent")), plainNS, ReasonNotInjected, "it is annotated weft.dev/inject: grpc-agent"},
		{"opted in, namespace gone", pod("plain", annotated(meshv1alpha1.AnnotationInject, "true")), nil, ReasonNotInjected, "it is annotated weft.dev/inject: true"},
		{"plain namespace", pod("plain", nil), plainNS, "", ""},
		{"opted out", pod("shop", annotated(meshv1alpha1.AnnotationInject, "false")), meshedNS, "", ""},
		{"host network", pod("shop", func(p *corev1.Pod) { p.Spec.HostNetwork = true }), meshedNS, "", ""},
		{"finished", pod("shop", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), meshedNS, "", ""},
		{"being deleted", pod("shop", func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{} }), meshedNS, "", ""},
		{"current proxy", pod("shop", annotated(meshv1alpha1.AnnotationStatus, `{"version":"v1.0.0"}`)), meshedNS, "", ""},
		{"outdated proxy", pod("shop", annotated(meshv1alpha1.AnnotationStatus, `{"version":"v0.9.0"}`, meshv1alpha1.AnnotationProxyVersion, "v0.9.0")), meshedNS, ReasonProxyOutdated, ""},
		{"outdated proxy, version only in the record", pod("plain", annotated(meshv1alpha1.AnnotationStatus, `{"version":"v0.9.0"}`)), plainNS, ReasonProxyOutdated, ""},
		// A pod that already has a weft-proxy container is skipped by the
		// injector as already injected, so restarting it would never
		// change anything: it must not be told to.
		{"proxy container without the record", pod("shop", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "weft-proxy"}}
		}), meshedNS, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, why := r.audit(tc.pod, tc.ns)
			if f.reason != tc.reason || why != tc.why {
				t.Errorf("audit = %q (%q), want %q (%q)", f.reason, why, tc.reason, tc.why)
			}
		})
	}
}
