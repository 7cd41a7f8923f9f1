//go:build linux

package capture

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
)

// The redirect test runs in private namespaces so it can install nftables
// rules and addresses without touching the host:
//
//	test process (host)
//	└─ re-exec in a new user+net namespace ("pod" namespace A), uid 0 inside
//	   ├─ lo: pod IPs 10.99.0.2/32, fd00:99::2/128
//	   ├─ veth weft-a 10.99.1.1/24 ─── weft-b 10.99.1.2/24 in namespace B
//	   │                                B's lo: 10.99.0.3, 10.99.2.3, fd00:99::3, fd00:99:2::3
//	   └─ re-exec as uid 1337 (same namespaces) for the proxy's own traffic
//
// Inbound must come from B through the veth: a connection opened inside A to
// A's own address is NATed once, in the output hook, and never meets the
// prerouting chain, so it cannot prove the inbound rules.
const (
	envRole    = "WEFT_CAPTURE_TEST_ROLE"
	envTarget  = "WEFT_CAPTURE_TEST_TARGET"
	roleNetns  = "netns"
	roleDialer = "dial"

	ioTimeout = 3 * time.Second
)

func TestMain(m *testing.M) {
	if os.Getenv(envRole) == roleDialer {
		// Child process running as the proxy UID: one connection, print the reply.
		line, err := request(context.Background(), net.Dial, os.Getenv(envTarget))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(line)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestRedirectInNetns proves with real TCP connections that an applied Plan
// sends inbound and outbound traffic to the proxy ports with the original
// destination intact, and leaves the exceptions alone.
func TestRedirectInNetns(t *testing.T) {
	if os.Getenv(envRole) != roleNetns {
		reexecInPrivateNetns(t)
		return
	}

	ctx := t.Context()
	peerNS := buildTopology(t)

	cfg := DefaultConfig()
	cfg.ExcludeInboundPorts = []uint16{7070}
	cfg.ExcludeOutboundPorts = []uint16{9090}
	cfg.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("10.99.2.0/24"), netip.MustParsePrefix("fd00:99:2::/64")}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	plan := Build(cfg)
	// Twice: the second run must replace, not append.
	for range 2 {
		if err := Apply(ctx, plan); err != nil {
			t.Fatalf("apply: %v", err)
		}
	}
	assertInstalled(t, plan)

	// Pod namespace A: the proxy's listeners and the app.
	listen(t, "tcp4", ":15001", "outbound", true)
	listen(t, "tcp6", ":15001", "outbound", true)
	listen(t, "tcp4", ":15006", "inbound", true)
	listen(t, "tcp6", ":15006", "inbound", true)
	listen(t, "tcp", ":15021", "health", false)
	listen(t, "tcp", ":8080", "app", false)
	listen(t, "tcp", ":7070", "app", false)
	listen(t, "tcp", ":8081", "app", false)
	// Namespace B: the rest of the world.
	for _, port := range []string{":8080", ":9090"} {
		if err := inNetns(peerNS, func() error {
			ln, err := net.Listen("tcp", port)
			if err != nil {
				return err
			}
			serve(t, ln, "remote", false)
			return nil
		}); err != nil {
			t.Fatalf("listen in peer namespace: %v", err)
		}
	}

	fromPod := func(addr string) (string, error) { return request(ctx, dialer().Dial, addr) }
	fromPeer := func(addr string) (string, error) {
		var line string
		err := inNetns(peerNS, func() error {
			var err error
			line, err = request(ctx, dialer().Dial, addr)
			return err
		})
		return line, err
	}
	asProxy := func(addr string) (string, error) { return requestAsUID(ctx, t, cfg.ProxyUID, addr) }

	cases := []struct {
		name string
		from func(string) (string, error)
		addr string
		want string
	}{
		{"outbound ipv4 goes to 15001", fromPod, "10.99.0.3:8080", "outbound 10.99.0.3:8080"},
		{"outbound ipv6 goes to 15001", fromPod, "[fd00:99::3]:8080", "outbound [fd00:99::3]:8080"},
		{"excluded outbound port is direct", fromPod, "10.99.0.3:9090", "remote 10.99.0.3:9090"},
		{"excluded outbound ipv4 cidr is direct", fromPod, "10.99.2.3:8080", "remote 10.99.2.3:8080"},
		{"excluded outbound ipv6 cidr is direct", fromPod, "[fd00:99:2::3]:8080", "remote [fd00:99:2::3]:8080"},
		{"ipv4 loopback is direct", fromPod, "127.0.0.1:8081", "app 127.0.0.1:8081"},
		{"ipv6 loopback is direct", fromPod, "[::1]:8081", "app [::1]:8081"},
		{"proxy uid is not looped back", asProxy, "10.99.0.3:8080", "remote 10.99.0.3:8080"},
		{"inbound ipv4 goes to 15006", fromPeer, "10.99.0.2:8080", "inbound 10.99.0.2:8080"},
		{"inbound ipv6 goes to 15006", fromPeer, "[fd00:99::2]:8080", "inbound [fd00:99::2]:8080"},
		{"excluded inbound port is direct", fromPeer, "10.99.0.2:7070", "app 10.99.0.2:7070"},
		{"proxy port inbound is direct", fromPeer, "10.99.0.2:15021", "health 10.99.0.2:15021"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.from(tc.addr)
			if err != nil {
				t.Fatalf("connect to %s: %v", tc.addr, err)
			}
			if got != tc.want {
				t.Errorf("connect to %s answered %q, want %q", tc.addr, got, tc.want)
			}
		})
	}

	t.Run("reapply replaces the rules", func(t *testing.T) {
		changed := cfg
		changed.ExcludeOutboundPorts = nil
		plan := Build(changed)
		if err := Apply(ctx, plan); err != nil {
			t.Fatalf("apply: %v", err)
		}
		assertInstalled(t, plan)
		got, err := fromPod("10.99.0.3:9090")
		if err != nil {
			t.Fatal(err)
		}
		if want := "outbound 10.99.0.3:9090"; got != want {
			t.Errorf("after dropping the port exclusion, 10.99.0.3:9090 answered %q, want %q", got, want)
		}
	})
}

