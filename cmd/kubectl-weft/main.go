// Command kubectl-weft is the kubectl plugin for Weft (`kubectl weft ...`).
//
// Exit codes a CI job can use: 0 when nothing is wrong, 1 when the
// analysis found errors, 2 when the command could not run (bad flags,
// unreadable manifests).
package main

import (
	"io"
	"os"

	"github.com/weft-mesh/weft/internal/cli/command"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return command.Run(args, stdin, stdout, stderr)
}
