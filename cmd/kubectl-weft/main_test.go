package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/internal/golden"
)

// TestGolden runs each case under testdata/<command>/<case>: the
// arguments in args (run from the case's directory), stdout, stderr and
// the exit code compared with want.txt.
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "*", "*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dir, "args"))
			if err != nil {
				t.Fatal(err)
			}
			wd, err := os.Getwd()
			if err != nil {
				t.Fatal(err)
			}
			t.Chdir(dir)
			var stdout, stderr bytes.Buffer
			code := run(strings.Fields(string(b)), strings.NewReader(""), &stdout, &stderr)
			got := fmt.Sprintf("$ kubectl weft %s\n%s", strings.TrimSpace(string(b)), stdout.String())
			if stderr.Len() > 0 {
				got += "stderr:\n" + stderr.String()
			}
			got += fmt.Sprintf("exit: %d\n", code)
			t.Chdir(wd)
			golden.Check(t, filepath.Join(dir, "want.txt"), []byte(got))
		})
	}
}

// TestRenderYAML checks the full form: Envoy's JSON names, the split's
// weights in the route the client gets.
func TestRenderYAML(t *testing.T) {
	t.Chdir(filepath.Join("testdata", "render", "client-workload"))
	var stdout, stderr bytes.Buffer
	args := append(strings.Fields("render -f ../../../../../config/samples -f services.yaml -f app.yaml --workload shop/Deployment/web"), "-o", "yaml")
	if code := run(args, strings.NewReader(""), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var doc struct {
		Node   string `json:"node"`
		Routes []struct {
			Name         string `json:"name"`
			VirtualHosts []struct {
				Routes []struct {
					Route struct {
						WeightedClusters struct {
							Clusters []struct {
								Name   string `json:"name"`
								Weight int    `json:"weight"`
							} `json:"clusters"`
						} `json:"weightedClusters"`
					} `json:"route"`
				} `json:"routes"`
			} `json:"virtualHosts"`
		} `json:"routes"`
	}
	if err := yaml.Unmarshal(stdout.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	weights := map[string]int{}
	for _, rc := range doc.Routes {
		if rc.Name != "checkout.shop.svc.cluster.local:80" {
			continue
		}
		for _, c := range rc.VirtualHosts[0].Routes[0].Route.WeightedClusters.Clusters {
			weights[c.Name] = c.Weight
		}
	}
	if doc.Node != "web-0.shop" || weights["outbound|80||checkout-v1.shop.svc.cluster.local"] != 90 || weights["outbound|80||checkout-v2.shop.svc.cluster.local"] != 10 {
		t.Errorf("node %q, checkout weights %v; want web-0.shop, 90/10", doc.Node, weights)
	}
}