// reexecInPrivateNetns runs this test again in a new user and network
// namespace. It is what `unshare -rn` does, with one difference: `unshare -r`
// maps a single UID, and the test needs the proxy UID to exist inside too. A
// process that is root outside may write a wider map itself, which Go's
// SysProcAttr does; util-linux would need the setuid newuidmap helper.
func reexecInPrivateNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root: it maps uids 0-65535 into a private user namespace so the proxy uid 1337 exists there")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestRedirectInNetns$", "-test.v", "-test.count=1", "-test.timeout=90s")
	cmd.Env = append(os.Environ(), envRole+"="+roleNetns)
	ids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 65536}}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: ids,
		GidMappings: ids,
		// The uid 1337 child drops supplementary groups, which needs
		// setgroups(2) to stay allowed in the namespace.
		GidMappingsEnableSetgroups: true,
		Pdeathsig:                  syscall.SIGKILL,
	}
	out, err := cmd.CombinedOutput()
	t.Logf("inside the private namespaces:\n%s", out)
	if err != nil {
		t.Fatalf("test in private namespaces failed: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestRedirectInNetns") {
		t.Fatal("test in private namespaces did not report a pass")
	}
}

// buildTopology sets up namespace A (the caller's) and creates namespace B,
// returning a descriptor for B.
func buildTopology(t *testing.T) int {
	t.Helper()
	if err := disableDAD(); err != nil {
		t.Fatal(err)
	}
	peerNS, err := newNetns()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscallClose(peerNS) })
	if err := inNetns(peerNS, disableDAD); err != nil {
		t.Fatal(err)
	}

	pod, err := dialRtnl(0)
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	peer, err := dialRtnl(peerNS)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()

	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	steps := []func() error{
		func() error { return pod.addVeth("weft-a", "weft-b", peerNS) },
		func() error { return pod.setUp("lo") },
		func() error { return pod.setUp("weft-a") },
		func() error { return pod.addAddr("lo", p("10.99.0.2/32")) },
		func() error { return pod.addAddr("lo", p("fd00:99::2/128")) },
		func() error { return pod.addAddr("weft-a", p("10.99.1.1/24")) },
		func() error { return pod.addAddr("weft-a", p("fd00:99:1::1/64")) },
		func() error { return pod.addRoute(p("10.99.0.0/16"), a("10.99.1.2")) },
		func() error { return pod.addRoute(p("fd00:99::/32"), a("fd00:99:1::2")) },
		func() error { return peer.setUp("lo") },
		func() error { return peer.setUp("weft-b") },
		func() error { return peer.addAddr("lo", p("10.99.0.3/32")) },
		func() error { return peer.addAddr("lo", p("10.99.2.3/32")) },
		func() error { return peer.addAddr("lo", p("fd00:99::3/128")) },
		func() error { return peer.addAddr("lo", p("fd00:99:2::3/128")) },
		func() error { return peer.addAddr("weft-b", p("10.99.1.2/24")) },
		func() error { return peer.addAddr("weft-b", p("fd00:99:1::2/64")) },
		func() error { return peer.addRoute(p("10.99.0.2/32"), a("10.99.1.1")) },
		func() error { return peer.addRoute(p("fd00:99::2/128"), a("fd00:99:1::1")) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("build test network: %v", err)
		}
	}
	return peerNS
}

