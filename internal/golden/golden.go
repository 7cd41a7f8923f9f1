// Package golden compares test output with files under testdata and
// rewrites them when tests run with -update (go test ./... -update). Every
// test package imports it, so that the flag is known to each test binary.
//
// It is for tests only.
package golden

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// Update rewrites golden files instead of comparing with them.
var Update = flag.Bool("update", false, "rewrite golden files under testdata")

// Check compares got with the golden file at path, or writes it with -update.
func Check(t testing.TB, path string, got []byte) {
	t.Helper()
	if *Update {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path) //nolint:gosec // a test file path
	if err != nil {
		t.Fatalf("reading golden file %s: %v (run go test -update to create it)", path, err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("output differs from %s (run go test -update and review the diff):\n%s", path, diff(want, got))
	}
}

// diff shows the first lines where want and got differ.
func diff(want, got []byte) string {
	w := bytes.Split(want, []byte("\n"))
	g := bytes.Split(got, []byte("\n"))
	var out bytes.Buffer
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 20; i++ {
		var a, b []byte
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if !bytes.Equal(a, b) {
			out.WriteString("line ")
			out.WriteString(strconv.Itoa(i + 1))
			out.WriteString(":\n- ")
			out.Write(a)
			out.WriteString("\n+ ")
			out.Write(b)
			out.WriteString("\n")
			shown++
		}
	}
	return out.String()
}
