package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	serializerjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	meshv1alpha1 "github.com/weft-mesh/weft/api/v1alpha1"
	"github.com/weft-mesh/weft/internal/ingest"
	"github.com/weft-mesh/weft/internal/manifest"
)

// Scheme knows every kind ingest reads.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, meshv1alpha1.AddToScheme, gwapiv1.Install, gwapiv1beta1.Install} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// Manifests are the objects read from files, in a Bundle, and what was
// skipped.
type Manifests struct {
	Bundle ingest.Bundle
	// Skipped are objects of kinds Weft does not read ("Kind name").
	Skipped []string
	// Workloads are the Deployments, StatefulSets, DaemonSets,
	// ReplicaSets and Jobs, whose pods render can stand in for.
	Workloads []*unstructured.Unstructured
	// All are every object read, in order.
	All []*unstructured.Unstructured
}

// ReadManifests reads YAML or JSON files, and directories of them (not
// recursively), "-" for stdin. Every object must parse; kinds Weft does not
// read are listed in Skipped.
func ReadManifests(paths []string, stdin io.Reader) (*Manifests, error) {
	return Read(Input{Files: paths, Stdin: stdin})
}

func (m *Manifests) readFiles(paths []string, stdin io.Reader) error {
	for _, p := range paths {
		if p == "-" {
			if err := m.read("stdin", stdin); err != nil {
				return err
			}
			continue
		}
		info, err := os.Stat(p)
		if err != nil {
			return err
		}
		files := []string{p}
		if info.IsDir() {
			entries, err := os.ReadDir(p)
			if err != nil {
				return err
			}
			files = nil
			for _, e := range entries {
				if isKustomization(e.Name()) {
					// kustomize's own file, not a resource.
					continue
				}
				if ext := filepath.Ext(e.Name()); !e.IsDir() && (ext == ".yaml" || ext == ".yml" || ext == ".json") {
					files = append(files, filepath.Join(p, e.Name()))
				}
			}
		}
		for _, f := range files {
			b, err := os.ReadFile(f) //nolint:gosec // a file the user named
			if err != nil {
				return err
			}
			if err := m.read(f, bytes.NewReader(b)); err != nil {
				return err
			}
		}
	}
	return nil
}

