package promql

import (
	"maps"
	"regexp"
	"strings"
	"testing"

	"github.com/weft-mesh/weft/internal/inject"
)

// envoyTagger names statistics the way Envoy's Prometheus output does: it
// extracts tags from the dotted statistic name, cuts what each extractor
// matched, and turns the rest into a metric name. Each extractor is a
// regular expression whose first group is cut and whose second is the
// value. The defaults here are those of Envoy's
// source/common/config/well_known_names.cc that the statistics in the
// golden files meet (the tokenized ones written as the regular expressions
// they stand for); the custom one is the injected bootstrap's.
type envoyTagger []struct {
	tag string
	re  *regexp.Regexp
}

func newEnvoyTagger() envoyTagger {
	return envoyTagger{
		{inject.StatsTagDestinationService, regexp.MustCompile(inject.DestinationServiceTagRegex)},
		{"envoy_response_code", regexp.MustCompile(`_rq(_(\d{3}))$`)},
		{"envoy_response_code_class", regexp.MustCompile(`_rq_((\d))xx$`)},
		{"envoy_virtual_cluster", regexp.MustCompile(`^vhost\.[^.]+\.vcluster\.(([^.]+)\.)`)}, // vhost.*.vcluster.$.**
		{"envoy_cluster_name", regexp.MustCompile(`^cluster\.(([^.]+)\.)`)},                   // cluster.$.**
		{"envoy_virtual_host", regexp.MustCompile(`^vhost\.(([^.]+)\.)`)},                     // vhost.$.**
	}
}

// name returns the Prometheus metric name and tags of a statistic.
func (et envoyTagger) name(stat string) (string, map[string]string) {
	tags := map[string]string{}
	cut := make([]bool, len(stat))
	for _, x := range et {
		m := x.re.FindStringSubmatchIndex(stat)
		if m == nil {
			continue
		}
		tags[x.tag] = stat[m[4]:m[5]]
		for i := m[2]; i < m[3]; i++ {
			cut[i] = true
		}
	}
	var b strings.Builder
	for i := range stat {
		if !cut[i] {
			b.WriteByte(stat[i])
		}
	}
	return "envoy_" + notInMetricName.ReplaceAllString(b.String(), "_"), tags
}

// notInMetricName is what Envoy's Prometheus output replaces with "_".
var notInMetricName = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// TestEnvoyGoldenFollowsEnvoysNaming: every inbound and outbound request
// series in the golden exposition is what Envoy makes of the statistic the
// translated configuration produces (cluster.<cluster>.upstream_rq_* and
// vhost.<virtual host>.vcluster.<virtual cluster>.upstream_rq_*): the same
// metric name, and exactly these tags besides the bootstrap's fixed ones.
func TestEnvoyGoldenFollowsEnvoysNaming(t *testing.T) {
	et := newEnvoyTagger()
	fixed := []string{inject.StatsTagWorkload, inject.StatsTagWorkloadKind, inject.StatsTagWorkloadNamespace, inject.StatsTagWorkloadRevision}
	checked := map[string]int{}
	for _, tg := range envoyTargets(t) {
		for fam, mf := range tg.families {
			var root, base string
			switch {
			case strings.HasPrefix(fam, "envoy_cluster_upstream_rq"):
				root, base = "cluster", strings.TrimPrefix(fam, "envoy_cluster_")
			case strings.HasPrefix(fam, "envoy_vhost_vcluster_upstream_rq"):
				root, base = "vhost", strings.TrimPrefix(fam, "envoy_vhost_vcluster_")
			default:
				continue
			}
			for _, m := range mf.GetMetric() {
				stat := base
				switch base {
				case "upstream_rq":
					stat = "upstream_rq_" + label(m, "envoy_response_code")
				case "upstream_rq_xx":
					stat = "upstream_rq_" + label(m, "envoy_response_code_class") + "xx"
				}
				if root == "cluster" {
					stat = "cluster." + label(m, "envoy_cluster_name") + "." + stat
				} else {
					stat = "vhost." + label(m, "envoy_virtual_host") + ".vcluster." + label(m, "envoy_virtual_cluster") + "." + stat
				}
				name, tags := et.name(stat)
				have := map[string]string{}
				for _, l := range m.GetLabel() {
					have[l.GetName()] = l.GetValue()
				}
				for _, f := range fixed {
					delete(have, f)
				}
				if name != fam || !maps.Equal(tags, have) {
					t.Errorf("%s: Envoy exposes %s as %s%v, the golden has %s%v", tg.pod, stat, name, tags, fam, have)
				}
				checked[root]++
			}
		}
	}
	if checked["cluster"] == 0 || checked["vhost"] == 0 {
		t.Fatalf("checked %v: the golden should have both cluster and virtual cluster series", checked)
	}
}
