// Package cli is what `kubectl weft` does, separate from its flags: read
// manifests, run the controller's own pure stages (ingest, translate,
// status) on them, and say what the controller would say.
//
// It must not import controllers or the xDS server: its verdicts come
// from the same pure functions the controller calls, not from a copy.
package cli
