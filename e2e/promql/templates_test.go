package promql

import (
	"bufio"
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/teststorage"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/internal/inject"
	"github.com/weft-mesh/weft/internal/ir"
	"github.com/weft-mesh/weft/internal/xds/translate"
)

// Scrapes are loaded every scrapeEvery from 0 to end; queries run at end
// with a 1m interval, as Flagger's and Argo Rollouts' analyses would.
const (
	scrapeEvery = 15 * time.Second
	end         = 2 * time.Minute
)

// target is one scraped pod: the labels the kubernetes-pods scrape job (or
// the weft-proxies PodMonitor) gives its series, and what it exposed.
type target struct {
	namespace, pod string
	// families are the pod's metrics as exposed; at scrape time t every
	// counter and histogram has grown linearly from 0 to its value at
	// one minute (series of gauges keep their value).
	families map[string]*dto.MetricFamily
}

// TestEnvoyTemplates runs the sidecar templates over the golden exposition
// of four injected Envoys: a Flagger canary (Deployment checkout) and its
// primary, and a Rollout's canary and stable revisions.
func TestEnvoyTemplates(t *testing.T) {
	targets := envoyTargets(t)
	st := load(t, targets)
	flagger, argo := templates(t)

	canary := pick(targets, "checkout-5d8f7c9b4-x2x9k")
	inbound := ir.InboundClusterName(8080)
	wantRate, wantP99 := envoyTruth(t, canary, inbound)
	if wantRate != 0.95 {
		t.Fatalf("the golden canary should have a 95%% success rate, has %v", wantRate)
	}

	vars := map[string]string{"namespace": "shop", "target": "checkout", "interval": "1m"}
	expect(t, "Flagger weft-request-success-rate", eval(t, st, flaggerQuery(t, flagger["weft-request-success-rate"], vars)), 100*wantRate)
	expect(t, "Flagger weft-request-duration-p99", eval(t, st, flaggerQuery(t, flagger["weft-request-duration-p99"], vars)), wantP99)

	// The primary must not leak into the canary's numbers, nor the canary's
	// outbound calls (with their many 5xx): checked by the values above;
	// and the primary's own numbers come out of the same query.
	primary := pick(targets, "checkout-primary-7f6d5c4b3-k8s2m")
	pRate, pP99 := envoyTruth(t, primary, inbound)
	vars["target"] = "checkout-primary"
	expect(t, "Flagger weft-request-success-rate (primary)", eval(t, st, flaggerQuery(t, flagger["weft-request-success-rate"], vars)), 100*pRate)
	expect(t, "Flagger weft-request-duration-p99 (primary)", eval(t, st, flaggerQuery(t, flagger["weft-request-duration-p99"], vars)), pP99)

	// The caller's view (docs/progressive-delivery.md): calls from
	// workload checkout to Service payments, by the outbound cluster's
	// stat name.
	outRate, _ := envoyTruth(t, canary, translate.StatName(ir.ClusterName("payments.shop.svc.cluster.local", 8080)))
	expect(t, "calls from checkout to payments not 5xx", eval(t, st, sourceViewQuery), outRate)

	// The serving side by destination Service (docs/progressive-delivery.md):
	// the canary's pods, for calls addressed to the apex checkout only;
	// neither the calls to checkout-canary nor the primary's count.
	svcRate, svcP99 := serviceTruth(t, canary, "checkout")
	if svcRate == wantRate || svcP99 == wantP99 {
		t.Fatalf("the golden should tell the Service's rate and p99 (%v, %v) from the workload's", svcRate, svcP99)
	}
	expect(t, "canary's calls addressed to checkout not 5xx", eval(t, st, serviceViewQuery), svcRate)
	expect(t, "canary's calls addressed to checkout, p99", eval(t, st, serviceViewP99), svcP99)

	for _, c := range []struct{ pod, hash string }{{"ledger-bbb7c9-q4w8z", "bbb7c9"}, {"ledger-aaa4d2-m2n7p", "aaa4d2"}} {
		rate, p99 := envoyTruth(t, pick(targets, c.pod), inbound)
		args := map[string]string{"namespace": "shop", "rollout": "ledger", "canary-hash": c.hash}
		expect(t, "Argo weft-request-success/success-rate "+c.hash, eval(t, st, argoQuery(t, argo["weft-request-success/success-rate"], args)), rate)
		expect(t, "Argo weft-request-success/latency-p99 "+c.hash, eval(t, st, argoQuery(t, argo["weft-request-success/latency-p99"], args)), p99)
	}
}

