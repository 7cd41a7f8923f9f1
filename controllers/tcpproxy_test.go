package controllers_test

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// apiProxy forwards the controller's connections to the API server, so a
// test can take the API server away (every connection dropped, new ones
// refused) and bring it back on the same address, as a restart would.
type apiProxy struct {
	target string
	addr   string

	mu    sync.Mutex
	lis   net.Listener
	conns map[net.Conn]bool
}

func newAPIProxy(t testing.TB, target string) *apiProxy {
	t.Helper()
	p := &apiProxy{target: target, conns: map[net.Conn]bool{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = lis.Addr().String()
	p.serve(lis)
	t.Cleanup(p.Down)
	return p
}

func (p *apiProxy) serve(lis net.Listener) {
	p.mu.Lock()
	p.lis = lis
	p.mu.Unlock()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go p.forward(c)
		}
	}()
}

func (p *apiProxy) forward(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.lis == nil {
		p.mu.Unlock()
		_ = c.Close()
		_ = up.Close()
		return
	}
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	_ = c.Close()
	_ = up.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// Down drops every connection and refuses new ones.
func (p *apiProxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lis != nil {
		_ = p.lis.Close()
		p.lis = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
}

// Up listens again on the same address.
func (p *apiProxy) Up() error {
	lis, err := net.Listen("tcp", p.addr)
	if err != nil {
		return errors.Join(errors.New("re-listening on the proxy address"), err)
	}
	p.serve(lis)
	return nil
}
