//go:build linux

package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Minimal rtnetlink client for building the test topology without the ip
// binary. Only what the test needs: veth pairs, links up, addresses, routes.

// vethInfoPeer is VETH_INFO_PEER from linux/veth.h.
const vethInfoPeer = 1

type rtnl struct {
	conn *netlink.Conn
}

// dialRtnl opens a route netlink socket in the network namespace behind nsfd,
// or in the caller's namespace when nsfd is 0.
func dialRtnl(nsfd int) (*rtnl, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: nsfd})
	if err != nil {
		return nil, fmt.Errorf("dial rtnetlink: %w", err)
	}
	return &rtnl{conn: c}, nil
}

func (r *rtnl) Close() error { return r.conn.Close() }

// do sends a request and waits for its answer. Changes ask for an
// acknowledgement; a get is answered by the object itself, and asking for an
// acknowledgement too would leave it queued for the next request.
func (r *rtnl) do(typ netlink.HeaderType, flags netlink.HeaderFlags, data []byte) ([]netlink.Message, error) {
	if typ != unix.RTM_GETLINK {
		flags |= netlink.Acknowledge
	}
	return r.conn.Execute(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | flags},
		Data:   data,
	})
}

func ifinfomsg(index int32, flags, change uint32) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(b[4:], uint32(index))
	binary.NativeEndian.PutUint32(b[8:], flags)
	binary.NativeEndian.PutUint32(b[12:], change)
	return b
}

// addVeth creates a veth pair with name in this namespace and peer in the
// namespace behind peerNS.
func (r *rtnl) addVeth(name, peer string, peerNS int) error {
	peerAttrs := netlink.NewAttributeEncoder()
	peerAttrs.String(unix.IFLA_IFNAME, peer)
	peerAttrs.Uint32(unix.IFLA_NET_NS_FD, uint32(peerNS))
	peerData, err := peerAttrs.Encode()
	if err != nil {
		return err
	}
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.IFLA_IFNAME, name)
	ae.Nested(unix.IFLA_LINKINFO, func(li *netlink.AttributeEncoder) error {
		li.String(unix.IFLA_INFO_KIND, "veth")
		li.Nested(unix.IFLA_INFO_DATA, func(d *netlink.AttributeEncoder) error {
			d.Bytes(vethInfoPeer, append(ifinfomsg(0, 0, 0), peerData...))
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	if _, err := r.do(unix.RTM_NEWLINK, netlink.Create|netlink.Excl, append(ifinfomsg(0, 0, 0), attrs...)); err != nil {
		return fmt.Errorf("create veth %s/%s: %w", name, peer, err)
	}
	return nil
}

func (r *rtnl) linkIndex(name string) (int32, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.IFLA_IFNAME, name)
	attrs, err := ae.Encode()
	if err != nil {
		return 0, err
	}
	msgs, err := r.do(unix.RTM_GETLINK, 0, append(ifinfomsg(0, 0, 0), attrs...))
	if err != nil {
		return 0, fmt.Errorf("get link %s: %w", name, err)
	}
	for _, m := range msgs {
		if m.Header.Type == unix.RTM_NEWLINK && len(m.Data) >= unix.SizeofIfInfomsg {
			return int32(binary.NativeEndian.Uint32(m.Data[4:8])), nil
		}
	}
	return 0, fmt.Errorf("link %s not found", name)
}

func (r *rtnl) setUp(name string) error {
	idx, err := r.linkIndex(name)
	if err != nil {
		return err
	}
	if _, err := r.do(unix.RTM_NEWLINK, 0, ifinfomsg(idx, unix.IFF_UP, unix.IFF_UP)); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

func (r *rtnl) addAddr(name string, p netip.Prefix) error {
	idx, err := r.linkIndex(name)
	if err != nil {
		return err
	}
	fam := byte(unix.AF_INET)
	if p.Addr().Is6() {
		fam = unix.AF_INET6
	}
	msg := make([]byte, unix.SizeofIfAddrmsg)
	msg[0] = fam
	msg[1] = byte(p.Bits())
	binary.NativeEndian.PutUint32(msg[4:], uint32(idx))
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(unix.IFA_LOCAL, p.Addr().AsSlice())
	ae.Bytes(unix.IFA_ADDRESS, p.Addr().AsSlice())
	// No duplicate address detection: nothing else can own these addresses
	// inside the private namespaces, and DAD would delay their use.
	ae.Uint32(unix.IFA_FLAGS, unix.IFA_F_NODAD)
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	if _, err := r.do(unix.RTM_NEWADDR, netlink.Create|netlink.Excl, append(msg, attrs...)); err != nil {
		return fmt.Errorf("add %s to %s: %w", p, name, err)
	}
	return nil
}

func (r *rtnl) addRoute(dst netip.Prefix, gw netip.Addr) error {
	fam := byte(unix.AF_INET)
	if dst.Addr().Is6() {
		fam = unix.AF_INET6
	}
	msg := make([]byte, unix.SizeofRtMsg)
	msg[0] = fam
	msg[1] = byte(dst.Bits())
	msg[4] = unix.RT_TABLE_MAIN
	msg[5] = unix.RTPROT_BOOT
	msg[6] = unix.RT_SCOPE_UNIVERSE
	msg[7] = unix.RTN_UNICAST
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(unix.RTA_DST, dst.Addr().AsSlice())
	ae.Bytes(unix.RTA_GATEWAY, gw.AsSlice())
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	if _, err := r.do(unix.RTM_NEWROUTE, netlink.Create|netlink.Excl, append(msg, attrs...)); err != nil {
		return fmt.Errorf("add route %s via %s: %w", dst, gw, err)
	}
	return nil
}

// newNetns creates a network namespace and returns a file descriptor that
// keeps it alive. The namespace is created on a throwaway thread, so the
// calling process stays where it is.
func newNetns() (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Never unlocked: the thread ends with the goroutine instead of going
		// back to the scheduler in the wrong namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("unshare network namespace: %w", err)}
			return
		}
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			err = fmt.Errorf("open new network namespace: %w", err)
		}
		ch <- result{fd: fd, err: err}
	}()
	r := <-ch
	return r.fd, r.err
}