// sourceViewQuery is the documented query for one caller's calls to one
// Service.
const sourceViewQuery = `
  sum(rate(envoy_cluster_upstream_rq_xx{workload_namespace="shop", workload="checkout", envoy_cluster_name=~"outbound\\|[0-9]+\\|\\|payments_shop_svc_.+", envoy_response_code_class!="5"}[1m]))
  /
  sum(rate(envoy_cluster_upstream_rq_xx{workload_namespace="shop", workload="checkout", envoy_cluster_name=~"outbound\\|[0-9]+\\|\\|payments_shop_svc_.+"}[1m]))`

// serviceViewQuery and serviceViewP99 are the documented queries for one
// workload's requests addressed to one Service.
const (
	serviceViewQuery = `
  sum(rate(envoy_vhost_vcluster_upstream_rq_xx{workload_namespace="shop", destination_service="checkout", workload="checkout", envoy_response_code_class!="5"}[1m]))
  /
  sum(rate(envoy_vhost_vcluster_upstream_rq_xx{workload_namespace="shop", destination_service="checkout", workload="checkout"}[1m]))`
	serviceViewP99 = `
  histogram_quantile(0.99, sum by (le) (rate(envoy_vhost_vcluster_upstream_rq_time_bucket{workload_namespace="shop", destination_service="checkout", workload="checkout"}[1m])))`
)

// TestEnvoyGoldenMatchesTheInjector ties the golden exposition to the
// product: its series carry exactly the stats tags the injector gives an
// Envoy, and the inbound cluster is named as translate names it.
func TestEnvoyGoldenMatchesTheInjector(t *testing.T) {
	want := []string{inject.StatsTagWorkload, inject.StatsTagWorkloadKind, inject.StatsTagWorkloadNamespace, inject.StatsTagWorkloadRevision}
	for _, tg := range envoyTargets(t) {
		for name, mf := range tg.families {
			for _, m := range mf.GetMetric() {
				have := map[string]bool{}
				for _, l := range m.GetLabel() {
					have[l.GetName()] = true
				}
				for _, w := range want {
					if !have[w] {
						t.Errorf("%s: %s has no %s label, which the injected proxy's stats carry", tg.pod, name, w)
					}
				}
			}
		}
		found := false
		for _, m := range tg.families["envoy_cluster_upstream_rq_xx"].GetMetric() {
			for _, l := range m.GetLabel() {
				found = found || l.GetName() == "envoy_cluster_name" && l.GetValue() == ir.InboundClusterName(8080)
			}
		}
		if !found {
			t.Errorf("%s: no inbound cluster %s in the golden", tg.pod, ir.InboundClusterName(8080))
		}
		// Per-Service inbound series: Envoy names the statistic
		// vhost.<virtual host>.vcluster.<virtual cluster>.<stat>; its
		// default tags give the two names, and the bootstrap's regex
		// gives the Service.
		re := regexp.MustCompile(inject.DestinationServiceTagRegex)
		for _, fam := range []string{"envoy_vhost_vcluster_upstream_rq", "envoy_vhost_vcluster_upstream_rq_xx", "envoy_vhost_vcluster_upstream_rq_time"} {
			if len(tg.families[fam].GetMetric()) == 0 && strings.HasPrefix(tg.pod, "checkout") {
				t.Errorf("%s: no %s in the golden", tg.pod, fam)
			}
			for _, m := range tg.families[fam].GetMetric() {
				vh, vc := label(m, "envoy_virtual_host"), label(m, "envoy_virtual_cluster")
				if vc != ir.InboundClusterName(8080) {
					t.Errorf("%s: %s virtual cluster %q, translate names it %q", tg.pod, fam, vc, ir.InboundClusterName(8080))
				}
				sub := re.FindStringSubmatch("vhost." + vh + ".vcluster." + vc + ".upstream_rq_200")
				if sub == nil || sub[2] != label(m, inject.StatsTagDestinationService) {
					t.Errorf("%s: %s has %s=%q, the bootstrap's tag regex gives %q", tg.pod, fam, inject.StatsTagDestinationService, label(m, inject.StatsTagDestinationService), sub)
				}
			}
		}
		// Outbound series carry the cluster's stat name, as translate
		// sets it.
		outbound := translate.StatName(ir.ClusterName("payments.shop.svc.cluster.local", 8080))
		for _, m := range tg.families["envoy_cluster_upstream_rq_xx"].GetMetric() {
			if n := label(m, "envoy_cluster_name"); n != ir.InboundClusterName(8080) && n != outbound {
				t.Errorf("%s: cluster %q is neither the inbound cluster nor %q", tg.pod, n, outbound)
			}
		}
	}
}

