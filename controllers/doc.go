// Package controllers holds Weft's reconcilers. They are thin: they list the
// world from the informer cache, hand it to internal/ingest and
// internal/xds/translate, and apply the result (xDS snapshots, status,
// Certificates).
package controllers
