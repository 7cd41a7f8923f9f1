#!/usr/bin/env bash
# Regenerates deepcopy code, CRDs, RBAC and webhook manifests and fails when
# they differ from the files in the tree, so stale generated files never land.
set -euo pipefail
cd "$(dirname "$0")/.."

paths=(api/v1alpha1/zz_generated.deepcopy.go api/smi/split/v1alpha1/zz_generated.deepcopy.go api/smi/split/v1alpha2/zz_generated.deepcopy.go api/smi/split/v1alpha3/zz_generated.deepcopy.go api/smi/split/v1alpha4/zz_generated.deepcopy.go config/crd/bases config/smi/split.smi-spec.io_trafficsplits.yaml config/rbac/role.yaml config/webhook/manifests.yaml config/argocd/argocd-cm-patch.yaml config/argocd/argo-cd-values.yaml charts/weft/crds charts/weft/templates)
before="$(mktemp -d)"
trap 'rm -rf "${before}"' EXIT
for p in "${paths[@]}"; do
	if [[ -e "${p}" ]]; then
		mkdir -p "${before}/$(dirname "${p}")"
		cp -r "${p}" "${before}/${p}"
	fi
done
make -s generate manifests >/dev/null
status=0
for p in "${paths[@]}"; do
	if [[ -e "${p}" || -e "${before}/${p}" ]]; then
		if ! diff -r "${before}/${p}" "${p}" >/dev/null 2>&1; then
			echo "generated file out of date: ${p} (run 'make generate manifests' and commit)" >&2
			diff -ru "${before}/${p}" "${p}" | head -40 >&2 || true
			status=1
		fi
	fi
done
exit "${status}"
