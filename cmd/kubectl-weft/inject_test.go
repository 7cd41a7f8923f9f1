package main

import (
	"encoding/json"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/weft-mesh/weft/internal/cli"
	"github.com/weft-mesh/weft/internal/inject"
	"github.com/weft-mesh/weft/webhooks"
)

// TestInjectIsTheWebhook checks that offline injection gives a pod exactly
// what the injection webhook's admission patch gives it, for a sidecar and
// a proxyless pod.
func TestInjectIsTheWebhook(t *testing.T) {
	cfg := inject.DefaultConfig()
	cfg.ProxyImage, cfg.InitImage, cfg.ProxyVersion = "example.com/proxy:v1", "example.com/init:v1", "v1"
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"weft.dev/inject": "enabled"}}}
	for _, manifest := range []string{
		`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-0","namespace":"shop","labels":{"app":"web"}},"spec":{"serviceAccountName":"web","containers":[{"name":"web","image":"example/web","ports":[{"containerPort":8080}]}]}}`,
		`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"greeter-0","namespace":"shop","annotations":{"weft.dev/inject":"grpc-agent"}},"spec":{"containers":[{"name":"app","image":"example/greeter"}]}}`,
	} {
		// The webhook, as the API server calls it.
		in, err := inject.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		s := cli.Scheme()
		h := &webhooks.PodInjector{Injector: in, Namespaces: fake.NewClientBuilder().WithScheme(s).WithObjects(ns).Build(), Decoder: admission.NewDecoder(s)}
		resp := h.Handle(t.Context(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
			Operation: admissionv1.Create, Namespace: "shop", Object: runtime.RawExtension{Raw: []byte(manifest)},
		}})
		if !resp.Allowed || len(resp.Patches) == 0 {
			t.Fatalf("the webhook did not inject: %+v", resp.Result)
		}
		patch, err := json.Marshal(resp.Patches)
		if err != nil {
			t.Fatal(err)
		}
		p, err := jsonpatch.DecodePatch(patch)
		if err != nil {
			t.Fatal(err)
		}
		patched, err := p.Apply([]byte(manifest))
		if err != nil {
			t.Fatal(err)
		}
		var byWebhook corev1.Pod
		if err := json.Unmarshal(patched, &byWebhook); err != nil {
			t.Fatal(err)
		}

		// The plugin, offline.
		m, err := cli.ReadManifests([]string{"-"}, strings.NewReader(manifest+"\n---\n"+`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"shop","labels":{"weft.dev/inject":"enabled"}}}`))
		if err != nil {
			t.Fatal(err)
		}
		res, err := cli.Inject(m, cfg)
		if err != nil {
			t.Fatal(err)
		}
		var offline corev1.Pod
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(res.Objects[0].Object, &offline); err != nil {
			t.Fatal(err)
		}
		if !equality.Semantic.DeepEqual(byWebhook, offline) {
			a, _ := json.Marshal(byWebhook)
			b, _ := json.Marshal(offline)
			t.Errorf("offline injection differs from the webhook's:\nwebhook: %s\noffline: %s", a, b)
		}
	}
}
