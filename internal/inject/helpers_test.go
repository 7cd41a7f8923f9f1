package inject

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.ProxyImage = "example.com/weft/proxy:v0.1.0"
	cfg.InitImage = "example.com/weft/init:v0.1.0"
	cfg.ProxyVersion = "v0.1.0"
	cfg.TrustDomain = "mesh.example"
	return cfg
}

// loadCase reads testdata/<name>.pod.yaml: a Namespace, "---", then a Pod.
func loadCase(t *testing.T, name string) (*corev1.Namespace, *corev1.Pod) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name+".pod.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s.pod.yaml: %v", name, err)
		}
		docs = append(docs, doc)
	}
	if len(docs) != 2 {
		t.Fatalf("%s.pod.yaml: want a Namespace and a Pod separated by ---, got %d documents", name, len(docs))
	}
	var ns corev1.Namespace
	if err := yaml.UnmarshalStrict(docs[0], &ns); err != nil {
		t.Fatalf("%s.pod.yaml namespace: %v", name, err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(docs[1], &pod); err != nil {
		t.Fatalf("%s.pod.yaml pod: %v", name, err)
	}
	return &ns, &pod
}

// container finds a container by name in the init or regular list.
func container(pod *corev1.Pod, name string) *corev1.Container {
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	return nil
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func env(c *corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

func hasArg(c *corev1.Container, arg string) bool {
	for _, a := range append(append([]string{}, c.Command...), c.Args...) {
		if a == arg {
			return true
		}
	}
	return false
}

// proxyBootstrap parses the bootstrap weft-init will write and checks it and
// everything packed inside it against Envoy's validation rules.
func proxyBootstrap(t *testing.T, pod *corev1.Pod) *bootstrapv3.Bootstrap {
	t.Helper()
	initC := container(pod, InitContainerName)
	if initC == nil {
		t.Fatal("no weft-init container")
	}
	e, ok := env(initC, EnvProxyBootstrap)
	if !ok {
		t.Fatalf("weft-init has no %s", EnvProxyBootstrap)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal([]byte(e.Value), &b); err != nil {
		t.Fatalf("bootstrap is not a valid Envoy bootstrap: %v", err)
	}
	if n := validateDeep(t, &b); n < 6 {
		t.Errorf("validated %d typed configs inside the bootstrap, want at least 6", n)
	}

	s, ok := env(initC, EnvProxySDS)
	if !ok {
		t.Fatalf("weft-init has no %s", EnvProxySDS)
	}
	var sds discoveryv3.DiscoveryResponse
	if err := protojson.Unmarshal([]byte(s.Value), &sds); err != nil {
		t.Fatalf("SDS file is not a DiscoveryResponse: %v", err)
	}
	if n := validateDeep(t, &sds); n != 2 {
		t.Errorf("validated %d secrets in the SDS file, want 2", n)
	}
	return &b
}

// validateDeep runs ValidateAll on m and on every message packed in an Any
// anywhere inside it (ValidateAll itself stops at Any fields). It returns the
// number of Any payloads validated.
func validateDeep(t *testing.T, m proto.Message) int {
	t.Helper()
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			t.Errorf("%s fails validation: %v", m.ProtoReflect().Descriptor().FullName(), err)
		}
	}
	return walkAnys(t, m.ProtoReflect())
}

func walkAnys(t *testing.T, m protoreflect.Message) int {
	t.Helper()
	n := 0
	visit := func(child protoreflect.Message) {
		if a, ok := child.Interface().(*anypb.Any); ok {
			inner, err := a.UnmarshalNew()
			if err != nil {
				t.Errorf("unpack %s: %v", a.GetTypeUrl(), err)
				return
			}
			n += 1 + validateDeep(t, inner)
			return
		}
		n += walkAnys(t, child)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				visit(v.List().Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				visit(mv.Message())
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			visit(v.Message())
		}
		return true
	})
	return n
}
