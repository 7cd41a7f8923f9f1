package ingest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/golden"
)

// TestGolden runs every testdata/<case>.in.yaml (Kubernetes objects) through
// Build and compares the model, statuses and warnings with <case>.out.yaml.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			b := LoadBundle(t, f)
			got := marshal(t, Build(b))
			golden.Check(t, strings.TrimSuffix(f, ".in.yaml")+".out.yaml", got)

			// The result must not depend on the order objects come in.
			reverseBundle(b)
			if again := marshal(t, Build(b)); !bytes.Equal(got, again) {
				t.Errorf("output depends on input order")
			}
		})
	}
}

func marshal(t testing.TB, r *Result) []byte {
	t.Helper()
	out, err := yaml.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var decoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, meshv1alpha1.AddToScheme, gwapiv1.Install} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(s).UniversalDeserializer()
}()

// LoadBundle reads a multi-document YAML file of Kubernetes objects.
func LoadBundle(t testing.TB, path string) *Bundle {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := DecodeBundle(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// DecodeBundle sorts decoded objects into a Bundle by kind.
func DecodeBundle(data []byte) (*Bundle, error) {
	b := &Bundle{}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		if u, ok, err := smiObject(doc); ok || err != nil {
			if err != nil {
				return nil, fmt.Errorf("document %d: %w", i, err)
			}
			b.SMITrafficSplits = append(b.SMITrafficSplits, u)
			continue
		}
		obj, _, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			b.Namespaces = append(b.Namespaces, o)
		case *corev1.Service:
			b.Services = append(b.Services, o)
		case *discoveryv1.EndpointSlice:
			b.EndpointSlices = append(b.EndpointSlices, o)
		case *corev1.Pod:
			b.Pods = append(b.Pods, o)
		case *meshv1alpha1.TrafficSplit:
			b.TrafficSplits = append(b.TrafficSplits, o)
		case *meshv1alpha1.RetryPolicy:
			b.RetryPolicies = append(b.RetryPolicies, o)
		case *meshv1alpha1.CircuitBreaker:
			b.CircuitBreakers = append(b.CircuitBreakers, o)
		case *meshv1alpha1.MeshIdentity:
			b.MeshIdentities = append(b.MeshIdentities, o)
		case *meshv1alpha1.AccessPolicy:
			b.AccessPolicies = append(b.AccessPolicies, o)
		case *meshv1alpha1.FaultInjection:
			b.FaultInjections = append(b.FaultInjections, o)
		case *meshv1alpha1.RateLimitPolicy:
			b.RateLimitPolicies = append(b.RateLimitPolicies, o)
		case *gwapiv1.HTTPRoute:
			b.HTTPRoutes = append(b.HTTPRoutes, o)
		case *gwapiv1.GRPCRoute:
			b.GRPCRoutes = append(b.GRPCRoutes, o)
		case *gwapiv1.TCPRoute:
			b.TCPRoutes = append(b.TCPRoutes, o)
		case *gwapiv1.ReferenceGrant:
			b.ReferenceGrants = append(b.ReferenceGrants, o)
		default:
			return nil, fmt.Errorf("document %d: unexpected %T", i, obj)
		}
	}
	return b, nil
}

// smiObject decodes an SMI TrafficSplit, which has no Go type Weft reads:
// the controller reads it unstructured too.
func smiObject(doc []byte) (*unstructured.Unstructured, bool, error) {
	// Through JSON as the API server's answers are, so numbers are int64.
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, false, err
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		return nil, false, nil //nolint:nilerr // not an object unstructured reads: the typed decoder reports it
	}
	if u.GroupVersionKind().Group != SMIGroup {
		return nil, false, nil
	}
	return u, true, nil
}

func reverseBundle(b *Bundle) {
	slices.Reverse(b.SMITrafficSplits)
	slices.Reverse(b.Namespaces)
	slices.Reverse(b.Services)
	slices.Reverse(b.EndpointSlices)
	slices.Reverse(b.Pods)
	slices.Reverse(b.TrafficSplits)
	slices.Reverse(b.RetryPolicies)
	slices.Reverse(b.CircuitBreakers)
	slices.Reverse(b.MeshIdentities)
	slices.Reverse(b.AccessPolicies)
	slices.Reverse(b.HTTPRoutes)
	slices.Reverse(b.GRPCRoutes)
	slices.Reverse(b.ReferenceGrants)
}
