package translate

import (
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weft-mesh/weft/internal/ir"
)

// FuzzTranslate builds small meshes, including values ingest should never
// produce, and checks that translation does not fail or panic, that every
// resource passes Envoy's validation (inside Anys too), and that every
// configuration makes a consistent snapshot.
func FuzzTranslate(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 5, 0, 1, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Add([]byte("\x02\x04\x01\x00\x02\x01\x01\x03\x02\x02\x01\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"))
	f.Add([]byte("mesh with several services, routes, policies and groups: ????????????????????????????????????"))
	for i := range 8 {
		seed := make([]byte, 256)
		for j := range seed {
			seed[j] = byte((j*31 + i*17) ^ (j >> 2))
		}
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		opts := Options{}
		if len(data) > 0 && data[len(data)-1]&1 == 1 {
			opts = Options{BlockUnknown: true, DisableAccessLog: true, Tracing: &Tracing{Address: "10.1.2.3", Port: 4317, SamplingPercent: 150}}
		}
		checkMesh(t, genMesh(data), opts)
	})
}

// checkMesh translates every group of the mesh every way and checks the
// results.
func checkMesh(t *testing.T, m *ir.Mesh, options ...Options) {
	t.Helper()
	for _, opts := range options {
		p, err := Prepare(m, opts)
		if err != nil {
			t.Fatalf("Prepare: %v", err)
		}
		eps := Endpoints(m)
		for _, g := range m.ProxyGroups {
			cfg, err := p.ForGroup(g)
			if err != nil {
				t.Fatalf("ForGroup(%s): %v", g.Key, err)
			}
			r := cfg.Resources()
			r.Endpoints = eps
			checkResources(t, r)
			checkSnapshot(t, r)

			gcfg, err := p.ForGRPC(g)
			if err != nil {
				t.Fatalf("ForGRPC(%s): %v", g.Key, err)
			}
			gr := gcfg.Resources()
			gr.Endpoints = eps
			checkResources(t, gr)
			checkSnapshot(t, gr)

			for _, in := range g.Inbound {
				l, err := p.GRPCServerListener(g, "10.0.0.1", in.Port)
				if in.Port <= 0 || in.Port > 65535 {
					if err == nil {
						t.Errorf("GRPCServerListener accepted port %d", in.Port)
					}
					continue
				}
				if err != nil {
					t.Fatalf("GRPCServerListener(%s, %d): %v", g.Key, in.Port, err)
				}
				checkResources(t, &Resources{Listeners: []types.Resource{l}})
			}
		}
	}
}
