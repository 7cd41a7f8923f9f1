package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-logr/logr"

	"github.com/weft-mesh/weft/internal/capture"
)

// fileFromEnv is one --file-from-env=ENV=PATH.
type fileFromEnv struct {
	env, path string
}

type fileFromEnvList []fileFromEnv

func (l *fileFromEnvList) String() string {
	parts := make([]string, len(*l))
	for i, f := range *l {
		parts[i] = f.env + "=" + f.path
	}
	return strings.Join(parts, ",")
}

func (l *fileFromEnvList) Set(s string) error {
	env, path, ok := strings.Cut(s, "=")
	if !ok || env == "" || !filepath.IsAbs(path) {
		return fmt.Errorf("%q is not ENV=/absolute/path", s)
	}
	*l = append(*l, fileFromEnv{env: env, path: filepath.Clean(path)})
	return nil
}

// runInit writes the proxy's files and installs the redirect rules. Files
// first: if the rules fail, the container fails and the pod never starts
// with traffic going nowhere.
func runInit(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout io.Writer) error {
	log := logr.FromContextOrDiscard(ctx)
	fs := flag.NewFlagSet("weft-init", flag.ContinueOnError)
	fs.SetOutput(stdout)
	cfg := capture.DefaultConfig()
	cfg.RegisterFlags(fs)
	var files fileFromEnvList
	fs.Var(&files, capture.FlagFileFromEnv, "write the value of environment variable ENV to PATH (ENV=PATH, repeatable)")
	copySelf := fs.String(capture.FlagCopySelf, "", "copy this executable to `path`")
	dryRun := fs.Bool("dry-run", false, "print the redirect rules instead of installing them (files are still written)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid capture flags: %w", err)
	}

	for _, f := range files {
		v, ok := lookupEnv(f.env)
		if !ok {
			return fmt.Errorf("environment variable %s for %s is not set", f.env, f.path)
		}
		if err := writeFileAtomic(f.path, strings.NewReader(v), 0o444); err != nil {
			return err
		}
		log.Info("wrote file", "path", f.path, "bytes", len(v))
	}
	if *copySelf != "" {
		if err := copyExecutable(*copySelf); err != nil {
			return err
		}
		log.Info("copied executable", "path", *copySelf)
	}

	plan := capture.Build(cfg)
	if *dryRun {
		_, err := io.WriteString(stdout, plan.String())
		return err
	}
	if err := capture.Apply(ctx, plan); err != nil {
		return fmt.Errorf("install redirect rules: %w", err)
	}
	return nil
}

func copyExecutable(dst string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	src, err := os.Open(self) //nolint:gosec // our own executable, from os.Executable
	if err != nil {
		return fmt.Errorf("open own executable: %w", err)
	}
	defer src.Close()
	return writeFileAtomic(dst, src, 0o555)
}

// writeFileAtomic writes r to path through a temporary file in the same
// directory, so a reader never sees a partial file, even if a restarted
// init container writes it again.
func writeFileAtomic(path string, r io.Reader, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, copyErr := io.Copy(tmp, r)
	err = errors.Join(copyErr, tmp.Chmod(mode), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
