package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/weft-mesh/weft/internal/capture"
)

const (
	commandWaitReady = capture.CommandWaitReady
	commandDrain     = capture.CommandDrain

	pollInterval = 250 * time.Millisecond
)

// runWaitReady blocks until the URL answers 200. It is the postStart hook of
// a proxy that runs as a regular container: the kubelet does not start the
// next container until the hook returns, so the app starts after its proxy.
func runWaitReady(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet(commandWaitReady, flag.ContinueOnError)
	url := fs.String(capture.FlagURL, "http://127.0.0.1:15021/ready", "URL that answers 200 once the proxy is ready")
	timeout := fs.Duration(capture.FlagTimeout, 5*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	log := logr.FromContextOrDiscard(ctx)
	client := &http.Client{Timeout: time.Second}
	var last error
	err := poll(ctx, func() (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			last = err
			return false, nil
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			last = fmt.Errorf("status %s", resp.Status)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("proxy not ready at %s within %s: %w", *url, *timeout, errors.Join(err, last))
	}
	log.Info("proxy ready", "url", *url)
	return nil
}

// runDrain is the proxy's preStop hook. It asks Envoy to drain its inbound
// listeners gracefully, then waits, at most --timeout, for the proxy's open
// connections to close, so the kubelet's SIGTERM (which stops Envoy at once)
// cuts as few requests as possible.
func runDrain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet(commandDrain, flag.ContinueOnError)
	admin := fs.String(capture.FlagAdmin, "127.0.0.1:15000", "address of the proxy's admin interface")
	timeout := fs.Duration(capture.FlagTimeout, 10*time.Second, "wait at most this long for connections to close")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	log := logr.FromContextOrDiscard(ctx)
	client := &http.Client{Timeout: time.Second}
	base := "http://" + *admin

	// Mutating admin endpoints accept only POST.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/drain_listeners?inboundonly&graceful", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("start drain: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("start drain: admin answered %s", resp.Status)
	}
	log.Info("draining inbound listeners")

	open := -1
	err = poll(ctx, func() (bool, error) {
		n, err := openConnections(ctx, client, base)
		if err != nil {
			// The proxy may already be going away; keep trying until the deadline.
			return false, nil
		}
		open = n
		return n == 0, nil
	})
	if err != nil {
		// Not a failure of the hook: long-lived connections may outlast any
		// drain, and the pod is terminating regardless.
		log.Info("connections still open at the drain deadline", "open", open, "timeout", timeout.String())
		return nil
	}
	log.Info("drained")
	return nil
}

// openConnections reads the server.total_connections gauge: every
// downstream connection the proxy currently holds.
func openConnections(ctx context.Context, client *http.Client, base string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+`/stats?filter=^server\.total_connections$`, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("stats: %s", resp.Status)
	}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 1<<16))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(name) == "server.total_connections" {
			return strconv.Atoi(strings.TrimSpace(value))
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("stats have no server.total_connections")
}

// poll calls check every pollInterval until it reports done, fails, or ctx
// ends.
func poll(ctx context.Context, check func() (bool, error)) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		done, err := check()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
