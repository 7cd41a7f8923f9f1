//go:build linux

package capture

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/go-logr/logr"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Apply installs p in the network namespace of the calling thread. The table
// is deleted and recreated in the same netlink batch, which the kernel
// commits atomically: there is no moment without rules, and running Apply
// again replaces rather than appends.
func Apply(ctx context.Context, p Plan) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables netlink socket: %w", err)
	}
	if err := queue(conn, p); err != nil {
		return err
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("install nftables table inet %s: %w", p.Table, err)
	}
	rules := 0
	for _, c := range p.Chains {
		rules += len(c.Rules)
	}
	logr.FromContextOrDiscard(ctx).Info("installed redirect rules", "table", p.Table, "chains", len(p.Chains), "rules", rules)
	return nil
}

// queue adds the batch that replaces the table to conn without sending it.
func queue(conn *nftables.Conn, p Plan) error {
	table := &nftables.Table{Name: p.Table, Family: nftables.TableFamilyINet}
	// Adding before deleting makes the delete valid whether or not the
	// table already exists.
	conn.AddTable(table)
	conn.DelTable(table)
	conn.AddTable(table)
	accept := nftables.ChainPolicyAccept
	for _, c := range p.Chains {
		hook, err := chainHook(c.Hook)
		if err != nil {
			return err
		}
		prio := nftables.ChainPriority(c.Priority)
		chain := conn.AddChain(&nftables.Chain{
			Name:     c.Name,
			Table:    table,
			Type:     nftables.ChainTypeNAT,
			Hooknum:  hook,
			Priority: &prio,
			Policy:   &accept,
		})
		for i, r := range c.Rules {
			exprs, err := ruleExprs(conn, table, r)
			if err != nil {
				return fmt.Errorf("chain %s rule %d: %w", c.Name, i, err)
			}
			conn.AddRule(&nftables.Rule{
				Table:    table,
				Chain:    chain,
				Exprs:    exprs,
				UserData: userdata.AppendString(nil, userdata.TypeComment, r.Comment),
			})
		}
	}
	return nil
}

func chainHook(h Hook) (*nftables.ChainHook, error) {
	switch h {
	case HookPrerouting:
		return nftables.ChainHookPrerouting, nil
	case HookOutput:
		return nftables.ChainHookOutput, nil
	default:
		return nil, fmt.Errorf("unknown hook %q", h)
	}
}

// Register 1 is the first 16-byte data register; every match loads into it
// and compares it before the next match overwrites it.
const reg = 1

func ruleExprs(conn *nftables.Conn, table *nftables.Table, r Rule) ([]expr.Any, error) {
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{unix.IPPROTO_TCP}},
	}
	if r.SocketUID != nil {
		exprs = append(exprs,
			&expr.Meta{Key: expr.MetaKeySKUID, Register: reg},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: binaryutil.NativeEndian.PutUint32(*r.SocketUID)},
		)
	}
	if r.DstPrefix.IsValid() {
		exprs = append(exprs, prefixExprs(r.DstPrefix)...)
	}
	if r.DstPortRange != nil {
		exprs = append(exprs,
			dstPort(),
			&expr.Range{Op: expr.CmpOpEq, Register: reg, FromData: be16(r.DstPortRange.First), ToData: be16(r.DstPortRange.Last)},
		)
	}
	switch len(r.DstPorts) {
	case 0:
	case 1:
		exprs = append(exprs, dstPort(), &expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: be16(r.DstPorts[0])})
	default:
		set := &nftables.Set{Table: table, Anonymous: true, Constant: true, KeyType: nftables.TypeInetService}
		elems := make([]nftables.SetElement, len(r.DstPorts))
		for i, p := range r.DstPorts {
			elems[i] = nftables.SetElement{Key: be16(p)}
		}
		if err := conn.AddSet(set, elems); err != nil {
			return nil, fmt.Errorf("add port set: %w", err)
		}
		exprs = append(exprs, dstPort(), &expr.Lookup{SourceRegister: reg, SetName: set.Name, SetID: set.ID})
	}
	switch r.Verdict {
	case VerdictReturn:
		exprs = append(exprs, &expr.Verdict{Kind: expr.VerdictReturn})
	case VerdictRedirect:
		if r.RedirectPort == 0 {
			return nil, fmt.Errorf("redirect without a port")
		}
		exprs = append(exprs,
			&expr.Immediate{Register: reg, Data: be16(r.RedirectPort)},
			&expr.Redir{RegisterProtoMin: reg, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
		)
	default:
		return nil, fmt.Errorf("unknown verdict %q", r.Verdict)
	}
	return exprs, nil
}

// prefixExprs matches the destination address against p. In an inet table
// the network header can be either family, so the family is checked first.
func prefixExprs(p netip.Prefix) []expr.Any {
	nfproto, offset := byte(unix.NFPROTO_IPV4), uint32(16) // offsetof(struct iphdr, daddr)
	if p.Addr().Is6() {
		nfproto, offset = unix.NFPROTO_IPV6, 24 // offsetof(struct ipv6hdr, daddr)
	}
	addr := p.Addr().AsSlice()
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{nfproto}},
		&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(len(addr))},
	}
	if p.Bits() < p.Addr().BitLen() {
		exprs = append(exprs, &expr.Bitwise{
			SourceRegister: reg,
			DestRegister:   reg,
			Len:            uint32(len(addr)),
			Mask:           prefixMask(p),
			Xor:            make([]byte, len(addr)),
		})
	}
	return append(exprs, &expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: addr})
}

func prefixMask(p netip.Prefix) []byte {
	return net.CIDRMask(p.Bits(), p.Addr().BitLen())
}

func dstPort() expr.Any {
	// offsetof(struct tcphdr, dest)
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
}

func be16(v uint16) []byte {
	return binary.BigEndian.AppendUint16(nil, v)
}
