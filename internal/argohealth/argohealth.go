package argohealth

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// Checks are the health scripts of an argocd-cm ConfigMap, by key.
type Checks map[string]string

// Load reads the health checks from the argocd-cm patch Weft ships.
func Load(repoRoot string) (Checks, error) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "config", "argocd", "argocd-cm-patch.yaml")) //nolint:gosec // a file of the repository
	if err != nil {
		return nil, err
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(b, &cm); err != nil {
		return nil, fmt.Errorf("argocd-cm patch: %w", err)
	}
	return cm.Data, nil
}

// Key is the argocd-cm key Argo CD reads a kind's health check from.
func Key(gk schema.GroupKind) string {
	return "resource.customizations.health." + gk.Group + "_" + gk.Kind
}

// Health is what a script returned.
type Health struct {
	Status  string
	Message string
}

func (h Health) String() string { return h.Status + ": " + h.Message }

// Assess runs the check for obj's kind on obj, an object as read from the
// API server.
func (c Checks) Assess(gk schema.GroupKind, obj runtime.Object) (Health, error) {
	script, ok := c[Key(gk)]
	if !ok {
		return Health{}, fmt.Errorf("no health check under %s", Key(gk))
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return Health{}, err
	}
	return Run(script, u)
}

// Run runs a health script on an object given as JSON-like values.
func Run(script string, obj map[string]any) (Health, error) {
	// Argo CD (util/lua) skips the standard libraries and opens package,
	// base and table (and a reduced os, which the checks do not use): no
	// string or math library, so a check that needed them would fail
	// here as it would there.
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, open := range []struct {
		name string
		fn   lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		l.Push(l.NewFunction(open.fn))
		l.Push(lua.LString(open.name))
		l.Call(1, 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return Health{}, err
	}
	t, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return Health{}, fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	h := Health{Status: lua.LVAsString(t.RawGetString("status")), Message: lua.LVAsString(t.RawGetString("message"))}
	switch h.Status {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
		return h, nil
	}
	return h, fmt.Errorf("the script returned status %q, which Argo CD does not know", h.Status)
}

// toLua converts JSON-like values as Argo CD does: objects and arrays to
// tables (arrays from index 1), numbers to numbers.
func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case map[string]any:
		t := l.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(l, e))
		}
		return t
	case []any:
		t := l.NewTable()
		for _, e := range v {
			t.Append(toLua(l, e))
		}
		return t
	default:
		return lua.LString(fmt.Sprint(v))
	}
}
