#!/usr/bin/env bash
# `make test`: lint, the local cluster's binaries, every test, then the product images on real nodes.
#
# Cold, the time goes to three different resources: set-up downloads wheels (network), the image build spends
# most of its time in one pip and one gzip process (one core, disk), and compiling Kubernetes takes both cores
# for many minutes. Run one after the other they idle each other's resource, so the Go build runs in the
# background from the start, beside set-up, lint and the image build, and the tests start once it is done.
# The tests then run in one pytest session: run beside the trainer tests, the cluster tests saved ~3 minutes
# but two timing-sensitive ones (an operator upgrade, the throttled API server) failed under the extra load.
# The real-node image tests come last, in a session of their own: tests/cluster/test_real_nodes.py checks that
# `down` leaves the host as it found it, which no other real-node cluster may disturb.
#
# Each phase prints its time; the background build prints its progress lines as they come and keeps its full
# log (go's own output) under $DSTJ_CACHE/logs. A warm run skips every build (each is cached by content).
# Environment: PYTEST_ARGS (extra pytest options for every session, e.g. -x), DSTJ_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
logs="${DSTJ_CACHE:-$HOME/.cache/dstj}/logs"
mkdir -p "$logs"
start=$SECONDS

say() { printf 'test: %s\n' "$*" >&2; }

# phase NAME COMMAND...: run it and say how long it took; returns its exit code.
phase() {
    local name=$1 t0=$SECONDS rc=0
    shift
    "$@" || rc=$?
    say "phase '$name' took $((SECONDS - t0)) s (exit $rc)"
    return "$rc"
}

# The build runs in a process group of its own (set -m), so that a failure anywhere stops all of it: nothing
# keeps running after `make test` returns.
set -m
build_log="$logs/cluster-binaries.log"
(
    for set_name in control node kwok; do
        bash localcluster/build.sh "$set_name" >/dev/null || exit $?
    done
) 2> >(tee "$build_log" | grep --line-buffered '^localcluster build:' >&2) &
build_pid=$!
trap 'kill -- -"$build_pid" 2>/dev/null || true' EXIT
set +m
say "cluster binaries: building in the background (cached: seconds; cold: ~15-20 min; log: $build_log)"

wait_for_build() {
    local rc=0
    wait "$build_pid" || rc=$?
    if [ "$rc" -ne 0 ]; then
        say "error: building the cluster binaries failed (exit $rc); the end of $build_log:"
        tail -n 30 "$build_log" >&2
    fi
    return "$rc"
}

# run_pytest SESSION_NAME ARGS...: one pytest session with a base directory of its own, removed when it passes
# (kept for a look when it fails). Exit 5, "no tests collected", is a failure: the suite must never pass by
# running nothing.
run_pytest() {
    local name=$1 rc=0
    shift
    local base
    base=$(mktemp -d "${TMPDIR:-/tmp}/dstj-pytest-$name.XXXXXX")
    # shellcheck disable=SC2086
    "$PY" -m pytest -q -p no:cacheprovider --basetemp="$base" ${PYTEST_ARGS:-} "$@" || rc=$?
    if [ "$rc" -eq 0 ]; then rm -rf "$base"; fi
    if [ "$rc" -eq 5 ]; then say "error: the '$name' session collected no tests"; rc=1; fi
    return "$rc"
}

rc=0
phase "setup and lint" make --no-print-directory lint || rc=$?
[ "$rc" -eq 0 ] && { phase "node packages" make --no-print-directory node-deps || rc=$?; }
[ "$rc" -eq 0 ] && { phase "images" "$PY" -m scripts.images --skip-without-real-nodes >/dev/null || rc=$?; }
[ "$rc" -eq 0 ] && { phase "cluster binaries (the rest of the background build)" wait_for_build || rc=$?; }
[ "$rc" -eq 0 ] && { phase "tests" run_pytest tests || rc=$?; }
[ "$rc" -eq 0 ] && { phase "images and real-node tests" run_pytest images -m images tests/cluster/test_product_images.py tests/e2e || rc=$?; }
say "make test exited $rc after $((SECONDS - start)) s"
exit "$rc"
