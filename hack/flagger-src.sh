#!/usr/bin/env bash
# Prints the directory of Flagger's module as e2e/canary builds it, making it
# first when needed: Flagger v1.36.1 from the Go module proxy with one change,
# its KEDA types' import of k8s.io/api/autoscaling/v2beta2 (gone from
# k8s.io/api since v0.26) pointed at autoscaling/v2, whose types they use
# unchanged. The go command refuses overlays of files in the module cache,
# so the changed copy lives in bin/ (never in the repository), and
# e2e/canary/go.mod replaces the module with it.
set -euo pipefail
cd "$(dirname "$0")/.."

version=v1.36.1
out="bin/src/flagger@${version}"
if [[ -f "${out}/.prepared" ]]; then
	echo "${PWD}/${out}"
	exit 0
fi
# Outside any module, so that this module's replace does not apply.
dir="$(cd "$(mktemp -d)" && GOFLAGS= go mod download -json "github.com/fluxcd/flagger@${version}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
if [[ -z "${dir}" || ! -d "${dir}" ]]; then
	echo "flagger-src: could not download github.com/fluxcd/flagger@${version}" >&2
	exit 1
fi
rm -rf "${out}"
mkdir -p "$(dirname "${out}")"
cp -r "${dir}" "${out}"
chmod -R u+w "${out}"
for f in scaledobject.go zz_generated.deepcopy.go; do
	sed -i 's#"k8s.io/api/autoscaling/v2beta2"#"k8s.io/api/autoscaling/v2"#' "${out}/pkg/apis/keda/v1alpha1/${f}"
done
if grep -rq 'k8s.io/api/autoscaling/v2beta2' "${out}/pkg/apis" "${out}/pkg/client" "${out}/pkg/router"; then
	echo "flagger-src: v2beta2 imports are left in ${out}" >&2
	exit 1
fi
touch "${out}/.prepared"
echo "${PWD}/${out}"
