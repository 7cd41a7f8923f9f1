#!/usr/bin/env bash
# Builds kube-apiserver, etcd and kubectl from the Go module proxy into
# bin/k8s/<version>/ and prints that directory. Does nothing when the binaries
# are already there.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/../.." && pwd)"
version="$(cd "${here}" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
out="${root}/bin/k8s/${version#v}"

if [[ -x "${out}/kube-apiserver" && -x "${out}/etcd" && -x "${out}/kubectl" ]]; then
	echo "${out}"
	exit 0
fi

mkdir -p "${out}"
minor="$(echo "${version#v}" | cut -d. -f2)"
pkg=k8s.io/component-base/version
ldflags="-s -w -X ${pkg}.gitVersion=${version} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
ldflags="${ldflags} -X k8s.io/client-go/pkg/version.gitVersion=${version} -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=${minor}"

cd "${here}"
for target in kube-apiserver:k8s.io/kubernetes/cmd/kube-apiserver kubectl:k8s.io/kubernetes/cmd/kubectl etcd:./etcd; do
	name="${target%%:*}"
	path="${target#*:}"
	if [[ ! -x "${out}/${name}" ]]; then
		echo "building ${name} for Kubernetes ${version} into ${out} (first time only, several minutes)..." >&2
		CGO_ENABLED=0 go build -trimpath -ldflags "${ldflags}" -o "${out}/${name}.tmp" "${path}"
		mv "${out}/${name}.tmp" "${out}/${name}"
	fi
done
echo "${out}"
