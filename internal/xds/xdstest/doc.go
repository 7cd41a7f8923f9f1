// Package xdstest has what tests and benchmarks need to act as proxies: a
// small ADS client that subscribes, acknowledges (or rejects) responses and
// records what it received, and a CA that issues SPIFFE client and server
// certificates.
//
// It is for tests only.
package xdstest
