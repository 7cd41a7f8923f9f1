// Command kubectl-weft is the kubectl plugin for Weft (`kubectl weft ...`).
//
// Exit codes a CI job can use: 0 when nothing is wrong, 1 when the
// analysis found errors, 2 when the command could not run (bad flags,
// unreadable manifests).
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
