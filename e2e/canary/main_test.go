package canary

import (
	"fmt"
	"os"
	"testing"

	"github.com/weft-mesh/weft/e2e/cluster"
)

// TestMain moves the test binary into a private network namespace before
// any test runs, as the main end-to-end suite does: every address the
// tests use is on that namespace's loopback.
func TestMain(m *testing.M) {
	if _, err := cluster.EnterSandbox(cluster.SandboxOptions{Hosts: cluster.SandboxHosts()}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}
