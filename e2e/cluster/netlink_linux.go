package cluster

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// loopbackIndex is the interface index of lo, which the kernel creates
// first in every network namespace.
const loopbackIndex = 1

// rtnetlink requests on the loopback interface of the caller's network
// namespace: just enough to bring it up and give it pod addresses without
// depending on the ip binary.

func rtnetlinkDo(typ netlink.HeaderType, flags netlink.HeaderFlags, data []byte) error {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return fmt.Errorf("rtnetlink: %w", err)
	}
	defer c.Close()
	_, err = c.Execute(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Acknowledge | flags},
		Data:   data,
	})
	return err
}

// loopbackUp sets lo up (a new network namespace starts with it down).
func loopbackUp() error {
	msg := make([]byte, unix.SizeofIfInfomsg)
	msg[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(msg[4:8], loopbackIndex)
	binary.NativeEndian.PutUint32(msg[8:12], unix.IFF_UP)  // flags
	binary.NativeEndian.PutUint32(msg[12:16], unix.IFF_UP) // change mask
	if err := rtnetlinkDo(unix.RTM_NEWLINK, 0, msg); err != nil {
		return fmt.Errorf("setting lo up: %w", err)
	}
	return nil
}

// addrMessage is an ifaddrmsg for a host address on lo with its
// IFA_LOCAL and IFA_ADDRESS attributes.
func addrMessage(ip netip.Addr) ([]byte, error) {
	family, bits := byte(unix.AF_INET), byte(32)
	if ip.Is6() {
		family, bits = unix.AF_INET6, 128
	}
	hdr := make([]byte, unix.SizeofIfAddrmsg)
	hdr[0] = family
	hdr[1] = bits
	hdr[3] = unix.RT_SCOPE_HOST
	binary.NativeEndian.PutUint32(hdr[4:8], loopbackIndex)
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(unix.IFA_LOCAL, ip.AsSlice())
	ae.Bytes(unix.IFA_ADDRESS, ip.AsSlice())
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	return append(hdr, attrs...), nil
}

// addLoopbackAddress puts ip (as a /32 or /128) on lo. An address that is
// already there is not an error.
func addLoopbackAddress(ip netip.Addr) error {
	msg, err := addrMessage(ip.Unmap())
	if err != nil {
		return err
	}
	if err := rtnetlinkDo(unix.RTM_NEWADDR, netlink.Create|netlink.Replace, msg); err != nil {
		return fmt.Errorf("adding %s to lo: %w", ip, err)
	}
	return nil
}

// removeLoopbackAddress takes ip off lo again.
func removeLoopbackAddress(ip netip.Addr) error {
	msg, err := addrMessage(ip.Unmap())
	if err != nil {
		return err
	}
	if err := rtnetlinkDo(unix.RTM_DELADDR, 0, msg); err != nil {
		return fmt.Errorf("removing %s from lo: %w", ip, err)
	}
	return nil
}
