package server_test

// The -update flag of go test ./... -update is defined by internal/golden;
// every test binary links it so the flag is known everywhere.
import _ "github.com/weft-mesh/weft/internal/golden"
