// Package proxyapi serves what each controller replica knows of the proxies
// connected to it (the debug.weft.dev API: proxies and their live
// configuration) through the Kubernetes API aggregation layer, so that
// `kubectl weft proxy-status` and `proxy-config` are authenticated and
// authorised by the API server and RBAC, not by an open port.
//
// A request is let in only with the client certificate of the API
// server's front proxy (checked against the CA the API server publishes in
// kube-system/extension-apiserver-authentication) or of another replica.
// A list asks every other replica for its own proxies.
//
// It must not import controllers/ or webhooks/.
package proxyapi
