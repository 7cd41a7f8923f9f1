package translate

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/internal/golden"
	"github.com/weft-mesh/weft/internal/ir"
)

// goldenCase is a testdata/<case>.in.yaml file: a mesh, the proxy group to
// translate and how.
type goldenCase struct {
	// Group is the key of the proxy group in Mesh.ProxyGroups.
	Group string `json:"group"`
	// Kind is "envoy" (default), "grpc" (a proxyless client) or
	// "grpc-server" (the listener of a proxyless server at
	// ServerAddress:ServerPort).
	Kind          string  `json:"kind,omitempty"`
	ServerAddress string  `json:"serverAddress,omitempty"`
	ServerPort    int32   `json:"serverPort,omitempty"`
	Options       Options `json:"options"`
	Mesh          ir.Mesh `json:"mesh"`
}

func loadCase(t testing.TB, path string) *goldenCase {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c goldenCase
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &c
}

func (c *goldenCase) group(t testing.TB) *ir.ProxyGroup {
	t.Helper()
	return proxyGroup(t, &c.Mesh, c.Group)
}

// proxyGroup is the mesh's group named key.
func proxyGroup(t testing.TB, mesh *ir.Mesh, key string) *ir.ProxyGroup {
	t.Helper()
	for _, g := range mesh.ProxyGroups {
		if g.Key == key {
			return g
		}
	}
	t.Fatalf("no proxy group %q in the mesh", key)
	return nil
}

// translateCase runs the case and returns its resources (for a server
// listener, just that listener) and the problems found.
func translateCase(t testing.TB, c *goldenCase) (*Resources, []Problem) {
	t.Helper()
	p, err := Prepare(&c.Mesh, c.Options)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	g := c.group(t)
	switch c.Kind {
	case "", "envoy":
		cfg, err := p.ForGroup(g)
		if err != nil {
			t.Fatalf("ForGroup: %v", err)
		}
		return withEndpoints(cfg, &c.Mesh), p.Problems()
	case "grpc":
		cfg, err := p.ForGRPC(g)
		if err != nil {
			t.Fatalf("ForGRPC: %v", err)
		}
		return withEndpoints(cfg, &c.Mesh), p.Problems()
	case "grpc-server":
		l, err := p.GRPCServerListener(g, c.ServerAddress, c.ServerPort)
		if err != nil {
			t.Fatalf("GRPCServerListener: %v", err)
		}
		return &Resources{Listeners: []types.Resource{l}}, p.Problems()
	}
	t.Fatalf("unknown kind %q", c.Kind)
	return nil, nil
}

// TestGolden translates every testdata/<case>.in.yaml and compares all
// resources with <case>.out.yaml (go test -update rewrites them). Every
// resource must pass Envoy's validation, every configuration must make a
// consistent snapshot, and translating again must give the same bytes.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			c := loadCase(t, f)
			res, problems := translateCase(t, c)
			checkResources(t, res)
			if c.Kind != "grpc-server" {
				checkSnapshot(t, res)
			}
			again, _ := translateCase(t, c)
			if !bytes.Equal(marshalAll(t, res), marshalAll(t, again)) {
				t.Errorf("translating twice gave different bytes")
			}
			sections := resourceSections(res)
			if len(problems) > 0 {
				sections = append([]section{{name: "problems", raw: problems}}, sections...)
			}
			golden.Check(t, strings.TrimSuffix(f, ".in.yaml")+".out.yaml", toYAML(t, sections))
		})
	}
}
