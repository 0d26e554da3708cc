#!/usr/bin/env bash
# `make e2e-kind`: the e2e suite (tests/e2e) against a kind cluster, on a machine with Docker.
#
# Creates (or reuses) the kind cluster from kind-config.yaml, builds both images, loads them into
# the nodes (no registry), and runs pytest tests/e2e with DSTJ_E2E_KUBECONFIG pointing at kind (the
# suite installs the chart itself). Without docker (and a reachable daemon) or kind it says so in one line and exits 2: the
# same suite runs on the local cluster instead, which needs neither.
#
# Environment: KIND_CLUSTER (default dstj-e2e), IMAGE_TAG (default e2e), KIND_NODE_IMAGE (optional),
# KEEP_KIND=1 keeps the cluster afterwards. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
if ! command -v docker >/dev/null; then missing+=("docker")
elif ! docker info >/dev/null 2>&1; then missing+=("a running Docker daemon (docker info fails)"); fi
command -v kind >/dev/null || missing+=("kind (https://kind.sigs.k8s.io)")
if [ ${#missing[@]} -gt 0 ]; then
    echo "e2e-kind: needs $(IFS=,; echo "${missing[*]}" | sed 's/,/, /g'); without them run the e2e suite on the local cluster: make setup && .venv/bin/python -m pytest tests/e2e" >&2
    exit 2
fi

make setup
cluster=${KIND_CLUSTER:-dstj-e2e}
tag=${IMAGE_TAG:-e2e}
kubeconfig=$(mktemp -t dstj-kind-kubeconfig.XXXXXX)

cleanup() {
    rm -f "$kubeconfig"
    if [ "${KEEP_KIND:-0}" != 1 ] && [ "${created:-0}" = 1 ]; then kind delete cluster --name "$cluster"; fi
}
trap cleanup EXIT

mkdir -p /tmp/dstj-kind-shared  # kind-config.yaml mounts it into every node at /shared
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    echo "e2e-kind: reusing kind cluster $cluster" >&2
else
    kind create cluster --name "$cluster" --config kind-config.yaml ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 120s
    created=1
fi
kind export kubeconfig --name "$cluster" --kubeconfig "$kubeconfig"

docker build -f operator/Dockerfile -t "deepseek-operator:$tag" .
docker build -f trainer_image/Dockerfile --build-arg VARIANT=cpu -t "moe-trainer:$tag" .
kind load docker-image --name "$cluster" "deepseek-operator:$tag" "moe-trainer:$tag"

# The e2e suite installs the chart itself (with these images) and takes any kubeconfig.
DSTJ_E2E_KUBECONFIG=$kubeconfig \
DSTJ_E2E_OPERATOR_IMAGE="deepseek-operator:$tag" \
DSTJ_E2E_TRAINER_IMAGE="moe-trainer:$tag" \
DSTJ_E2E_SHARED_DIR=/shared \
DSTJ_E2E_SHARED_HOST_DIR=/tmp/dstj-kind-shared \
    .venv/bin/python -m pytest -q tests/e2e "$@"
