package argohealth

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/weft-mesh/weft/internal/testenv"
)

// TestNotInTheController checks that the Lua interpreter stays a test
// dependency: the controller binary does not link this package.
func TestNotInTheController(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "./cmd/weft-controller")
	cmd.Dir = testenv.RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "github.com/weft-mesh/weft/internal/argohealth" || strings.HasPrefix(dep, "github.com/yuin/gopher-lua") {
			t.Errorf("weft-controller links %s", dep)
		}
	}
}

// TestRun checks the calling convention on a script of Argo CD's form.
func TestRun(t *testing.T) {
	h, err := Run(`local hs = {}
if obj.status ~= nil and obj.status.ready == true then hs.status = "Healthy" else hs.status = "Progressing" end
hs.message = obj.metadata.name
return hs`, map[string]any{"metadata": map[string]any{"name": "x"}, "status": map[string]any{"ready": true}})
	if err != nil || h.Status != "Healthy" || h.Message != "x" {
		t.Fatalf("Run = %v, %v", h, err)
	}
	if _, err := Run(`return { status = "Fine" }`, nil); err == nil {
		t.Error("a status Argo CD does not know was accepted")
	}
	if _, err := Run(`return string.format("%d", 1)`, nil); err == nil {
		t.Error("the string library is open, which Argo CD does not do")
	}
}