func envoyTargets(t *testing.T) []target {
	t.Helper()
	files, err := filepath.Glob("testdata/envoy-*.prom")
	if err != nil || len(files) != 4 {
		t.Fatalf("golden exposition files: %v %v", files, err)
	}
	var out []target
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, target{namespace: "shop", pod: strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "envoy-"), ".prom"), families: fams})
	}
	return out
}

func pick(ts []target, pod string) target {
	for _, t := range ts {
		if t.pod == pod {
			return t
		}
	}
	panic("no target " + pod)
}

// envoyTruth computes, without PromQL, what the templates must say of one
// Envoy: the share of inbound requests that were not 5xx and the p99 of
// the inbound request time, interpolated in its bucket as Prometheus
// documents histogram_quantile.
func envoyTruth(t *testing.T, tg target, cluster string) (rate, p99 float64) {
	t.Helper()
	return truth(t, tg, "envoy_cluster_upstream_rq", "envoy_cluster_name", cluster)
}

// serviceTruth is envoyTruth for the requests a pod served that were
// addressed to one Service (its inbound virtual cluster series).
func serviceTruth(t *testing.T, tg target, service string) (rate, p99 float64) {
	t.Helper()
	return truth(t, tg, "envoy_vhost_vcluster_upstream_rq", inject.StatsTagDestinationService, service)
}

// truth is the share of not-5xx requests and the p99 request time of the
// series of family (<family>_xx, <family>_time) whose label is value.
func truth(t *testing.T, tg target, family, labelName, value string) (rate, p99 float64) {
	t.Helper()
	var good, all float64
	for _, m := range tg.families[family+"_xx"].GetMetric() {
		if label(m, labelName) != value {
			continue
		}
		all += m.GetCounter().GetValue()
		if label(m, "envoy_response_code_class") != "5" {
			good += m.GetCounter().GetValue()
		}
	}
	for _, m := range tg.families[family+"_time"].GetMetric() {
		if label(m, labelName) == value {
			p99 = quantile(0.99, m.GetHistogram())
		}
	}
	if all == 0 {
		t.Fatalf("%s: no requests with %s=%q in the golden", tg.pod, labelName, value)
	}
	return good / all, p99
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// quantile interpolates linearly inside the bucket holding rank q*count,
// from the bucket's lower bound (0 for the first).
func quantile(q float64, h *dto.Histogram) float64 {
	buckets := slices.Clone(h.GetBucket())
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].GetUpperBound() < buckets[j].GetUpperBound() })
	total := float64(h.GetSampleCount())
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range buckets {
		c := float64(b.GetCumulativeCount())
		if c >= rank {
			if math.IsInf(b.GetUpperBound(), 1) {
				return lower
			}
			return lower + (b.GetUpperBound()-lower)*(rank-below)/(c-below)
		}
		lower, below = b.GetUpperBound(), c
	}
	return lower
}

// load appends every target's series to a fresh storage, one scrape every
// scrapeEvery, with the labels the scrape adds.
func load(t *testing.T, targets []target) storage.Storage {
	t.Helper()
	st := teststorage.New(t)
	app := st.Appender(context.Background())
	for ts := time.Duration(0); ts <= end; ts += scrapeEvery {
		grow := ts.Seconds() / 60
		for _, tg := range targets {
			for name, mf := range tg.families {
				for _, m := range mf.GetMetric() {
					base := labels.NewBuilder(labels.EmptyLabels())
					for _, l := range m.GetLabel() {
						base.Set(l.GetName(), l.GetValue())
					}
					base.Set("namespace", tg.namespace)
					base.Set("pod", tg.pod)
					base.Set("job", "kubernetes-pods")
					add := func(metric string, extra map[string]string, v float64) {
						b := labels.NewBuilder(base.Labels())
						b.Set(model.MetricNameLabel, metric)
						for k, val := range extra {
							b.Set(k, val)
						}
						if _, err := app.Append(0, b.Labels(), ts.Milliseconds(), v); err != nil {
							t.Fatal(err)
						}
					}
					switch mf.GetType() {
					case dto.MetricType_COUNTER:
						add(name, nil, m.GetCounter().GetValue()*grow)
					case dto.MetricType_GAUGE:
						add(name, nil, m.GetGauge().GetValue())
					case dto.MetricType_HISTOGRAM:
						h := m.GetHistogram()
						for _, b := range h.GetBucket() {
							add(name+"_bucket", map[string]string{"le": strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)}, float64(b.GetCumulativeCount())*grow)
						}
						add(name+"_bucket", map[string]string{"le": "+Inf"}, float64(h.GetSampleCount())*grow)
						add(name+"_sum", nil, h.GetSampleSum()*grow)
						add(name+"_count", nil, float64(h.GetSampleCount())*grow)
					default:
						t.Fatalf("%s: metric type %s", name, mf.GetType())
					}
				}
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	return st
}

// eval runs an instant query at the end of the loaded data and returns its
// single value.
func eval(t *testing.T, st storage.Storage, query string) float64 {
	t.Helper()
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e7, Timeout: 30 * time.Second})
	q, err := engine.NewInstantQuery(context.Background(), st, nil, query, time.UnixMilli(end.Milliseconds()))
	if err != nil {
		t.Fatalf("%v\n%s", err, query)
	}
	defer q.Close()
	res := q.Exec(context.Background())
	if res.Err != nil {
		t.Fatalf("%v\n%s", res.Err, query)
	}
	v, err := res.Vector()
	if err != nil || len(v) != 1 {
		t.Fatalf("want one sample, got %v (%v)\n%s", res.Value, err, query)
	}
	return v[0].F
}

