package cluster

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	// sandboxEnv marks the re-executed program as running inside the box.
	sandboxEnv = "WEFT_CLUSTERBOX_SANDBOX"
	// exposedEnv lists the host addresses of the listeners handed in.
	exposedEnv = "WEFT_CLUSTERBOX_EXPOSED"
	// firstExposedFD is where the handed-in listeners start (after stdio).
	firstExposedFD = 3
)

// SandboxOptions say what the sandbox provides besides its own network.
type SandboxOptions struct {
	// Hosts are name → IP entries of the sandbox's /etc/hosts, in
	// addition to localhost; they let workloads dial the control plane by
	// the DNS name its certificate carries.
	Hosts map[string]string
	// Expose are TCP addresses on the host's loopback (e.g.
	// "127.0.0.1:0") to listen on outside the sandbox; the listeners are
	// handed in, so a program inside can serve people and tools outside
	// (kubectl) without any traffic leaving loopback.
	Expose []string
}

// Sandbox is the private environment the program runs in.
type Sandbox struct {
	// Exposed are the listeners asked for in SandboxOptions.Expose, in
	// order; they accept connections made to the host's loopback.
	Exposed []net.Listener
}

// entered is set once EnterSandbox has set the sandbox up.
var entered bool

// InSandbox reports whether the program runs inside the sandbox.
func InSandbox() bool { return entered || os.Getenv(sandboxEnv) == "1" }

// EnterSandbox runs the program in new user, network, mount and PID
// namespaces. Outside the sandbox it re-executes the running binary with
// the same arguments inside them, waits for it and exits with its status:
// it never returns there, except with an error when the namespaces cannot
// be made. Inside, it brings the loopback interface up, installs the hosts
// file and returns.
//
// Being PID 1 of its namespace, the re-executed program takes every
// process it starts (etcd, kube-apiserver, weft-controller) with it when it
// ends, however it ends; and it ends when its parent does.
func EnterSandbox(opts SandboxOptions) (*Sandbox, error) {
	if os.Getenv(sandboxEnv) == "1" {
		return setUpInside(opts)
	}
	os.Exit(runOutside(opts))
	return nil, nil // unreachable
}

func runOutside(opts SandboxOptions) int {
	var files []*os.File
	var addrs []string
	for _, addr := range opts.Expose {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "cluster box: listening on %s: %v\n", addr, err)
			return 1
		}
		f, err := l.(*net.TCPListener).File()
		if err != nil {
			fmt.Fprintf(os.Stderr, "cluster box: %v\n", err)
			return 1
		}
		files = append(files, f)
		addrs = append(addrs, l.Addr().String())
		_ = l.Close() // the duplicate in f keeps the socket open
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster box: %v\n", err)
		return 1
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), sandboxEnv+"=1", exposedEnv+"="+strings.Join(addrs, ","))
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWUSER | unix.CLONE_NEWNET | unix.CLONE_NEWNS | unix.CLONE_NEWPID,
		// The caller becomes root of the new user namespace: enough to
		// configure the namespace's own network and mounts, nothing more.
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		Pdeathsig:   syscall.SIGKILL,
	}
	// Signals meant for the program (Ctrl-C, a test timeout's SIGQUIT)
	// go to the copy inside, which decides how to stop.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGHUP)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "cluster box: cannot create the private user and network namespaces (%v).\n"+
			"The box needs unprivileged user namespaces: check that `unshare -rn true` works "+
			"(sysctl kernel.unprivileged_userns_clone=1, or on Ubuntu kernel.apparmor_restrict_unprivileged_userns=0).\n", err)
		return 1
	}
	for _, f := range files {
		_ = f.Close()
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	signal.Stop(sigs)
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster box: %v\n", err)
		return 1
	}
	return 0
}

func setUpInside(opts SandboxOptions) (*Sandbox, error) {
	if err := loopbackUp(); err != nil {
		return nil, err
	}
	if err := installHosts(opts.Hosts); err != nil {
		return nil, err
	}
	sb := &Sandbox{}
	if v := os.Getenv(exposedEnv); v != "" {
		for i := range strings.Split(v, ",") {
			f := os.NewFile(uintptr(firstExposedFD+i), "exposed-"+strconv.Itoa(i))
			l, err := net.FileListener(f)
			_ = f.Close()
			if err != nil {
				return nil, fmt.Errorf("exposed listener %d: %w", i, err)
			}
			sb.Exposed = append(sb.Exposed, l)
		}
	}
	// Children (the API server, the controller) must not inherit the
	// marker: they are not the program that entered the sandbox.
	_ = os.Unsetenv(sandboxEnv)
	_ = os.Unsetenv(exposedEnv)
	entered = true
	return sb, nil
}

// installHosts bind-mounts a hosts file over /etc/hosts, visible only in
// the sandbox's mount namespace.
func installHosts(hosts map[string]string) error {
	if len(hosts) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	names := make([]string, 0, len(hosts))
	for name := range hosts {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(&b, "%s\t%s\n", hosts[name], name)
	}
	f, err := os.CreateTemp("", "clusterbox-hosts-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // the mount keeps the file alive
	if _, err := f.WriteString(b.String()); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	if err := unix.Mount(f.Name(), "/etc/hosts", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mounting the sandbox's /etc/hosts: %w", err)
	}
	return nil
}
