// Package canary proves that the canary tools' own code drives Weft: Argo
// Rollouts' SMI reconciler and Flagger's SMI routers, imported at the
// versions users run, write TrafficSplits into a cluster in a box with the
// real weft-controller, and real grpc-go calls follow every step. It is a
// module of its own so that the tools' dependencies stay out of Weft's
// go.mod. See docs/e2e.md.
package canary
