package server

import (
	"slices"
	"sync"
	"time"
)

// A proxy's first configuration is the whole mesh (megabytes at a thousand
// Services, as one response per type of a few hundred kilobytes to a
// megabyte), and gRPC holds a response in its buffers until the proxy has
// read it. When thousands of proxies connect at once, as after an
// installation, those responses would all sit in memory together (1.8 GB
// for 2000 proxies at 1000 Services, most of it in responses under a
// megabyte). A stream's first response of a type over firstResponse, and
// any response over largeResponse, therefore take a slot, held until the
// proxy acknowledges (or rejects) the response, its stream ends, or
// slotTimeout passes; a stream without a slot waits, first come first
// served. Small responses, every push after a proxy's first, need none.
const (
	firstResponse = 64 << 10
	largeResponse = 1 << 20
	slotTimeout   = 30 * time.Second
)

type pushSlots struct {
	mu      sync.Mutex
	free    int
	waiting []*deltaStream
}

func newPushSlots(n int) *pushSlots { return &pushSlots{free: n} }

// take takes a slot, or queues the stream to be woken when one is free.
func (p *pushSlots) take(st *deltaStream) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.free > 0 {
		p.free--
		if i := slices.Index(p.waiting, st); i >= 0 {
			p.waiting = slices.Delete(p.waiting, i, i+1)
		}
		return true
	}
	if !slices.Contains(p.waiting, st) {
		p.waiting = append(p.waiting, st)
	}
	return false
}

// give returns a slot and wakes the first waiting stream.
func (p *pushSlots) give() {
	p.mu.Lock()
	p.free++
	p.mu.Unlock()
	p.wakeNext()
}

// wakeNext wakes the first waiting stream if a slot is free. A woken
// stream that no longer needs the slot passes the wake on (see push).
func (p *pushSlots) wakeNext() {
	p.mu.Lock()
	if p.free == 0 || len(p.waiting) == 0 {
		p.mu.Unlock()
		return
	}
	next := p.waiting[0]
	p.waiting = p.waiting[1:]
	p.mu.Unlock()
	next.slotWake.Store(true)
	next.poke()
}

// forget drops a closing stream from the queue.
func (p *pushSlots) forget(st *deltaStream) {
	p.mu.Lock()
	if i := slices.Index(p.waiting, st); i >= 0 {
		p.waiting = slices.Delete(p.waiting, i, i+1)
	}
	p.mu.Unlock()
	if st.slotWake.Swap(false) {
		p.wakeNext()
	}
}

// slotHold is one taken slot; release gives it back once.
type slotHold struct {
	once  sync.Once
	timer *time.Timer
	p     *pushSlots
}

func (p *pushSlots) hold() *slotHold {
	h := &slotHold{p: p}
	h.timer = time.AfterFunc(slotTimeout, h.release)
	return h
}

func (h *slotHold) release() {
	h.once.Do(func() {
		h.timer.Stop()
		h.p.give()
	})
}
