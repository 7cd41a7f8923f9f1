// Command helm-package writes the chart archive (`helm package`) with
// Helm's own code: helm-package CHART_DIR DEST_DIR.
package main

import (
	"fmt"
	"os"

	"helm.sh/helm/v4/pkg/action"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: helm-package CHART_DIR DEST_DIR")
		os.Exit(2)
	}
	if err := os.MkdirAll(os.Args[2], 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	p := action.NewPackage()
	p.Destination = os.Args[2]
	out, err := p.Run(os.Args[1], nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helm-package:", err)
		os.Exit(1)
	}
	fmt.Println("wrote", out)
}
