package controllers

import (
	"context"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
)

// Without informers (a cache the stores of which cannot be read, such as
// one limited to some namespaces) the bundle is listed through the reader.
func TestListBundleThroughAReader(t *testing.T) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, meshv1alpha1.AddToScheme, gwapiv1.Install} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "pay"}},
		&meshv1alpha1.TrafficSplit{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"}},
	).Build()
	b, err := listBundle(t.Context(), bundleSource{reader: c}, "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Namespaces) != 1 || len(b.Services) != 2 || len(b.TrafficSplits) != 1 || len(b.Pods) != 0 {
		t.Fatalf("bundle has %d namespaces, %d services, %d splits, %d pods; want 1, 2, 1, 0", len(b.Namespaces), len(b.Services), len(b.TrafficSplits), len(b.Pods))
	}
	names := map[string]bool{b.Services[0].Name: true, b.Services[1].Name: true}
	if !names["cart"] || !names["pay"] || b.ClusterDomain != "cluster.local" {
		t.Errorf("services %v, domain %q", names, b.ClusterDomain)
	}
}

// storeInformers serves stores of objects as a manager's cache does; only
// GetInformer is used by listBundle.
type storeInformers struct {
	cache.Informers
	stores map[reflect.Type]toolscache.Store
}

func (s storeInformers) GetInformer(_ context.Context, obj client.Object, _ ...cache.InformerGetOption) (cache.Informer, error) {
	st := s.stores[reflect.TypeOf(obj)]
	if st == nil {
		st = toolscache.NewStore(toolscache.MetaNamespaceKeyFunc)
	}
	return storeInformer{store: st}, nil
}

type storeInformer struct {
	cache.Informer
	store toolscache.Store
}

func (i storeInformer) GetStore() toolscache.Store { return i.store }

// With informers, a rebuild reads their stores: the very objects cached,
// not copies, and without asking the reader.
func TestListBundleFromTheInformersStores(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart-0"}}
	stores := map[reflect.Type]toolscache.Store{}
	for _, obj := range []client.Object{svc, pod} {
		st := toolscache.NewStore(toolscache.MetaNamespaceKeyFunc)
		if err := st.Add(obj); err != nil {
			t.Fatal(err)
		}
		stores[reflect.TypeOf(obj)] = st
	}
	// A nil reader: using it would panic.
	b, err := listBundle(t.Context(), bundleSource{informers: storeInformers{stores: stores}}, "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Services) != 1 || b.Services[0] != svc || len(b.Pods) != 1 || b.Pods[0] != pod || len(b.Namespaces) != 0 {
		t.Fatalf("bundle has services %v, pods %v, namespaces %v; want the stored service and pod themselves", b.Services, b.Pods, b.Namespaces)
	}
}
