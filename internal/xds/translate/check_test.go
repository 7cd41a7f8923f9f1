package translate

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/internal/ir"
)

// validateDeep runs Envoy's validation on m and on every message packed in
// an Any inside it, which ValidateAll alone does not look into.
func validateDeep(m proto.Message) error {
	var errs []error
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, err)
		}
	}
	walkAnys(m.ProtoReflect(), func(a *anypb.Any) {
		inner, err := a.UnmarshalNew()
		if err != nil {
			errs = append(errs, fmt.Errorf("unpacking %s: %w", a.GetTypeUrl(), err))
			return
		}
		if err := validateDeep(inner); err != nil {
			errs = append(errs, fmt.Errorf("in %s: %w", a.GetTypeUrl(), err))
		}
	})
	return errors.Join(errs...)
}

func walkAnys(m protoreflect.Message, fn func(*anypb.Any)) {
	if a, ok := m.Interface().(*anypb.Any); ok {
		fn(a)
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := range l.Len() {
				walkAnys(l.Get(i).Message(), fn)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				walkAnys(mv.Message(), fn)
				return true
			})
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			walkAnys(v.Message(), fn)
		}
		return true
	})
}

// envoyRouteRules checks what Envoy's route table code refuses beyond the
// proto's own validation (source/common/router/config_impl.cc): a domain
// twice in a route configuration, more than one "*" virtual host, and a
// virtual cluster without headers.
func envoyRouteRules(rc *routev3.RouteConfiguration) error {
	var errs []error
	domains := map[string]string{}
	for _, vh := range rc.GetVirtualHosts() {
		for _, d := range vh.GetDomains() {
			if other, ok := domains[strings.ToLower(d)]; ok {
				errs = append(errs, fmt.Errorf("route %s: domain %q in virtual hosts %s and %s", rc.GetName(), d, other, vh.GetName()))
			}
			domains[strings.ToLower(d)] = vh.GetName()
		}
		for _, vc := range vh.GetVirtualClusters() {
			if len(vc.GetHeaders()) == 0 {
				errs = append(errs, fmt.Errorf("route %s, virtual host %s: virtual cluster %s defines no headers", rc.GetName(), vh.GetName(), vc.GetName()))
			}
		}
	}
	return errors.Join(errs...)
}

// checkRouteRules applies envoyRouteRules to route configurations and to
// those inline in a resource's connection managers.
func checkRouteRules(t testing.TB, res types.Resource) {
	t.Helper()
	if rc, ok := res.(*routev3.RouteConfiguration); ok {
		if err := envoyRouteRules(rc); err != nil {
			t.Error(err)
		}
		return
	}
	walkAnys(res.ProtoReflect(), func(a *anypb.Any) {
		hcm := &hcmv3.HttpConnectionManager{}
		if a.MessageIs(hcm) && a.UnmarshalTo(hcm) == nil && hcm.GetRouteConfig() != nil {
			if err := envoyRouteRules(hcm.GetRouteConfig()); err != nil {
				t.Error(err)
			}
		}
	})
}

// checkResources validates every resource and checks that the lists are
// sorted by name without duplicates.
func checkResources(t testing.TB, r *Resources) {
	t.Helper()
	for _, list := range [][]types.Resource{r.Listeners, r.Routes} {
		for _, res := range list {
			checkRouteRules(t, res)
		}
	}
	for typ, list := range map[string][]types.Resource{
		"listeners": r.Listeners, "routes": r.Routes, "clusters": r.Clusters, "endpoints": r.Endpoints, "secrets": r.Secrets,
	} {
		for i, res := range list {
			if err := validateDeep(res); err != nil {
				t.Errorf("%s %q: %v", typ, resourceName(res), err)
			}
			if i > 0 && resourceName(list[i-1]) >= resourceName(res) {
				t.Errorf("%s not sorted or duplicated: %q before %q", typ, resourceName(list[i-1]), resourceName(res))
			}
		}
	}
}

// checkSnapshot builds the go-control-plane snapshot a server would serve
// and checks that every referenced route configuration and endpoint set
// exists (and nothing else of those types).
func checkSnapshot(t testing.TB, r *Resources) {
	t.Helper()
	snap, err := cachev3.NewSnapshot("1", r.ByType())
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if err := snap.Consistent(); err != nil {
		t.Errorf("snapshot not consistent: %v", err)
	}
}

// withEndpoints is a group's configuration plus the endpoints of its
// clusters, as a proxy subscribes to them.
func withEndpoints(c *Config, mesh *ir.Mesh) *Resources {
	return withEndpointsOf(c, Endpoints(mesh))
}

// withEndpointsOf is a group's configuration plus those of eps its EDS
// clusters name.
func withEndpointsOf(c *Config, eps []types.Resource) *Resources {
	r := c.Resources()
	want := map[string]bool{}
	for _, cl := range r.Clusters {
		if cl, ok := cl.(*clusterv3.Cluster); ok && cl.GetType() == clusterv3.Cluster_EDS {
			want[cmp.Or(cl.GetEdsClusterConfig().GetServiceName(), cl.GetName())] = true
		}
	}
	for _, e := range eps {
		if want[resourceName(e)] {
			r.Endpoints = append(r.Endpoints, e)
		}
	}
	return r
}

// marshalAll is every resource serialised deterministically, for
// comparing two translations byte for byte.
func marshalAll(t testing.TB, r *Resources) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, list := range [][]types.Resource{r.Listeners, r.Routes, r.Clusters, r.Endpoints, r.Secrets} {
		for _, res := range list {
			b, err := deterministic.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			buf.WriteString(resourceName(res))
			buf.WriteByte(0)
			buf.Write(b)
		}
	}
	return buf.Bytes()
}

var readable = protojson.MarshalOptions{UseProtoNames: true}

// toYAML renders resources as YAML sections in xDS order, each resource in
// its JSON form with Anys expanded.
func toYAML(t testing.TB, sections []section) []byte {
	t.Helper()
	var out bytes.Buffer
	for _, s := range sections {
		if s.raw != nil {
			b, err := yaml.Marshal(map[string]any{s.name: s.raw})
			if err != nil {
				t.Fatal(err)
			}
			out.Write(b)
			continue
		}
		if len(s.resources) == 0 {
			continue
		}
		var items []any
		for _, res := range s.resources {
			j, err := readable.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			var v any
			if err := json.Unmarshal(j, &v); err != nil {
				t.Fatal(err)
			}
			items = append(items, v)
		}
		b, err := yaml.Marshal(map[string]any{s.name: items})
		if err != nil {
			t.Fatal(err)
		}
		out.Write(b)
	}
	return out.Bytes()
}

type section struct {
	name      string
	resources []types.Resource
	raw       any
}

func resourceSections(r *Resources) []section {
	return []section{
		{name: "listeners", resources: r.Listeners},
		{name: "routes", resources: r.Routes},
		{name: "clusters", resources: r.Clusters},
		{name: "endpoints", resources: r.Endpoints},
		{name: "secrets", resources: r.Secrets},
	}
}
