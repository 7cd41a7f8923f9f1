package controllers_test

import (
	"context"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/xds/xdstest"
)

// TestProxylessServerListeners: a proxyless gRPC server asks for the
// listener named after the address it listens on; the controller must serve
// one for its pod IP and for the wildcard addresses, on each port its
// Services target, or the server never starts serving.
func TestProxylessServerListeners(t *testing.T) {
	h := startHarness(t)
	ctx := t.Context()
	h.create(t,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}}},
		&meshv1alpha1.MeshIdentity{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1alpha1.MeshIdentitySpec{
			TrustDomain: "cluster.local", IssuerRef: meshv1alpha1.IssuerReference{Name: "mesh-ca"},
		}},
	)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "greeter-0", Labels: map[string]string{"app": "greeter"},
			Annotations: map[string]string{meshv1alpha1.AnnotationInject: meshv1alpha1.InjectGRPCAgent}},
		Spec: corev1.PodSpec{ServiceAccountName: "greeter", Containers: []corev1.Container{{
			Name: "app", Image: "example/greeter", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
	}
	h.create(t, pod)
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.5", PodIPs: []corev1.PodIP{{IP: "10.244.0.5"}}}
	if err := h.c.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	h.service(t, "shop", "greeter", "", map[string]string{"app": "greeter"}, pod)

	names := []string{"weft/inbound/10.244.0.5:8080", "weft/inbound/0.0.0.0:8080", "weft/inbound/[::]:8080"}
	// The test client does not announce itself as gRPC, so it connects
	// once the server has published the node as proxyless.
	eventually(t, 20*time.Second, "greeter-0.shop published as proxyless", func() (bool, string) {
		return h.xds.Proxyless("greeter-0.shop"), "not yet"
	})
	server := h.grpcClient(t, "greeter-0.shop", "spiffe://cluster.local/ns/shop/sa/greeter", map[string][]string{xdstest.ListenerType: names})
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err := server.WaitFor(wctx, func(c *xdstest.Client) bool {
		for _, n := range names {
			if _, ok := c.Resource(xdstest.ListenerType, n).(*listenerv3.Listener); !ok {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("the gRPC server did not get its listeners %v (has %v): %v", names, server.Names(xdstest.ListenerType), err)
	}
	l := server.Resource(xdstest.ListenerType, names[0]).(*listenerv3.Listener)
	if got := l.GetAddress().GetSocketAddress(); got.GetAddress() != "10.244.0.5" || got.GetPortValue() != 8080 {
		t.Errorf("listener %s has address %v, want 10.244.0.5:8080", names[0], got)
	}
}
