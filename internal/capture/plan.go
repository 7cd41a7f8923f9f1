package capture

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// TableName is the nftables table weft-init owns. It is in the inet family so
// one set of rules covers IPv4 and IPv6.
const TableName = "weft"

// Hook is the netfilter hook a chain is attached to.
type Hook string

// Hooks used by the plan.
const (
	// HookPrerouting sees packets arriving from the network: inbound traffic.
	HookPrerouting Hook = "prerouting"
	// HookOutput sees packets the pod's own processes send: outbound traffic.
	HookOutput Hook = "output"
)

// NATPriority is the priority of the plan's chains: the standard dstnat
// priority, where destination rewriting happens.
const NATPriority int32 = -100

// Verdict is what a matching rule does.
type Verdict string

// Verdicts used by the plan.
const (
	// VerdictReturn leaves the connection alone.
	VerdictReturn Verdict = "return"
	// VerdictRedirect rewrites the destination to a local port.
	VerdictRedirect Verdict = "redirect"
)

// Plan is the complete rule set weft-init installs, as data.
type Plan struct {
	// Table is the nftables table (inet family) holding the chains.
	Table string
	// Chains in the order they are created.
	Chains []Chain
}

// Chain is a nat base chain.
type Chain struct {
	// Name of the chain inside the table.
	Name string
	// Hook the chain is attached to.
	Hook Hook
	// Priority of the chain on its hook.
	Priority int32
	// Rules in evaluation order; the first rule with a verdict wins.
	Rules []Rule
}

// Rule matches TCP packets and gives a verdict. Every condition that is set
// must hold; unset conditions match anything.
type Rule struct {
	// Comment says why the rule exists; it is stored with the rule so
	// `nft list table inet weft` explains itself.
	Comment string
	// SocketUID matches packets whose local socket belongs to this UID.
	SocketUID *uint32
	// DstPrefix matches destination addresses in the network. The zero value
	// matches any address of either family.
	DstPrefix netip.Prefix
	// DstPorts matches any of these destination ports.
	DstPorts []uint16
	// DstPortRange matches destination ports in [First, Last].
	DstPortRange *PortRange
	// Verdict is applied when the rule matches.
	Verdict Verdict
	// RedirectPort is the local port for VerdictRedirect.
	RedirectPort uint16
}

// PortRange is an inclusive range of ports.
type PortRange struct {
	First, Last uint16
}

// Chain names inside the table.
const (
	ChainInbound  = "inbound"
	ChainOutbound = "outbound"
)

// Build turns a validated Config into the Plan that implements it.
func Build(c Config) Plan {
	return Plan{
		Table: TableName,
		Chains: []Chain{
			{Name: ChainInbound, Hook: HookPrerouting, Priority: NATPriority, Rules: inboundRules(c)},
			{Name: ChainOutbound, Hook: HookOutput, Priority: NATPriority, Rules: outboundRules(c)},
		},
	}
}

func inboundRules(c Config) []Rule {
	rules := []Rule{{
		Comment:      "proxy ports are served by the proxy itself",
		DstPortRange: &PortRange{First: ReservedPortFirst, Last: ReservedPortLast},
		Verdict:      VerdictReturn,
	}}
	// The redirect targets must never be redirected again, even when they
	// are configured outside the reserved range.
	var own []uint16
	for _, p := range []uint16{c.InboundPort, c.OutboundPort} {
		if p < ReservedPortFirst || p > ReservedPortLast {
			own = append(own, p)
		}
	}
	if len(own) > 0 {
		rules = append(rules, Rule{Comment: "proxy listener ports", DstPorts: sortedUnique(own), Verdict: VerdictReturn})
	}
	if len(c.ExcludeInboundPorts) > 0 {
		rules = append(rules, Rule{Comment: "excluded inbound ports", DstPorts: c.ExcludeInboundPorts, Verdict: VerdictReturn})
	}
	return append(rules, Rule{Comment: "inbound to proxy", Verdict: VerdictRedirect, RedirectPort: c.InboundPort})
}

func outboundRules(c Config) []Rule {
	uid := c.ProxyUID
	rules := []Rule{
		{Comment: "connections made by the proxy", SocketUID: &uid, Verdict: VerdictReturn},
		{Comment: "loopback destinations", DstPrefix: netip.MustParsePrefix("127.0.0.0/8"), Verdict: VerdictReturn},
		{Comment: "loopback destinations", DstPrefix: netip.MustParsePrefix("::1/128"), Verdict: VerdictReturn},
	}
	if len(c.ExcludeOutboundPorts) > 0 {
		rules = append(rules, Rule{Comment: "excluded outbound ports", DstPorts: c.ExcludeOutboundPorts, Verdict: VerdictReturn})
	}
	for _, p := range c.ExcludeOutboundCIDRs {
		rules = append(rules, Rule{Comment: "excluded outbound cidr", DstPrefix: p, Verdict: VerdictReturn})
	}
	return append(rules, Rule{Comment: "outbound to proxy", Verdict: VerdictRedirect, RedirectPort: c.OutboundPort})
}

func sortedUnique(ports []uint16) []uint16 {
	out := slices.Clone(ports)
	slices.Sort(out)
	return slices.Compact(out)
}

// String renders the plan in nft syntax, for logs and --dry-run. The text is
// informative; Apply does not parse it.
func (p Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", p.Table)
	for _, c := range p.Chains {
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype nat hook %s priority %d; policy accept;\n", c.Name, c.Hook, c.Priority)
		for _, r := range c.Rules {
			fmt.Fprintf(&b, "\t\t%s\n", r)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// String renders the rule in nft syntax.
func (r Rule) String() string {
	parts := []string{"meta l4proto tcp"}
	if r.SocketUID != nil {
		parts = append(parts, "meta skuid "+strconv.FormatUint(uint64(*r.SocketUID), 10))
	}
	if r.DstPrefix.IsValid() {
		fam := "ip"
		if r.DstPrefix.Addr().Is6() {
			fam = "ip6"
		}
		parts = append(parts, fam+" daddr "+r.DstPrefix.String())
	}
	if r.DstPortRange != nil {
		parts = append(parts, fmt.Sprintf("tcp dport %d-%d", r.DstPortRange.First, r.DstPortRange.Last))
	}
	switch len(r.DstPorts) {
	case 0:
	case 1:
		parts = append(parts, fmt.Sprintf("tcp dport %d", r.DstPorts[0]))
	default:
		parts = append(parts, "tcp dport { "+strings.ReplaceAll(FormatPorts(r.DstPorts), ",", ", ")+" }")
	}
	switch r.Verdict {
	case VerdictRedirect:
		parts = append(parts, fmt.Sprintf("redirect to :%d", r.RedirectPort))
	default:
		parts = append(parts, string(r.Verdict))
	}
	if r.Comment != "" {
		parts = append(parts, "comment "+strconv.Quote(r.Comment))
	}
	return strings.Join(parts, " ")
}
