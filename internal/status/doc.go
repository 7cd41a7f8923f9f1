// Package status builds the status Weft wants on every object it reports
// on, as data: ingest's verdicts, with what translation had to leave out
// and what the proxies acknowledged folded in. Build merges conditions by
// type (at most one of each, messages of several problems joined and
// bounded) and keeps every value within what the API server's validation
// accepts, so a writer only has to diff and write, and equal input always
// gives equal output.
//
// It is pure: no client, no clock. It must not import controllers or
// webhooks.
package status