// allocateClusterIPs gives every Service without a cluster IP one, as the
// API server would (sidecars catch traffic by it), from 10.255.0.0/16 in
// the order of namespace and name. Headless Services stay headless.
func (m *Manifests) allocateClusterIPs() {
	svcs := slices.Clone(m.Bundle.Services)
	slices.SortFunc(svcs, func(a, b *corev1.Service) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	n := 0
	for _, s := range svcs {
		if s.Spec.ClusterIP != "" || s.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		n++
		ip := fmt.Sprintf("10.255.%d.%d", n/250, n%250+1)
		s.Spec.ClusterIP, s.Spec.ClusterIPs = ip, []string{ip}
	}
}

var (
	scheme      = Scheme()
	strictCodec = serializerjson.NewSerializerWithOptions(serializerjson.DefaultMetaFactory, scheme, scheme, serializerjson.SerializerOptions{Strict: true})
)

func (m *Manifests) read(name string, r io.Reader) error {
	objs, err := manifest.Decode(r)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	for _, u := range objs {
		if err := m.add(name, u); err != nil {
			return err
		}
	}
	return nil
}

func (m *Manifests) add(file string, u *unstructured.Unstructured) error {
	m.All = append(m.All, u)
	gvk := u.GroupVersionKind()
	if gvk.Group == ingest.SMIGroup && gvk.Kind == "TrafficSplit" {
		m.Bundle.SMITrafficSplits = append(m.Bundle.SMITrafficSplits, u)
		return nil
	}
	if !scheme.Recognizes(gvk) {
		m.Skipped = append(m.Skipped, gvk.Kind+" "+name(u))
		return nil
	}
	switch gvk.Kind {
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job":
		if gvk.Group == "apps" || gvk.Group == "batch" {
			m.Workloads = append(m.Workloads, u)
		}
	}
	raw, err := u.MarshalJSON()
	if err != nil {
		return err
	}
	// Strict, as the API server's field validation: an unknown or
	// duplicate field is an error, and a wrong type names its field.
	obj, _, err := strictCodec.Decode(raw, &gvk, nil)
	if err != nil {
		return fmt.Errorf("%s: %s %s: %w", file, gvk.Kind, name(u), err)
	}
	b := &m.Bundle
	switch o := obj.(type) {
	case *corev1.Namespace:
		b.Namespaces = append(b.Namespaces, o)
	case *corev1.Service:
		b.Services = append(b.Services, defaultNamespace(o))
	case *discoveryv1.EndpointSlice:
		b.EndpointSlices = append(b.EndpointSlices, defaultNamespace(o))
	case *corev1.Pod:
		b.Pods = append(b.Pods, defaultNamespace(o))
	case *meshv1alpha1.TrafficSplit:
		b.TrafficSplits = append(b.TrafficSplits, defaultNamespace(o))
	case *meshv1alpha1.RetryPolicy:
		b.RetryPolicies = append(b.RetryPolicies, defaultNamespace(o))
	case *meshv1alpha1.CircuitBreaker:
		b.CircuitBreakers = append(b.CircuitBreakers, defaultNamespace(o))
	case *meshv1alpha1.AccessPolicy:
		b.AccessPolicies = append(b.AccessPolicies, defaultNamespace(o))
	case *meshv1alpha1.FaultInjection:
		b.FaultInjections = append(b.FaultInjections, defaultNamespace(o))
	case *meshv1alpha1.RateLimitPolicy:
		b.RateLimitPolicies = append(b.RateLimitPolicies, defaultNamespace(o))
	case *meshv1alpha1.MeshIdentity:
		b.MeshIdentities = append(b.MeshIdentities, o)
	case *gwapiv1.HTTPRoute:
		b.HTTPRoutes = append(b.HTTPRoutes, defaultNamespace(o))
	case *gwapiv1.GRPCRoute:
		b.GRPCRoutes = append(b.GRPCRoutes, defaultNamespace(o))
	case *gwapiv1.TCPRoute:
		b.TCPRoutes = append(b.TCPRoutes, defaultNamespace(o))
	case *gwapiv1beta1.ReferenceGrant:
		b.ReferenceGrants = append(b.ReferenceGrants, convertGrant(o))
	case *gwapiv1.ReferenceGrant:
		b.ReferenceGrants = append(b.ReferenceGrants, defaultNamespace(o))
	default:
		m.Skipped = append(m.Skipped, gvk.Kind+" "+name(u))
	}
	return nil
}

func convertGrant(g *gwapiv1beta1.ReferenceGrant) *gwapiv1.ReferenceGrant {
	out := &gwapiv1.ReferenceGrant{ObjectMeta: g.ObjectMeta}
	for _, f := range g.Spec.From {
		out.Spec.From = append(out.Spec.From, gwapiv1.ReferenceGrantFrom{Group: f.Group, Kind: f.Kind, Namespace: f.Namespace})
	}
	for _, to := range g.Spec.To {
		out.Spec.To = append(out.Spec.To, gwapiv1.ReferenceGrantTo{Group: to.Group, Kind: to.Kind, Name: to.Name})
	}
	return defaultNamespace(out)
}

// defaultNamespace puts an object without a namespace in "default", as
// kubectl apply does.
func defaultNamespace[T interface {
	GetNamespace() string
	SetNamespace(string)
}](o T) T {
	if o.GetNamespace() == "" {
		o.SetNamespace("default")
	}
	return o
}

func isKustomization(file string) bool {
	switch file {
	case "kustomization.yaml", "kustomization.yml", "Kustomization":
		return true
	}
	return false
}

func name(u *unstructured.Unstructured) string {
	if u.GetName() == "" {
		return "(unnamed)"
	}
	if u.GetNamespace() == "" {
		return u.GetName()
	}
	return u.GetNamespace() + "/" + u.GetName()
}

type (
	gwKind = gwapiv1.Kind
	gwPort = gwapiv1.PortNumber
)
