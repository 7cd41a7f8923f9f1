// Package controllers holds Weft's reconcilers. They are thin: they list the
// world from the informer cache, hand it to internal/ingest and
// internal/xds/translate, publish it through internal/xds/publish, and
// write status and Certificates.
package controllers
