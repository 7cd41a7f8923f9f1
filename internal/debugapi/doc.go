// Package debugapi holds the types of the debug.weft.dev API that every
// controller replica serves (internal/proxyapi) and `kubectl weft` reads:
// the proxies connected to the control plane and their live configuration.
//
// It imports nothing of Weft's, so the CLI can read the API without the
// xDS server.
package debugapi
