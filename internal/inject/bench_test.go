package inject

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
)

// BenchmarkInject measures one admission's work in process: deciding,
// building both bootstraps' worth of config, mutating a three-container pod
// and creating the JSON patch. Target: well under 1 ms.
func BenchmarkInject(b *testing.B) {
	cfg := testConfig()
	app := func(name string, port int32) corev1.Container {
		return corev1.Container{
			Name:  name,
			Image: "example.com/shop/" + name + ":1.4.2",
			Args:  []string{"--listen", ":8080", "--log-format", "json"},
			Env: []corev1.EnvVar{
				{Name: "GOMAXPROCS", Value: "2"},
				{Name: "DB_HOST", Value: "postgres.shop.svc"},
			},
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: port}},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
			},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(port)}}},
		}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "cart-7d9f8b6c4-",
			Namespace:    "shop",
			Labels:       map[string]string{"app": "cart", "pod-template-hash": "7d9f8b6c4"},
			Annotations:  map[string]string{meshv1alpha1.AnnotationExcludeOutboundPorts: "5432", meshv1alpha1.AnnotationProxyCPU: "200m"},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: "cart",
			Containers:         []corev1.Container{app("cart", 8080), app("cart-worker", 8081), app("metrics-exporter", 9100)},
		},
	}
	nsLabels := map[string]string{meshv1alpha1.LabelInject: meshv1alpha1.NamespaceInjectEnabled}
	// The webhook builds its Injector once at start-up.
	in, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}

	b.ReportAllocs()
	for b.Loop() {
		res, err := in.Inject(pod, nsLabels)
		if err != nil || res.Skip != nil || len(res.Patch) == 0 {
			b.Fatalf("not injected: %+v %v", res, err)
		}
	}
}
