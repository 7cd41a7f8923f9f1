package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/weft-mesh/weft/e2e/cluster"
)

// TestMain moves the whole test binary into a private user, network, mount
// and PID namespace before any test runs: pod IPs, the API server and the
// controller all live on that namespace's loopback, so nothing the tests
// do can reach another machine, and every process they start ends with
// them.
func TestMain(m *testing.M) {
	if _, err := cluster.EnterSandbox(cluster.SandboxOptions{Hosts: cluster.SandboxHosts()}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}
