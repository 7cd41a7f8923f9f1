package translate

import (
	"bytes"
	"encoding/binary"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weft-mesh/weft/internal/ir"
)

// randomInputs are fixed pseudo-random generator inputs, so the property
// tests see many different meshes and always the same ones.
func randomInputs(n int) [][]byte {
	r := rand.New(rand.NewPCG(7, 11))
	out := make([][]byte, n)
	for i := range out {
		b := make([]byte, 64+r.IntN(512))
		for j := 0; j+8 <= len(b); j += 8 {
			binary.LittleEndian.PutUint64(b[j:], r.Uint64())
		}
		out[i] = b
	}
	return out
}

// allConfigs translates every group of m every way, each resource
// serialised deterministically, in a fixed order.
func allConfigs(t *testing.T, m *ir.Mesh, opts Options) []byte {
	t.Helper()
	p, err := Prepare(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	eps := Endpoints(m)
	for _, g := range m.ProxyGroups {
		c, err := p.ForGroup(g)
		if err != nil {
			t.Fatal(err)
		}
		r := c.Resources()
		r.Endpoints = eps
		buf.Write(marshalAll(t, r))
		gc, err := p.ForGRPC(g)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(marshalAll(t, gc.Resources()))
	}
	return buf.Bytes()
}

// TestDeterministic: equal inputs give byte-identical output, whether the
// model is translated again from scratch or is an equal copy.
func TestDeterministic(t *testing.T) {
	for i, in := range randomInputs(200) {
		opts := Options{Tracing: &Tracing{Address: "collector", Port: 4317, SamplingPercent: 10}}
		a := allConfigs(t, genMesh(in), opts)
		b := allConfigs(t, genMesh(in), opts)
		if !bytes.Equal(a, b) {
			t.Fatalf("input %d: two translations of equal meshes differ", i)
		}
	}
}

// TestConcurrentForGroup: one Prepared serves every group from many
// goroutines at once (as a server does) with the same result as one at a
// time. Run with -race to check the sharing.
func TestConcurrentForGroup(t *testing.T) {
	m := syntheticMesh(40)
	p, err := Prepare(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := make([][]byte, len(m.ProxyGroups))
	for i, g := range m.ProxyGroups {
		c, err := p.ForGroup(g)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = marshalAll(t, c.Resources())
	}
	fresh, err := Prepare(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < len(m.ProxyGroups); i += 4 {
				c, err := fresh.ForGroup(m.ProxyGroups[i])
				if err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(marshalAll(t, c.Resources()), want[i]) {
					t.Errorf("group %d differs when translated concurrently", i)
				}
				if _, err := fresh.ForGRPC(m.ProxyGroups[i]); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}

// TestSharing: groups that see the mesh the same way (same consumer
// routes, same reachable Services) get the very same shared resources,
// and so does everything a view holds; the per-group part stays small.
func TestSharing(t *testing.T) {
	m := syntheticMesh(150)
	p, err := Prepare(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	eps := Endpoints(m)
	checkResources(t, &Resources{Endpoints: eps})
	validated := make(map[any]bool)
	byView := make(map[string]*Config)
	for _, g := range m.ProxyGroups {
		c, err := p.ForGroup(g)
		if err != nil {
			t.Fatal(err)
		}
		if first, ok := byView[c.View]; ok {
			if c.Shared != first.Shared {
				t.Errorf("groups of view %q do not share it", c.View)
			}
			if c.Own.Listeners[1] != first.Own.Listeners[1] {
				t.Errorf("groups of view %q do not share the outbound listener", c.View)
			}
		} else {
			byView[c.View] = c
		}
		if n := c.Own.Count(); n > 8 {
			t.Errorf("group %s has %d resources of its own; want only its inbound side", g.Key, n)
		}
		// Clusters are built once per port: every view holds the same
		// messages.
		for _, cl := range c.Shared.Clusters {
			if i, ok := slices.BinarySearchFunc(p.clusters, resourceName(cl), func(r types.Resource, name string) int { return strings.Compare(resourceName(r), name) }); !ok || p.clusters[i] != cl {
				t.Errorf("group %s has its own copy of outbound cluster %s", g.Key, resourceName(cl))
			}
		}
		// Validate each shared set once and every group's own part.
		if !validated[c.Shared] {
			validated[c.Shared] = true
			checkResources(t, c.Shared)
		}
		for _, l := range c.Own.Listeners {
			if !validated[l] {
				validated[l] = true
				if err := validateDeep(l); err != nil {
					t.Errorf("listener %s of %s: %v", resourceName(l), g.Key, err)
				}
			}
		}
		checkResources(t, &Resources{Clusters: c.Own.Clusters, Secrets: c.Own.Secrets})
		checkSnapshot(t, withEndpointsOf(c, eps))
	}
	if len(p.views) < 2 {
		t.Errorf("%d consumer views; the synthetic mesh should have some", len(p.views))
	}
	scoped := 0
	for v := range byView {
		if strings.Contains(v, "~") {
			scoped++
		}
	}
	if scoped == 0 {
		t.Errorf("views %v: access policies of the synthetic mesh should scope some groups", slices.Collect(maps.Keys(byView)))
	}
}

func TestConsumerViewRoutes(t *testing.T) {
	m := syntheticMesh(100)
	p, err := Prepare(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.views) == 0 {
		t.Fatal("the synthetic mesh has consumer routes, but Prepare made no namespace views")
	}
	for ns, v := range p.views {
		if v == p.base || v.shared == p.base.shared {
			t.Errorf("namespace %s shares the base view", ns)
		}
		found := false
		for _, r := range v.shared.Routes {
			if n := resourceName(r); len(n) > len(ns)+1 && n[len(n)-len(ns)-1:] == "@"+ns {
				found = true
			}
		}
		if !found {
			t.Errorf("the view of namespace %s has no consumer route configuration", ns)
		}
	}
}
