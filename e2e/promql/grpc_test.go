package promql

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats/opentelemetry"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// server is a real grpc-go server with grpc-go's OpenTelemetry metrics,
// exported in Prometheus format as an application would, answering one
// unary method by a script.
type server struct {
	reg  *prometheus.Registry
	addr string
	// next says how the n-th call ends.
	next func(n int) (delay time.Duration, code codes.Code)
}

func startServer(t *testing.T, next func(n int) (time.Duration, codes.Code)) *server {
	t.Helper()
	s := &server{reg: prometheus.NewRegistry(), next: next}
	exp, err := otelprom.New(otelprom.WithRegisterer(s.reg))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	srv := grpc.NewServer(opentelemetry.ServerOption(opentelemetry.Options{MetricsOptions: opentelemetry.MetricsOptions{MeterProvider: mp}}))
	calls := 0
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "weft.test.Checkout",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Pay", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := &wrapperspb.StringValue{}
			if err := dec(in); err != nil {
				return nil, err
			}
			calls++
			delay, code := s.next(calls)
			time.Sleep(delay)
			if code != codes.OK {
				return nil, status.Error(code, "scripted failure")
			}
			return in, nil
		}}},
	}, struct{}{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr().String()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return s
}

// call makes n calls, one after another, and fails the test when a call
// does not end as scripted.
func (s *server) call(t *testing.T, n int) {
	t.Helper()
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := conn.Invoke(ctx, "/weft.test.Checkout/Pay", wrapperspb.String("x"), &wrapperspb.StringValue{})
		cancel()
		if c := status.Code(err); c != codes.OK && c != codes.Unavailable {
			t.Fatalf("call: %v", err)
		}
	}
}

// scrape is what Prometheus would read from the application's /metrics.
func (s *server) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

// TestGRPCTemplates runs the proxyless templates over what real grpc-go
// servers exported for real calls: a canary that fails one call in ten
// with UNAVAILABLE and answers one in fifty after 40 ms, and a primary
// that fails none, quickly. Each query must give the canary's numbers,
// recomputed here from the very histogram the server exported.
func TestGRPCTemplates(t *testing.T) {
	canary := startServer(t, func(n int) (time.Duration, codes.Code) {
		switch {
		case n%10 == 0:
			return 0, codes.Unavailable
		case n%50 == 1:
			return 40 * time.Millisecond, codes.OK
		}
		return 0, codes.OK
	})
	primary := startServer(t, func(int) (time.Duration, codes.Code) { return 0, codes.OK })
	canary.call(t, 500)
	primary.call(t, 300)

	cf, pf := canary.scrape(t), primary.scrape(t)
	const metric = "grpc_server_call_duration_seconds"
	if cf[metric] == nil {
		names := make([]string, 0, len(cf))
		for n := range cf {
			names = append(names, n)
		}
		t.Fatalf("grpc-go exported no %s; it exported %v", metric, names)
	}
	var ok, all float64
	var merged *dto.Histogram
	for _, m := range cf[metric].GetMetric() {
		h := m.GetHistogram()
		all += float64(h.GetSampleCount())
		if label(m, "grpc_status") == "OK" {
			ok += float64(h.GetSampleCount())
		}
		merged = mergeHistograms(merged, h)
	}
	if all != 500 || ok != 450 {
		t.Fatalf("the canary's server counted %v calls, %v OK; want 500 and 450", all, ok)
	}
	wantP99 := 1000 * quantile(0.99, merged)
	if wantP99 < 40 || wantP99 > 65 {
		t.Fatalf("the canary's p99 from its own histogram is %v ms; the script makes it 40-65 ms", wantP99)
	}

	flagger, argo := templates(t)
	st := load(t, []target{
		{namespace: "shop", pod: "podinfo-7d9f8b6c5-x2x9k", families: cf},
		{namespace: "shop", pod: "podinfo-primary-5c4b3a2d1-p9q8r", families: pf},
	})
	vars := map[string]string{"namespace": "shop", "target": "podinfo", "interval": "1m"}
	expect(t, "Flagger weft-grpc-success-rate", eval(t, st, flaggerQuery(t, flagger["weft-grpc-success-rate"], vars)), 100*ok/all)
	expect(t, "Flagger weft-grpc-duration-p99", eval(t, st, flaggerQuery(t, flagger["weft-grpc-duration-p99"], vars)), wantP99)

	// The same servers as a Rollout's canary and stable pods.
	st = load(t, []target{
		{namespace: "shop", pod: "ledger-bbb7c9-q4w8z", families: cf},
		{namespace: "shop", pod: "ledger-aaa4d2-m2n7p", families: pf},
	})
	args := map[string]string{"namespace": "shop", "rollout": "ledger", "canary-hash": "bbb7c9"}
	expect(t, "Argo weft-grpc-success/success-rate", eval(t, st, argoQuery(t, argo["weft-grpc-success/success-rate"], args)), ok/all)
	expect(t, "Argo weft-grpc-success/latency-p99", eval(t, st, argoQuery(t, argo["weft-grpc-success/latency-p99"], args)), wantP99)
	args["canary-hash"] = "aaa4d2"
	expect(t, "Argo weft-grpc-success/success-rate (stable)", eval(t, st, argoQuery(t, argo["weft-grpc-success/success-rate"], args)), 1)
}

// mergeHistograms adds b's buckets to a's (same bounds), as sum by (le)
// does.
func mergeHistograms(a, b *dto.Histogram) *dto.Histogram {
	if a == nil {
		out := &dto.Histogram{SampleCount: new(uint64), SampleSum: new(float64)}
		for _, bk := range b.GetBucket() {
			out.Bucket = append(out.Bucket, &dto.Bucket{UpperBound: new(float64), CumulativeCount: new(uint64)})
			*out.Bucket[len(out.Bucket)-1].UpperBound = bk.GetUpperBound()
		}
		a = out
	}
	*a.SampleCount += b.GetSampleCount()
	*a.SampleSum += b.GetSampleSum()
	for i, bk := range b.GetBucket() {
		*a.Bucket[i].CumulativeCount += bk.GetCumulativeCount()
	}
	return a
}
