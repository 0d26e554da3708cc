#!/usr/bin/env bash
# Installs the Debian packages real nodes and the image build need, where one is missing:
# runc (the OCI runtime), the CNI plugins (bridge, host-local, portmap, loopback), iptables
# (kube-proxy's Service rules), mmdebstrap (the Python base image), buildah (builds the
# Dockerfiles without a daemon), zstd (reads the images' compressed layers in tests) and isal, whose
# igzip containerd uses, when on PATH, to decompress the gzip layers a node imports (a third less
# CPU than its own Go gzip: the trainer image's import is 6 GB of gunzip per node). Needs root
# (as real nodes do); a no-op when all are present.
set -euo pipefail
need=()
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v buildah >/dev/null || need+=(buildah)
command -v zstd >/dev/null || need+=(zstd)
command -v igzip >/dev/null || need+=(isal)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "node-deps: missing ${need[*]}; install them as root (apt-get install ${need[*]})" >&2
    exit 0
fi
echo "node-deps: apt-get install ${need[*]}" >&2
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
