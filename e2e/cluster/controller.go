package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// controllerProcess is the weft-controller binary, run as the cluster
// would run its pod: own credentials, own certificate directory, logs to a
// file.
type controllerProcess struct {
	binary, workDir, kubeconfig string
	args                        []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	runs int
}

func (p *controllerProcess) logPath() string { return filepath.Join(p.workDir, "weft-controller.log") }

// start runs the controller and waits until it reports ready.
func (p *controllerProcess) start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("weft-controller is already running (pid %d)", p.cmd.Process.Pid)
	}
	logFile, err := os.OpenFile(p.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	p.runs++
	fmt.Fprintf(logFile, "==== weft-controller run %d, %s\n", p.runs, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.binary, p.args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+p.kubeconfig)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return fmt.Errorf("starting weft-controller: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return p.waitReady(ctx, done)
}

func (p *controllerProcess) waitReady(ctx context.Context, done chan struct{}) error {
	hc := &http.Client{Timeout: time.Second}
	errExited := errors.New("exited")
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		select {
		case <-done:
			return false, errExited
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+probeAddress+"/readyz", nil)
		if err != nil {
			return false, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			// Not listening yet.
			return false, nil
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	switch {
	case errors.Is(err, errExited):
		return fmt.Errorf("weft-controller exited during start-up; see %s", p.logPath())
	case wait.Interrupted(err):
		return fmt.Errorf("weft-controller not ready within a minute; see %s", p.logPath())
	}
	return err
}

// signal sends sig and waits for the process to end.
func (p *controllerProcess) signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd, p.done = nil, nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (p *controllerProcess) stop() { p.signal(syscall.SIGTERM) }

// KillController ends the controller process abruptly (SIGKILL), as a node
// failure or an OOM kill would: its xDS streams break and workloads keep
// their last configuration.
// Its pod leaves the endpoints of its Services, as the endpoint
// controller would take it out once its readiness probe fails.
func (c *Cluster) KillController() {
	c.controller.signal(syscall.SIGKILL)
	if err := c.setControllerEndpointReady(context.Background(), false); err != nil {
		c.opts.Logf("controller endpoint: %v", err)
	}
}

// StartController starts the controller again after KillController, waits
// until it is ready and puts its pod back among its Services' endpoints.
func (c *Cluster) StartController(ctx context.Context) error {
	if err := c.controller.start(ctx); err != nil {
		return err
	}
	return c.setControllerEndpointReady(ctx, true)
}
