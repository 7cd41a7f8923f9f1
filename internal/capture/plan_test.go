package capture

import (
	"flag"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestBuildDefault(t *testing.T) {
	got := Build(DefaultConfig()).String()
	want := `table inet weft {
	chain inbound {
		type nat hook prerouting priority -100; policy accept;
		meta l4proto tcp tcp dport 15000-15090 return comment "proxy ports are served by the proxy itself"
		meta l4proto tcp redirect to :15006 comment "inbound to proxy"
	}
	chain outbound {
		type nat hook output priority -100; policy accept;
		meta l4proto tcp meta skuid 1337 return comment "connections made by the proxy"
		meta l4proto tcp ip daddr 127.0.0.0/8 return comment "loopback destinations"
		meta l4proto tcp ip6 daddr ::1/128 return comment "loopback destinations"
		meta l4proto tcp redirect to :15001 comment "outbound to proxy"
	}
}
`
	if got != want {
		t.Errorf("default plan:\n%s\nwant:\n%s", got, want)
	}
}

func TestBuildExclusions(t *testing.T) {
	cfg := DefaultConfig()
	cfg.InboundPort = 16006 // outside the reserved range: must be protected explicitly
	cfg.ExcludeInboundPorts = []uint16{22, 8443}
	cfg.ExcludeOutboundPorts = []uint16{5432}
	cfg.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	plan := Build(cfg)

	in := plan.Chains[0]
	if in.Hook != HookPrerouting || in.Name != ChainInbound {
		t.Fatalf("first chain is %s on %s, want inbound on prerouting", in.Name, in.Hook)
	}
	wantIn := []string{
		`meta l4proto tcp tcp dport 15000-15090 return comment "proxy ports are served by the proxy itself"`,
		`meta l4proto tcp tcp dport 16006 return comment "proxy listener ports"`,
		`meta l4proto tcp tcp dport { 22, 8443 } return comment "excluded inbound ports"`,
		`meta l4proto tcp redirect to :16006 comment "inbound to proxy"`,
	}
	assertRules(t, in, wantIn)

	out := plan.Chains[1]
	if out.Hook != HookOutput || out.Name != ChainOutbound {
		t.Fatalf("second chain is %s on %s, want outbound on output", out.Name, out.Hook)
	}
	wantOut := []string{
		`meta l4proto tcp meta skuid 1337 return comment "connections made by the proxy"`,
		`meta l4proto tcp ip daddr 127.0.0.0/8 return comment "loopback destinations"`,
		`meta l4proto tcp ip6 daddr ::1/128 return comment "loopback destinations"`,
		`meta l4proto tcp tcp dport 5432 return comment "excluded outbound ports"`,
		`meta l4proto tcp ip daddr 10.0.0.0/8 return comment "excluded outbound cidr"`,
		`meta l4proto tcp ip6 daddr fd00::/8 return comment "excluded outbound cidr"`,
		`meta l4proto tcp redirect to :15001 comment "outbound to proxy"`,
	}
	assertRules(t, out, wantOut)

	// The redirect is always last: every exception must be seen first.
	for _, c := range plan.Chains {
		for i, r := range c.Rules {
			if (r.Verdict == VerdictRedirect) != (i == len(c.Rules)-1) {
				t.Errorf("chain %s rule %d (%s): redirect must be exactly the last rule", c.Name, i, r)
			}
		}
	}
}

func assertRules(t *testing.T, c Chain, want []string) {
	t.Helper()
	var got []string
	for _, r := range c.Rules {
		got = append(got, r.String())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("chain %s rules:\n%s\nwant:\n%s", c.Name, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestArgsRoundTrip(t *testing.T) {
	cfg := Config{
		InboundPort:          15006,
		OutboundPort:         15001,
		ProxyUID:             1337,
		ExcludeInboundPorts:  []uint16{22, 8443},
		ExcludeOutboundPorts: []uint16{3306, 5432},
		ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")},
	}
	args := cfg.Args()
	wantArgs := []string{
		"--inbound-port=15006", "--outbound-port=15001", "--proxy-uid=1337",
		"--exclude-inbound-ports=22,8443", "--exclude-outbound-ports=3306,5432",
		"--exclude-outbound-cidrs=10.0.0.0/8,fd00::/8",
	}
	if !reflect.DeepEqual(args, wantArgs) {
		t.Errorf("Args() = %q, want %q", args, wantArgs)
	}
	var parsed Config
	fs := flag.NewFlagSet("weft-init", flag.ContinueOnError)
	parsed.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(parsed, cfg) {
		t.Errorf("parsed %+v, want %+v", parsed, cfg)
	}

	// Defaults survive when no flags are given.
	def := DefaultConfig()
	fs = flag.NewFlagSet("weft-init", flag.ContinueOnError)
	def.RegisterFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(def, DefaultConfig()) {
		t.Errorf("defaults changed by parsing no flags: %+v", def)
	}
}

func TestParsePorts(t *testing.T) {
	got, err := ParsePorts(" 8080, 22,8080,,")
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint16{22, 8080}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"0", "65536", "http", "80-90", "-1"} {
		if _, err := ParsePorts("22," + bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("ParsePorts(%q) error = %v, want one naming %q", bad, err, bad)
		}
	}
}

func TestParseCIDRs(t *testing.T) {
	got, err := ParseCIDRs("fd00::/8, 10.0.0.0/8,192.168.0.0/16,10.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	if want := "10.0.0.0/8,192.168.0.0/16,fd00::/8"; FormatCIDRs(got) != want {
		t.Errorf("got %s, want %s", FormatCIDRs(got), want)
	}
	cases := map[string]string{
		"10.1.2.3/8":  "the network is 10.0.0.0/8",
		"10.1.2.3":    "write 10.1.2.3/32",
		"10.0.0.0/33": "is not a CIDR",
		"example":     "is not a CIDR",
	}
	for in, want := range cases {
		if _, err := ParseCIDRs(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseCIDRs(%q) error = %v, want it to contain %q", in, err, want)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("default config invalid: %v", err)
	}
	bad := Config{InboundPort: 15001, OutboundPort: 15001, ProxyUID: 0,
		ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/8")}}
	err := bad.Validate()
	for _, want := range []string{"must differ", "proxy uid", "not a network address"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
}
