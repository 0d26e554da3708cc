#!/usr/bin/env bash
# Fetches every wheel of requirements.lock once into a wheelhouse: `scripts/setup.sh` installs the
# shared dependency environment from it and `make images` hands it to the image builds as their
# only package source, so torch's multi-GB CUDA wheels are downloaded once per machine, not once per
# consumer. Usage: wheelhouse.sh PYTHON DIR (PYTHON has pip; DIR is keyed by the caller).
# Idempotent and safe to run concurrently: filled in DIR.tmp, renamed when complete.
set -euo pipefail
cd "$(dirname "$0")/.."
py=$1 out=$2
[ -f "$out/.complete" ] && exit 0
mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
flock 9
[ -f "$out/.complete" ] && exit 0
echo "wheelhouse: fetching the wheels of requirements.lock into $out (once; torch and its CUDA wheels are ~3 GB)" >&2
rm -rf "$out.tmp"
# --no-cache-dir: the wheelhouse is the cache; pip's own would be a second copy of the same files.
# `pip wheel` keeps PyPI's wheel files byte for byte and builds the (rare) source-only pins into wheels,
# so installs from the wheelhouse never need an index or a build backend.
"$py" -m pip wheel --no-cache-dir --progress-bar off -q -w "$out.tmp" -r requirements.lock
touch "$out.tmp/.complete"
rm -rf "$out"
mv "$out.tmp" "$out"
