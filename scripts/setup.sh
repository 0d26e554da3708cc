#!/usr/bin/env bash
# Builds (once) the shared dependency environment and gives this clone a small venv over it.
#
# torch from PyPI is a multi-GB CUDA build, so the dependencies live in one environment outside
# the repository, keyed by the hash of requirements.lock: every clone on the machine (CI's fresh
# clone included) reuses it, and a change of pins builds a new one. Each clone gets its own tiny
# `.venv` whose site-packages chains to the shared one and adds this clone's source roots, so two
# clones never see each other's code. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
CACHE=${DSTJ_CACHE:-$HOME/.cache/dstj}
key=$( (cat requirements.lock; "$PY" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)
base="$CACHE/deps-$key"
wheels="$CACHE/wheels-$key"

if [ ! -f "$base/.complete" ]; then
    echo "setup: installing pinned dependencies into $base (once; torch is a ~4 GB download)" >&2
    rm -rf "$base"
    mkdir -p "$CACHE"
    "$PY" -m venv "$base"
    "$base/bin/python" -m pip install --quiet --upgrade pip==25.3
    ./scripts/wheelhouse.sh "$base/bin/python" "$wheels"
    "$base/bin/python" -m pip install --progress-bar off --no-index --find-links "$wheels" -r requirements.lock
    touch "$base/.complete"
fi

if [ ! -f .venv/.base ] || [ "$(cat .venv/.base)" != "$base" ]; then
    rm -rf .venv
    "$base/bin/python" -m venv --without-pip .venv
    echo "$base" > .venv/.base
fi
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
base_site=$("$base/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
{
    echo "import site; site.addsitedir('$base_site')"
    for d in api operator trainer_image .; do echo "$root/$d"; done
} > "$site/dstj.pth"
# Console scripts of the shared environment, run by this clone's interpreter.
# Native tools (ruff) are linked as they are.
for tool in pytest ruff mypy lint-imports torchrun; do
    rm -f ".venv/bin/$tool"
    if head -c4 "$base/bin/$tool" | grep -q ELF; then
        ln -s "$base/bin/$tool" ".venv/bin/$tool"
    else
        printf '#!/usr/bin/env bash\nexec "%s/.venv/bin/python" "%s/bin/%s" "$@"\n' "$root" "$base" "$tool" > ".venv/bin/$tool"
        chmod +x ".venv/bin/$tool"
    fi
done
echo "setup: ready (.venv over $base)" >&2
