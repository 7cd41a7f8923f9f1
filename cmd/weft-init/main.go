package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	log := funcr.NewJSON(func(obj string) { fmt.Fprintln(os.Stderr, obj) }, funcr.Options{})
	ctx = logr.NewContext(ctx, log)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout)
	stop()
	if err != nil {
		log.Error(err, "weft-init failed")
		os.Exit(1)
	}
}

// run dispatches to a subcommand; without one it prepares the pod.
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case commandWaitReady:
			return runWaitReady(ctx, args[1:])
		case commandDrain:
			return runDrain(ctx, args[1:])
		}
	}
	return runInit(ctx, args, lookupEnv, stdout)
}
