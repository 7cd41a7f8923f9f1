package inject

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/version"
)

// nativeSidecarVersion is the first Kubernetes release with sidecar
// containers (init containers with restartPolicy Always) on by default.
var nativeSidecarVersion = version.MajorMinor(1, 29)

// SupportsNativeSidecars reports whether an API server of the given version
// (as discovery reports it, e.g. "v1.30.2" or "v1.29.1-gke.1589000") runs
// native sidecars. The result belongs in Config.NativeSidecars.
func SupportsNativeSidecars(gitVersion string) (bool, error) {
	v, err := version.ParseGeneric(gitVersion)
	if err != nil {
		return false, fmt.Errorf("parse api server version %q: %w", gitVersion, err)
	}
	return v.AtLeast(nativeSidecarVersion), nil
}
