// Package webhooks serves Weft's admission webhooks. Today that is the pod
// injector: a mutating webhook on Pod CREATE that looks up the namespace's
// labels, hands the pod to internal/inject, and returns the patch, the skip
// reason, or the rejection that comes back. All decisions live in
// internal/inject; this package only translates between admission requests
// and that pure function, and records an event for each injection.
//
// The package may import internal/ packages and controller-runtime; it must
// not import controllers/, and nothing in internal/ may import it.
package webhooks
