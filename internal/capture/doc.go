// Package capture describes and installs the packet redirect rules that send a
// meshed pod's TCP traffic through its Envoy sidecar.
//
// The package has two halves. Build turns a Config into a Plan: a plain value
// listing every chain and rule, with no side effects, so it can be unit tested
// and printed. Apply installs a Plan into the current network namespace with
// nftables over netlink (github.com/google/nftables); no iptables or nft binary
// is involved. Apply replaces the whole "weft" table in one atomic batch, so
// running it twice leaves exactly one copy of the rules.
//
// Inbound TCP is redirected to the proxy's inbound port (15006) in a nat
// prerouting chain, except for the proxy's reserved ports (15000-15090) and
// ports the pod excludes. Outbound TCP is redirected to the outbound port
// (15001) in a nat output chain, except for connections made by the proxy's
// own UID, loopback destinations, and excluded ports and CIDRs.
//
// Config also defines the command-line flags of weft-init, so the injector
// (which writes the flags) and weft-init (which reads them) cannot drift apart.
//
// This package must not import Kubernetes client code, controllers/, webhooks/
// or internal/inject: it runs inside a short-lived init container.
package capture
