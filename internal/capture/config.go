package capture

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Default ports and identity of the sidecar proxy.
const (
	// DefaultInboundPort is where the proxy accepts redirected inbound connections.
	DefaultInboundPort uint16 = 15006
	// DefaultOutboundPort is where the proxy accepts redirected outbound connections.
	DefaultOutboundPort uint16 = 15001
	// DefaultProxyUID is the UID the proxy runs as; its own connections are never redirected.
	DefaultProxyUID uint32 = 1337

	// ReservedPortFirst and ReservedPortLast bound the ports the proxy owns
	// (admin 15000, outbound 15001, inbound 15006, xDS 15010, readiness 15021,
	// Prometheus 15090). Inbound connections to them reach the proxy unchanged.
	ReservedPortFirst uint16 = 15000
	// ReservedPortLast is the last port of the reserved range.
	ReservedPortLast uint16 = 15090
)

// Flag names of weft-init. The injector renders them with Config.Args and
// weft-init reads them with Config.RegisterFlags.
const (
	FlagInboundPort          = "inbound-port"
	FlagOutboundPort         = "outbound-port"
	FlagProxyUID             = "proxy-uid"
	FlagExcludeInboundPorts  = "exclude-inbound-ports"
	FlagExcludeOutboundPorts = "exclude-outbound-ports"
	FlagExcludeOutboundCIDRs = "exclude-outbound-cidrs"
)

// Config says which traffic to redirect where.
type Config struct {
	// InboundPort receives inbound TCP connections.
	InboundPort uint16
	// OutboundPort receives outbound TCP connections.
	OutboundPort uint16
	// ProxyUID is the UID whose connections are left alone, so the proxy's own
	// upstream connections do not loop back into it.
	ProxyUID uint32
	// ExcludeInboundPorts are destination ports of inbound connections that
	// bypass the proxy. Sorted, no duplicates.
	ExcludeInboundPorts []uint16
	// ExcludeOutboundPorts are destination ports of outbound connections that
	// bypass the proxy. Sorted, no duplicates.
	ExcludeOutboundPorts []uint16
	// ExcludeOutboundCIDRs are destination networks of outbound connections
	// that bypass the proxy. Sorted, no duplicates, no host bits.
	ExcludeOutboundCIDRs []netip.Prefix
}

// DefaultConfig returns the configuration with the mesh's standard ports and
// no exclusions.
func DefaultConfig() Config {
	return Config{
		InboundPort:  DefaultInboundPort,
		OutboundPort: DefaultOutboundPort,
		ProxyUID:     DefaultProxyUID,
	}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	if c.InboundPort == 0 {
		errs = append(errs, errors.New("inbound port must be set"))
	}
	if c.OutboundPort == 0 {
		errs = append(errs, errors.New("outbound port must be set"))
	}
	if c.InboundPort != 0 && c.InboundPort == c.OutboundPort {
		errs = append(errs, fmt.Errorf("inbound and outbound ports must differ, both are %d", c.InboundPort))
	}
	// UID 0 would exempt every root process in the pod from capture.
	if c.ProxyUID == 0 {
		errs = append(errs, errors.New("proxy uid must not be 0"))
	}
	for _, p := range c.ExcludeOutboundCIDRs {
		if !p.IsValid() || p != p.Masked() {
			errs = append(errs, fmt.Errorf("excluded outbound cidr %q is not a network address", p))
		}
	}
	return errors.Join(errs...)
}

// Args renders c as weft-init command-line flags, in a fixed order. Empty
// exclusion lists are left out.
func (c Config) Args() []string {
	args := []string{
		"--" + FlagInboundPort + "=" + strconv.Itoa(int(c.InboundPort)),
		"--" + FlagOutboundPort + "=" + strconv.Itoa(int(c.OutboundPort)),
		"--" + FlagProxyUID + "=" + strconv.FormatUint(uint64(c.ProxyUID), 10),
	}
	if len(c.ExcludeInboundPorts) > 0 {
		args = append(args, "--"+FlagExcludeInboundPorts+"="+FormatPorts(c.ExcludeInboundPorts))
	}
	if len(c.ExcludeOutboundPorts) > 0 {
		args = append(args, "--"+FlagExcludeOutboundPorts+"="+FormatPorts(c.ExcludeOutboundPorts))
	}
	if len(c.ExcludeOutboundCIDRs) > 0 {
		args = append(args, "--"+FlagExcludeOutboundCIDRs+"="+FormatCIDRs(c.ExcludeOutboundCIDRs))
	}
	return args
}

