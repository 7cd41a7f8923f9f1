// Command weft-init prepares a meshed pod: it runs as the pod's first init
// container, installs the nftables rules that redirect the pod's TCP traffic
// to the sidecar proxy, writes the proxy's bootstrap files, and copies itself
// next to them so the proxy container can run its lifecycle subcommands.
//
// Usage:
//
//	weft-init [capture flags] [--file-from-env=ENV=PATH]... [--copy-self=PATH] [--dry-run]
//	weft-init wait-ready --url=URL [--timeout=D]
//	weft-init drain [--admin=HOST:PORT] [--timeout=D]
//
// The injector (internal/inject) writes these command lines; the flag names
// live in internal/capture so both sides agree.
//
// This command must not import controllers/, webhooks/ or Kubernetes client
// code: it runs in every meshed pod and should stay small.
package main
