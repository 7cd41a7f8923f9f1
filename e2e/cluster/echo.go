package cluster

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/orca"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The workloads speak one tiny gRPC service, described by hand so that no
// code generation is needed: weft.e2e.Echo/Echo takes a StringValue and
// answers with the name of the pod that served the call.
const (
	EchoService = "weft.e2e.Echo"
	EchoMethod  = "/" + EchoService + "/Echo"
)

// echoServer is the handler type the service description refers to.
type echoServer interface {
	Echo(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
}

var echoServiceDesc = grpc.ServiceDesc{
	ServiceName: EchoService,
	HandlerType: (*echoServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			if interceptor == nil {
				return srv.(echoServer).Echo(ctx, in)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: EchoMethod}
			return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
				return srv.(echoServer).Echo(ctx, req.(*wrapperspb.StringValue))
			})
		},
	}},
	Metadata: "e2e/cluster/echo.go",
}

// Behaviour is how a backend answers, switchable while it serves.
type Behaviour struct {
	delay     atomic.Int64 // nanoseconds
	failEvery atomic.Int64
	failCode  atomic.Uint32
	calls     atomic.Int64
	failed    atomic.Int64

	loadOnce  sync.Once
	load      orca.ServerMetricsRecorder
	reporting atomic.Bool
}

// metrics is what the backend reports of its load with every response
// (ORCA, in the endpoint-load-metrics-bin trailer): nothing until SetLoad.
func (b *Behaviour) metrics() orca.ServerMetricsRecorder {
	b.loadOnce.Do(func() { b.load = orca.NewServerMetricsRecorder() })
	return b.load
}

// SetLoad makes the backend report this CPU utilisation (0 to 1 and more)
// and rate of queries per second with every response, as a server that
// measures its load would.
func (b *Behaviour) SetLoad(utilization, qps float64) {
	m := b.metrics()
	m.SetCPUUtilization(utilization)
	m.SetQPS(qps)
	b.reporting.Store(true)
}

// SetDelay makes every call take at least d before it is answered (or
// until the caller gives up).
func (b *Behaviour) SetDelay(d time.Duration) { b.delay.Store(int64(d)) }

// SetFailures makes every n-th call the backend receives fail with code:
// n = 1 fails all calls, n = 2 every second one, n = 0 none. A fixed
// pattern rather than a coin flip keeps the measured rates exact, so the
// tests can hold the mesh to tight bounds.
func (b *Behaviour) SetFailures(n int, code codes.Code) {
	b.failCode.Store(uint32(code))
	b.failEvery.Store(int64(n))
}

// Calls is how many calls the backend has received.
func (b *Behaviour) Calls() int64 { return b.calls.Load() }

// Failed is how many calls the backend has failed on purpose.
func (b *Behaviour) Failed() int64 { return b.failed.Load() }

type echoHandler struct {
	pod string
	b   *Behaviour
}

func (h *echoHandler) Echo(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	n := h.b.calls.Add(1)
	if h.b.reporting.Load() {
		// Asking for the call's recorder is what makes the response carry
		// the load report (the server-wide figures SetLoad keeps).
		_ = orca.CallMetricsRecorderFromContext(ctx)
	}
	if d := time.Duration(h.b.delay.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if every := h.b.failEvery.Load(); every > 0 && n%every == 0 {
		h.b.failed.Add(1)
		return nil, status.Errorf(codes.Code(h.b.failCode.Load()), "%s fails this call on purpose", h.pod)
	}
	return wrapperspb.String(h.pod), nil
}

// Echo calls the echo service on conn and returns the name of the pod that
// answered.
func Echo(ctx context.Context, conn grpc.ClientConnInterface, opts ...grpc.CallOption) (string, error) {
	out := new(wrapperspb.StringValue)
	if err := conn.Invoke(ctx, EchoMethod, wrapperspb.String("ping"), out, opts...); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}
