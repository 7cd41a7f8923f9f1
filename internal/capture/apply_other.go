//go:build !linux

package capture

import (
	"context"
	"errors"
)

// Apply installs p in the current network namespace. nftables exists only on
// Linux; elsewhere Apply always fails.
func Apply(context.Context, Plan) error {
	return errors.New("traffic capture needs linux nftables")
}