// assertInstalled checks that the kernel holds exactly one weft table whose
// chains have exactly the plan's rules.
func assertInstalled(t *testing.T, plan Plan) {
	t.Helper()
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var table *nftables.Table
	for _, tb := range tables {
		if tb.Name == plan.Table {
			if table != nil {
				t.Fatalf("table %s installed twice", plan.Table)
			}
			table = tb
		}
	}
	if table == nil {
		t.Fatalf("table inet %s not installed", plan.Table)
	}
	for _, c := range plan.Chains {
		rules, err := conn.GetRules(table, &nftables.Chain{Name: c.Name, Table: table})
		if err != nil {
			t.Fatalf("list rules of %s: %v", c.Name, err)
		}
		if len(rules) != len(c.Rules) {
			t.Errorf("chain %s has %d rules, want %d", c.Name, len(rules), len(c.Rules))
		}
	}
}

func dialer() *net.Dialer { return &net.Dialer{Timeout: ioTimeout} }

// request connects to addr and returns the one line the server writes.
func request(ctx context.Context, dial func(network, addr string) (net.Conn, error), addr string) (string, error) {
	c, err := dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	deadline := time.Now().Add(ioTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := c.SetDeadline(deadline); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read reply from %s: %w", addr, err)
	}
	return strings.TrimSpace(line), nil
}

// requestAsUID makes the request from a child process running as uid. The
// test binary lives in a directory only root may enter, so the child runs a
// copy placed where uid can read it.
func requestAsUID(ctx context.Context, t *testing.T, uid uint32, addr string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			return "", err
		}
	}
	bin := filepath.Join(dir, "capture.test")
	if err := copyFile(os.Args[0], bin); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*ioTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Dir = "/"
	cmd.Env = []string{envRole + "=" + roleDialer, envTarget + "=" + addr}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("dial as uid %d: %w: %s", uid, err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

func listen(t *testing.T, network, addr, name string, origDst bool) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	serve(t, ln, name, origDst)
}

// serve answers every connection with "<name> <address>": the original
// destination for the proxy's listeners, the local address otherwise. The
// accept loop ends when the test closes the listener.
func serve(t *testing.T, ln net.Listener, name string, origDst bool) {
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(ioTimeout))
				dst := c.LocalAddr().String()
				if origDst {
					ap, err := originalDst(c.(*net.TCPConn))
					if err != nil {
						dst = "error: " + err.Error()
					} else {
						dst = ap.String()
					}
				}
				fmt.Fprintf(c, "%s %s\n", name, dst)
			}()
		}
	}()
}

func syscallClose(fd int) error { return syscall.Close(fd) }