// RegisterFlags binds c to the weft-init flags in fs. The current values of c
// are the flag defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.Var((*portValue)(&c.InboundPort), FlagInboundPort, "port the proxy accepts redirected inbound TCP on")
	fs.Var((*portValue)(&c.OutboundPort), FlagOutboundPort, "port the proxy accepts redirected outbound TCP on")
	fs.Var((*uidValue)(&c.ProxyUID), FlagProxyUID, "UID of the proxy; its connections are not redirected")
	fs.Var((*portListValue)(&c.ExcludeInboundPorts), FlagExcludeInboundPorts, "comma-separated inbound destination ports that bypass the proxy")
	fs.Var((*portListValue)(&c.ExcludeOutboundPorts), FlagExcludeOutboundPorts, "comma-separated outbound destination ports that bypass the proxy")
	fs.Var((*cidrListValue)(&c.ExcludeOutboundCIDRs), FlagExcludeOutboundCIDRs, "comma-separated outbound destination CIDRs that bypass the proxy")
}

// ParsePort parses one TCP port number (1-65535).
func ParsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port number (1-65535)", s)
	}
	return uint16(n), nil
}

// ParsePorts parses a comma-separated list of port numbers. Blanks around
// entries and empty entries are ignored; the result is sorted and has no
// duplicates.
func ParsePorts(s string) ([]uint16, error) {
	var ports []uint16
	var errs []error
	for field := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(field) == "" {
			continue
		}
		p, err := ParsePort(field)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ports = append(ports, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.Sort(ports)
	return slices.Compact(ports), nil
}

// ParseCIDRs parses a comma-separated list of IPv4 or IPv6 networks in CIDR
// notation. An address with host bits set (10.1.2.3/8) is an error rather than
// silently widened, because it is usually a typo. The result is sorted and has
// no duplicates.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	var prefixes []netip.Prefix
	var errs []error
	for field := range strings.SplitSeq(s, ",") {
		field = strings.TrimSpace(field)
		if field == "" {
			continue
		}
		p, err := netip.ParsePrefix(field)
		if err != nil {
			if a, aerr := netip.ParseAddr(field); aerr == nil {
				errs = append(errs, fmt.Errorf("%q is an address, not a CIDR; write %s", field, netip.PrefixFrom(a, a.BitLen())))
			} else {
				errs = append(errs, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8 or fd00::/8", field))
			}
			continue
		}
		if m := p.Masked(); m != p {
			errs = append(errs, fmt.Errorf("%q has host bits set; the network is %s", field, m))
			continue
		}
		prefixes = append(prefixes, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.SortFunc(prefixes, comparePrefix)
	return slices.Compact(prefixes), nil
}

// FormatPorts renders ports as ParsePorts reads them.
func FormatPorts(ports []uint16) string {
	parts := make([]string, len(ports))
	for i, p := range ports {
		parts[i] = strconv.Itoa(int(p))
	}
	return strings.Join(parts, ",")
}

// FormatCIDRs renders prefixes as ParseCIDRs reads them.
func FormatCIDRs(prefixes []netip.Prefix) string {
	parts := make([]string, len(prefixes))
	for i, p := range prefixes {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

type portValue uint16

func (v *portValue) String() string { return strconv.Itoa(int(*v)) }

func (v *portValue) Set(s string) error {
	p, err := ParsePort(s)
	if err != nil {
		return err
	}
	*v = portValue(p)
	return nil
}

type uidValue uint32

func (v *uidValue) String() string { return strconv.FormatUint(uint64(*v), 10) }

func (v *uidValue) Set(s string) error {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil {
		return fmt.Errorf("%q is not a uid", s)
	}
	*v = uidValue(n)
	return nil
}

type portListValue []uint16

func (v *portListValue) String() string { return FormatPorts(*v) }

func (v *portListValue) Set(s string) error {
	ports, err := ParsePorts(s)
	if err != nil {
		return err
	}
	*v = ports
	return nil
}

type cidrListValue []netip.Prefix

func (v *cidrListValue) String() string { return FormatCIDRs(*v) }

func (v *cidrListValue) Set(s string) error {
	prefixes, err := ParseCIDRs(s)
	if err != nil {
		return err
	}
	*v = prefixes
	return nil
}
