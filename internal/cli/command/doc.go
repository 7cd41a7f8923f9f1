// Package command is `kubectl weft`: its commands and flags. The offline
// commands (analyze -f, render, diff, inject) call internal/cli; the ones
// that read a cluster (check, proxy-status, proxy-config, analyze without
// -f) reach it with kubectl's own connection flags.
package command