func expect(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.IsNaN(got) || math.Abs(got-want) > 1e-6*math.Max(1, math.Abs(want)) {
		t.Errorf("%s = %v, want %v", what, got, want)
	} else {
		t.Logf("%s = %.4f", what, got)
	}
}

// repoRoot is Weft's source tree, two levels above this file.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// templates reads the shipped templates: Flagger's queries by template
// name, Argo Rollouts' by "template/metric".
func templates(t *testing.T) (flagger, argo map[string]string) {
	t.Helper()
	flagger, argo = map[string]string{}, map[string]string{}
	for _, f := range []string{"flagger-metrictemplates.yaml", "argo-analysistemplates.yaml"} {
		raw, err := os.ReadFile(filepath.Join(repoRoot(), "config", "canary", f))
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
		for {
			doc, err := r.Read()
			if err != nil {
				break
			}
			var obj struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
				Spec struct {
					Query   string `json:"query"`
					Metrics []struct {
						Name     string `json:"name"`
						Provider struct {
							Prometheus struct {
								Query string `json:"query"`
							} `json:"prometheus"`
						} `json:"provider"`
					} `json:"metrics"`
				} `json:"spec"`
			}
			if err := yaml.Unmarshal(doc, &obj); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			switch obj.Kind {
			case "MetricTemplate":
				flagger[obj.Metadata.Name] = obj.Spec.Query
			case "AnalysisTemplate":
				for _, m := range obj.Spec.Metrics {
					argo[obj.Metadata.Name+"/"+m.Name] = m.Provider.Prometheus.Query
				}
			}
		}
	}
	if len(flagger) != 4 || len(argo) != 4 {
		t.Fatalf("templates: Flagger %v, Argo Rollouts %v", keys(flagger), keys(argo))
	}
	return flagger, argo
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// flaggerQuery renders a MetricTemplate query as Flagger v1.36.1 does
// (pkg/metrics/observers/render.go, RenderQuery): Go text/template with
// missingkey=error and the functions of MetricTemplateModel
// (pkg/apis/flagger/v1beta1/metric.go, TemplateFunctions): name,
// namespace, target, service, ingress, route and interval return the
// model's fields, variables its map. This module does not import Flagger:
// its observers package would compile every metrics provider Flagger has.
func flaggerQuery(t *testing.T, q string, vars map[string]string) string {
	t.Helper()
	funcs := template.FuncMap{"variables": func() map[string]string { return map[string]string{} }}
	for _, name := range []string{"name", "namespace", "target", "service", "ingress", "route", "interval"} {
		v := vars[name]
		funcs[name] = func() string { return v }
	}
	tmpl, err := template.New("tmpl").Option("missingkey=error").Funcs(funcs).Parse(q)
	if err != nil {
		t.Fatalf("%v\n%s", err, q)
	}
	var out strings.Builder
	if err := tmpl.Execute(&out, nil); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// argoQuery resolves an AnalysisTemplate's arguments as Argo Rollouts
// v1.10.1 does (utils/template/template.go, ResolveArgs): every {{tag}},
// its spaces trimmed, must be "args.<name>" of a given argument, and an
// unresolved one is an error.
func argoQuery(t *testing.T, q string, args map[string]string) string {
	t.Helper()
	return argoTag.ReplaceAllStringFunc(q, func(tag string) string {
		name := strings.TrimSpace(argoTag.FindStringSubmatch(tag)[1])
		v, ok := args[strings.TrimPrefix(name, "args.")]
		if !ok || !strings.HasPrefix(name, "args.") {
			t.Fatalf("failed to resolve %s in\n%s", tag, q)
		}
		return v
	})
}

var argoTag = regexp.MustCompile(`\{\{(.*?)\}\}`)
