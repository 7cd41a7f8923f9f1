package ingest

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
)

// BenchmarkIngest builds the mesh model of the same synthetic mesh as
// BenchmarkTranslate (internal/xds/translate): per Service 2 ports and 3
// endpoints, a TrafficSplit for 1 in 5, a RetryPolicy and a CircuitBreaker
// for 1 in 3, an AccessPolicy for 1 in 4, and 2 meshed pods.
func BenchmarkIngest(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			bundle := syntheticBundle(n)
			b.ReportAllocs()
			b.ResetTimer()
			var groups int
			for b.Loop() {
				groups = len(Build(bundle).Mesh.ProxyGroups)
			}
			b.ReportMetric(float64(groups), "groups")
		})
	}
}

func syntheticBundle(n int) *Bundle {
	b := &Bundle{Namespaces: []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "bench", Labels: map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}}}}}
	b.MeshIdentities = []*meshv1alpha1.MeshIdentity{{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: meshv1alpha1.MeshIdentitySpec{TrustDomain: "cluster.local"}}}
	for i := range n {
		name := fmt.Sprintf("s%d", i)
		labels := map[string]string{"app": name}
		b.Services = append(b.Services, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
			Spec: corev1.ServiceSpec{
				ClusterIP: fmt.Sprintf("10.96.%d.%d", i/250, i%250+1), Selector: labels,
				Ports: []corev1.ServicePort{
					{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
					{Name: "grpc", Port: 9090, TargetPort: intstr.FromInt32(9090), Protocol: corev1.ProtocolTCP},
				},
			},
		})
		es := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "bench", Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []discoveryv1.EndpointPort{
				{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)},
				{Name: ptr.To("grpc"), Port: ptr.To[int32](9090), Protocol: ptr.To(corev1.ProtocolTCP)},
			},
		}
		for e := range 3 {
			ip := fmt.Sprintf("10.%d.%d.%d", 100+i/250, i%250, e+1)
			pod := fmt.Sprintf("%s-%d", name, e)
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "bench", Name: pod}})
			if e < 2 {
				b.Pods = append(b.Pods, &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: pod, Labels: labels},
					Spec:       corev1.PodSpec{ServiceAccountName: name, Containers: []corev1.Container{{Name: "app"}}},
					Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
				})
			}
		}
		b.EndpointSlices = append(b.EndpointSlices, es)
		if i%5 == 0 && i+1 < n {
			b.TrafficSplits = append(b.TrafficSplits, &meshv1alpha1.TrafficSplit{
				ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
				Spec:       meshv1alpha1.TrafficSplitSpec{Service: name, Backends: []meshv1alpha1.TrafficSplitBackend{{Service: name, Weight: 90}, {Service: fmt.Sprintf("s%d", i+1), Weight: 10}}},
			})
		}
		if i%3 == 0 {
			b.RetryPolicies = append(b.RetryPolicies, &meshv1alpha1.RetryPolicy{
				ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
				Spec:       meshv1alpha1.RetryPolicySpec{TargetRef: meshv1alpha1.RouteTargetReference{Kind: "Service", Name: name}, Attempts: ptr.To[int32](3)},
			})
			b.CircuitBreakers = append(b.CircuitBreakers, &meshv1alpha1.CircuitBreaker{
				ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
				Spec:       meshv1alpha1.CircuitBreakerSpec{TargetRef: meshv1alpha1.CircuitBreakerTargetReference{Kind: "Service", Name: name}, MaxRequests: ptr.To[int32](100)},
			})
		}
		if i%4 == 0 {
			b.AccessPolicies = append(b.AccessPolicies, &meshv1alpha1.AccessPolicy{
				ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
				Spec: meshv1alpha1.AccessPolicySpec{TargetRef: meshv1alpha1.ServiceTargetReference{Kind: "Service", Name: name}, Action: meshv1alpha1.ActionAllow,
					Rules: []meshv1alpha1.AccessRule{{From: []meshv1alpha1.AccessSource{{Namespace: ptr.To("bench")}}}}},
			})
		}
	}
	return b
}

// BenchmarkRebuildIngest is what the controller's ingest does after a
// TrafficSplit weight change: Build through a Memo that holds the previous
// build, with one split changed.
func BenchmarkRebuildIngest(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			bundle := syntheticBundle(n)
			stamp(b, bundle)
			memo := NewMemo()
			memo.Build(bundle)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				ts := bundle.TrafficSplits[i%len(bundle.TrafficSplits)].DeepCopy()
				ts.ResourceVersion = fmt.Sprint(i + 1)
				ts.Spec.Backends[0].Weight, ts.Spec.Backends[1].Weight = int32(i%100), int32(100-i%100)
				bundle.TrafficSplits[i%len(bundle.TrafficSplits)] = ts
				i++
				memo.Build(bundle)
			}
		})
	}
}
