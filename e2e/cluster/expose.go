package cluster

import (
	"context"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"

	"k8s.io/client-go/tools/clientcmd"
)

// ExposeAPI serves the API server on l, a listener handed in from outside
// the sandbox (SandboxOptions.Expose), by copying bytes both ways: TLS and
// authentication stay end to end. It writes a kubeconfig for that address
// and returns its path, for kubectl in another terminal.
func (c *Cluster) ExposeAPI(ctx context.Context, l net.Listener) (string, error) {
	u, err := url.Parse(c.Config.Host)
	if err != nil {
		return "", err
	}
	backend := u.Host
	cfg, err := clientcmd.Load(c.env.KubeConfig)
	if err != nil {
		return "", err
	}
	for _, cl := range cfg.Clusters {
		cl.Server = "https://" + l.Addr().String()
	}
	path := filepath.Join(c.WorkDir, "kubeconfig.host")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return "", err
	}
	go func() {
		<-ctx.Done()
		_ = l.Close()
	}()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go pipe(conn, backend)
		}
	}()
	return path, nil
}

// pipe copies a connection to and from addr until either side closes.
func pipe(in net.Conn, addr string) {
	defer in.Close()
	out, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer out.Close()
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}
	wg.Add(2)
	go cp(out, in)
	go cp(in, out)
	wg.Wait()
}
