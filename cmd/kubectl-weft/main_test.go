package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
