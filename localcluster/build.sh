#!/usr/bin/env bash
# Build the local cluster's binaries from pinned upstream Go modules and print the directory
# that holds them on stdout. Progress goes to stderr. Three sets, each cached on its own (so adding or
# bumping one never rebuilds another: Kubernetes takes minutes):
#   build.sh [control]  kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, helm
#   build.sh node       what a real node runs: kubelet, kube-proxy (the same Kubernetes module),
#                       containerd, containerd-shim-runc-v2, ctr, clusterdns, pause
#   build.sh kwok       simulated nodes (sigs.k8s.io/kwok; a wrapper module of its own in gomod/kwok,
#                       because kwok pins k8s.io client libraries of its own)
#
# Why from the Go module proxy: our machines have no Docker (so no kind, no images) and
# the distribution's etcd and Go are too old; the proxy is reachable and content-addressed
# (go.sum pins every byte). The output is cached outside the repository, keyed by version:
#   ${DSTJ_CACHE:-$HOME/.cache/dstj}/localcluster/k8s-<v>-etcd-<v>-helm-<v>-<pins>/bin/
#   ${DSTJ_CACHE:-$HOME/.cache/dstj}/localcluster/node-k8s-<v>-containerd-<v>-r<N>-<pins>/bin/
#   ${DSTJ_CACHE:-$HOME/.cache/dstj}/localcluster/kwok-<v>-<pins>/bin/
# (<pins>: a hash of the wrapper modules' go.mod and go.sum, see pins below).
# A build goes to a temporary directory renamed into place only when every binary
# succeeded, so a half build is never used. A cached run returns in milliseconds.
#
# Environment: DSTJ_CACHE (cache root), GOMODCACHE/GOCACHE (Go's own caches; point them
# at empty directories to measure a cold build), LOCALCLUSTER_FORCE_BUILD=1 (rebuild).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

set_name=${1:-control}
cache_root="${DSTJ_CACHE:-$HOME/.cache/dstj}/localcluster"

# pins MODULE_DIR...: a short hash of those wrapper modules' go.mod and go.sum. It ends each cache key, so a
# regenerated dependency set (gomod/regen.sh aligns versions across all wrappers) builds anew instead of
# reusing binaries compiled from other versions.
pins() {
    local d f
    for d in "$@"; do
        for f in "$here/gomod/$d/go.mod" "$here/gomod/$d/go.sum"; do
            if [[ -f $f ]]; then cat "$f"; fi
        done
    done | sha256sum | cut -c1-8
}

case "$set_name" in
control)
    key="k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-helm-${HELM_VERSION}-$(pins kubernetes etcd helm)"
    binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd helm) ;;
node)
    # NODE_REVISION: bump when our own sources (gomod/clusterdns, gomod/pause) change.
    key="node-k8s-${K8S_VERSION}-containerd-${CONTAINERD_VERSION}-r${NODE_REVISION}-$(pins kubernetes containerd clusterdns pause)"
    binaries=(kubelet kube-proxy containerd containerd-shim-runc-v2 ctr clusterdns pause) ;;
kwok)
    key="kwok-${KWOK_VERSION}-$(pins kwok)"
    binaries=(kwok) ;;
*)
    echo "usage: build.sh [control|node|kwok]" >&2; exit 2 ;;
esac
dest="$cache_root/$key"

complete() {
    local b
    [[ -f "$dest/bin/MANIFEST" ]] || return 1
    for b in "${binaries[@]}"; do [[ -x "$dest/bin/$b" ]] || return 1; done
}

if [[ "${LOCALCLUSTER_FORCE_BUILD:-0}" != 1 ]] && complete; then
    echo "$dest/bin"
    exit 0
fi

log() { printf 'localcluster build: %s\n' "$*" >&2; }

command -v go >/dev/null || { log "error: 'go' not found on PATH (need Go >= 1.26)"; exit 2; }

mkdir -p "$cache_root"
# One build at a time per cache (two test sessions may start together).
exec 9>"$cache_root/.build.lock"
if ! flock -n 9; then
    log "another build holds $cache_root/.build.lock; waiting for it"
    flock 9
fi
if [[ "${LOCALCLUSTER_FORCE_BUILD:-0}" != 1 ]] && complete; then
    echo "$dest/bin"
    exit 0
fi

