// Package publish is the stage between translation and the xDS server: it
// turns one rebuild's translated configuration into what each proxy is
// served — layers shared between proxies, Envoy (delta ADS) and proxyless
// gRPC (state of the world, by name) alike — checks that every
// proxy's configuration is consistent (each route configuration a
// listener names is there), hands it to internal/xds/server, and maps
// what proxies report back (ACKs and NACKs, by the exact names of the
// resources they refused) to the objects a user would fix.
//
// It imports ingest, ir, translate, server and workload; it must not
// import controllers or webhooks.
package publish
