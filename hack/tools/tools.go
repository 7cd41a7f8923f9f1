//go:build tools

// Package tools pins the developer tools (controller-gen, golangci-lint,
// kustomize) that the Makefile builds from the Go module proxy.
package tools

import (
	_ "github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"
	_ "sigs.k8s.io/kustomize/kustomize/v5"
)
