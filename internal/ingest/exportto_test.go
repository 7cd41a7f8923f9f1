package ingest

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ir"
)

func TestParseExportTo(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "*", want: nil},
		{in: ".", want: []string{"shop"}},
		{in: " web , ., web", want: []string{"shop", "web"}},
		{in: "~", want: []string{ir.ExportNowhere}},
		{in: "web,*", want: nil},
		{in: "", wantErr: "empty entry"},
		{in: "web,", wantErr: "empty entry"},
		{in: "Web", wantErr: `"Web" is not a namespace name`},
		{in: "~,web", wantErr: `combines "~"`},
	} {
		got, err := ParseExportTo(tc.in, "shop")
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("%q: got %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestExportToAnnotation: a Service's annotation wins over its namespace's;
// a bad value is reported on the Service and leaves it visible to all.
func TestExportToAnnotation(t *testing.T) {
	ns := func(name string, ann map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}
	}
	svc := func(ns, name string, ann map[string]string) *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann},
			Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
		}
	}
	key := meshv1alpha1.AnnotationExportTo
	client := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "client-0", Annotations: map[string]string{meshv1alpha1.AnnotationInject: meshv1alpha1.InjectGRPCAgent}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example/app"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.9"},
	}
	res := Build(&Bundle{
		Pods:       []*corev1.Pod{client},
		Namespaces: []*corev1.Namespace{ns("shop", map[string]string{key: "."}), ns("web", nil)},
		Services: []*corev1.Service{
			svc("shop", "cart", nil),
			svc("shop", "catalog", map[string]string{key: "*"}),
			svc("shop", "payments", map[string]string{key: "billing, ."}),
			svc("web", "search", map[string]string{key: "no_such"}),
			svc("web", "front", nil),
		},
	})
	want := map[string][]string{
		"shop/cart":     {"shop"},
		"shop/catalog":  nil,
		"shop/payments": {"billing", "shop"},
		"web/search":    nil,
		"web/front":     nil,
	}
	for _, s := range res.Mesh.Services {
		if w, ok := want[s.Key()]; !ok || !slices.Equal(s.ExportTo, w) || (w == nil) != (s.ExportTo == nil) {
			t.Errorf("%s: exportTo %q, want %q", s.Key(), s.ExportTo, w)
		}
	}
	found := false
	for _, w := range res.Warnings {
		if w.Ref.Name == "search" && w.Reason == "InvalidExportTo" && strings.Contains(w.Message, `"no_such" is not a namespace name`) && strings.Contains(w.Message, "sent to every namespace") {
			found = true
		}
	}
	if !found {
		t.Errorf("no InvalidExportTo warning on web/search: %+v", res.Warnings)
	}
	// A proxyless client in web is not scoped: the Services hidden from
	// web say so; those web may reach do not.
	var proxylessWarned []string
	for _, w := range res.Warnings {
		if w.Reason == "ExportNotHonouredByProxyless" {
			if !strings.Contains(w.Message, "namespaces web can still reach it") {
				t.Errorf("warning on %s does not name namespace web: %s", w.Ref, w.Message)
			}
			proxylessWarned = append(proxylessWarned, w.Ref.Namespace+"/"+w.Ref.Name)
		}
	}
	if want := []string{"shop/cart", "shop/payments"}; !slices.Equal(proxylessWarned, want) {
		t.Errorf("Services warned about proxyless clients: %v, want %v", proxylessWarned, want)
	}
}