// inNetns runs fn on a thread that has joined the namespace behind nsfd.
// Sockets fn creates belong to that namespace for their whole life, wherever
// they are used afterwards.
func inNetns(nsfd int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked, see newNetns
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("join network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// disableDAD turns off IPv6 duplicate address detection for interfaces created
// later in the caller's namespace, so link-local addresses on the veth are
// usable at once. /proc/sys/net follows the namespace of the opening thread.
func disableDAD() error {
	var errs []error
	for _, name := range []string{"all", "default"} {
		p := "/proc/sys/net/ipv6/conf/" + name + "/accept_dad"
		if err := os.WriteFile(p, []byte("0"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("write %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// originalDst reads the destination a connection had before it was
// redirected, from conntrack (SO_ORIGINAL_DST). getsockopt returns a
// sockaddr; x/sys/unix has no getter for that, so the IPv4 one is read into
// an IPv6Mreq (20 bytes, larger than sockaddr_in) and the IPv6 one into an
// IPv6MTUInfo (starts with a sockaddr_in6).
func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	const ip6tSOOriginalDst = 80 // IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("local address %v is not tcp", c.LocalAddr())
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var ap netip.AddrPort
	var serr error
	err = raw.Control(func(fd uintptr) {
		if local.IP.To4() != nil {
			mreq, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
			if err != nil {
				serr = fmt.Errorf("getsockopt SO_ORIGINAL_DST: %w", err)
				return
			}
			b := mreq.Multiaddr
			ap = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:4]))
			return
		}
		info, err := unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, ip6tSOOriginalDst)
		if err != nil {
			serr = fmt.Errorf("getsockopt IP6T_SO_ORIGINAL_DST: %w", err)
			return
		}
		port := binary.NativeEndian.AppendUint16(nil, info.Addr.Port)
		ap = netip.AddrPortFrom(netip.AddrFrom16(info.Addr.Addr), binary.BigEndian.Uint16(port))
	})
	return ap, errors.Join(err, serr)
}