# Leftovers of a build that was killed (we hold the lock, so no build owns them now).
rm -rf "$cache_root"/.tmp-*
tmp=$(mktemp -d "$cache_root/.tmp-$key.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"

# Explicit flags instead of inheriting GOFLAGS (a stray -mod=vendor would break us).
# -mod=readonly: go.sum in gomod/ is the pin set; nothing may change it silently.
export CGO_ENABLED=0 GOWORK=off GOFLAGS=""
goflags=(-trimpath -mod=readonly -buildvcs=false)

k8s_minor=${K8S_VERSION#v*.}; k8s_minor=${k8s_minor%%.*}
k8s_major=${K8S_VERSION#v}; k8s_major=${k8s_major%%.*}
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$k8s_major"
    k8s_ldflags+=" -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
    k8s_ldflags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

step() {  # step NAME COLD_ESTIMATE MODULE_DIR go-build-args...
    local name=$1 estimate=$2 dir=$3 start=$SECONDS
    shift 3
    log "building $name (cold: ~$estimate on 2 cores; less with a warm Go build cache)..."
    (cd "$here/gomod/$dir" && go build "${goflags[@]}" "$@")
    log "built $name in $((SECONDS - start)) s"
}

total_start=$SECONDS
log "$(go version); output $dest/bin"
if [[ $set_name == control ]]; then
    # Cold estimates: measured on 2 cores with empty Go caches. etcd and helm reuse most of what Kubernetes
    # compiled (gomod/regen.sh gives every wrapper the same versions of the shared dependencies).
    step "kubernetes $K8S_VERSION" "15 min" kubernetes \
        -ldflags "$k8s_ldflags" -o "$tmp/bin/" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
    step "etcd $ETCD_VERSION" "20 s" etcd \
        -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" \
        -o "$tmp/bin/etcd" go.etcd.io/etcd/server/v3
    helm_mod="helm.sh/helm/${HELM_VERSION%%.*}"
    step "helm $HELM_VERSION" "20 s" helm \
        -ldflags "-s -w -X $helm_mod/internal/version.version=$HELM_VERSION -X $helm_mod/internal/version.gitTreeState=clean" \
        -o "$tmp/bin/helm" "$helm_mod/cmd/helm"
elif [[ $set_name == node ]]; then
    # Cold estimates: measured on 2 cores with the control plane's Go caches warm.
    step "kubelet and kube-proxy $K8S_VERSION" "1.5 min" kubernetes \
        -ldflags "$k8s_ldflags" -o "$tmp/bin/" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
    # No cgo: the btrfs, devmapper and zfs snapshotters need C libraries and are not used here.
    ctrd=github.com/containerd/containerd/v2
    step "containerd $CONTAINERD_VERSION" "1.5 min" containerd \
        -tags "no_btrfs no_devmapper no_zfs" \
        -ldflags "-s -w -X $ctrd/version.Version=$CONTAINERD_VERSION -X $ctrd/version.Package=$ctrd" \
        -o "$tmp/bin/" "$ctrd/cmd/containerd" "$ctrd/cmd/containerd-shim-runc-v2" "$ctrd/cmd/ctr"
    step "clusterdns" "20 s" clusterdns -ldflags "-s -w" -o "$tmp/bin/clusterdns" .
    step "pause" "5 s" pause -ldflags "-s -w" -o "$tmp/bin/pause" .
else
    # Cold estimate: measured on 2 cores with the control plane's Go caches warm (kwok's k8s.io libraries
    # are the control plane's versions: see gomod/regen.sh).
    step "kwok $KWOK_VERSION" "30 s" kwok \
        -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
        -o "$tmp/bin/kwok" sigs.k8s.io/kwok/cmd/kwok
fi

for b in "${binaries[@]}"; do
    [[ -x "$tmp/bin/$b" ]] || { log "error: $b missing after build"; exit 1; }
done
{
    echo "key=$key"
    echo "go=$(go env GOVERSION)"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "seconds=$((SECONDS - total_start))"
    (cd "$here/gomod" && sha256sum ./*/go.mod ./*/go.sum)
} >"$tmp/bin/MANIFEST"

# Atomic publish: the directory appears complete or not at all.
chmod 755 "$tmp"
if [[ -e "$dest" ]]; then
    mv "$dest" "$tmp.old"
fi
mv -T "$tmp" "$dest"
trap 'rm -rf "$tmp.old"' EXIT
log "done in $((SECONDS - total_start)) s"
echo "$dest/bin"
