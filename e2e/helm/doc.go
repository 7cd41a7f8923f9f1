// Package helm tests the Helm chart (charts/weft) with Helm's own SDK:
// lint, render, sameness with config/, and an install into a real API
// server. It is a module of its own so that Helm's dependencies stay out
// of Weft's go.mod.
package helm
