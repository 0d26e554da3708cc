#!/usr/bin/env bash
# Build kwok (simulated nodes and pod lifecycles, sigs.k8s.io/kwok) from its pinned Go module and
# print the directory holding it on stdout; progress goes to stderr.
#
# Its own script and cache directory beside build.sh's, not a seventh binary there: kwok is needed only
# by the fleet benchmark and test, and adding it to the control plane's cache key would rebuild
# Kubernetes (minutes) on every machine that has it cached. Same rules as build.sh: a wrapper module
# in gomod/kwok (its own, because kwok pins k8s.io client libraries of its own), -mod=readonly, a
# temporary directory renamed into place when complete, one build at a time per cache.
#   ${DSTJ_CACHE:-$HOME/.cache/dstj}/localcluster/kwok-<v>/bin/kwok
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${DSTJ_CACHE:-$HOME/.cache/dstj}/localcluster"
key="kwok-${KWOK_VERSION}"
dest="$cache_root/$key"

complete() { [[ -f "$dest/bin/MANIFEST" && -x "$dest/bin/kwok" ]]; }

if [[ "${LOCALCLUSTER_FORCE_BUILD:-0}" != 1 ]] && complete; then
    echo "$dest/bin"
    exit 0
fi

log() { printf 'localcluster build: %s\n' "$*" >&2; }
command -v go >/dev/null || { log "error: 'go' not found on PATH (need Go >= 1.26)"; exit 2; }

mkdir -p "$cache_root"
exec 9>"$cache_root/.build-kwok.lock"
if ! flock -n 9; then
    log "another build holds $cache_root/.build-kwok.lock; waiting for it"
    flock 9
fi
if [[ "${LOCALCLUSTER_FORCE_BUILD:-0}" != 1 ]] && complete; then
    echo "$dest/bin"
    exit 0
fi

rm -rf "$cache_root"/.tmp-kwok-*
tmp=$(mktemp -d "$cache_root/.tmp-$key.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"

export CGO_ENABLED=0 GOWORK=off GOFLAGS=""
start=$SECONDS
# Cold estimate measured on 2 cores: 71 s with the control plane's Go caches warm (most of kwok's
# k8s.io dependencies compile at their own versions, so expect a few minutes with empty caches).
log "$(go version); building kwok $KWOK_VERSION into $dest/bin (cold: ~1-4 min on 2 cores)..."
(cd "$here/gomod/kwok" && go build -trimpath -mod=readonly -buildvcs=false \
    -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
    -o "$tmp/bin/kwok" sigs.k8s.io/kwok/cmd/kwok)
{
    echo "key=$key"
    echo "go=$(go env GOVERSION)"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "seconds=$((SECONDS - start))"
    (cd "$here/gomod" && sha256sum ./kwok/go.mod ./kwok/go.sum)
} >"$tmp/bin/MANIFEST"

chmod 755 "$tmp"
if [[ -e "$dest" ]]; then
    mv "$dest" "$tmp.old"
fi
mv -T "$tmp" "$dest"
trap 'rm -rf "$tmp.old"' EXIT
log "built kwok in $((SECONDS - start)) s"
echo "$dest/bin"
