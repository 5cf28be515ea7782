#!/usr/bin/env bash
# Local-only stand-in for the Dockerfile's base image on a machine that cannot reach Docker
# Hub: a minimal Debian bookworm (python3, python3-venv, ca-certificates) from debootstrap,
# plus this machine's extra CA certificates (/usr/local/share/ca-certificates, e.g. an
# egress proxy's), imported under the FROM name so `docker build` finds it locally.
# It is Debian's Python 3.11 under the name python:3.12-slim: good for proving the image
# builds and runs, never to be pushed. Needs root, debootstrap and a running dockerd.
#
#   bench/docker_standin.sh [ROOTFS_DIR] [IMAGE_NAME]
#
# Then build with this machine's pip settings passed as build args (build stage only):
#   docker build --network host --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
#     --build-arg PIP_DEFAULT_TIMEOUT=180 -t imgsync .
set -euo pipefail
rootfs="${1:-/tmp/imgsync-standin-rootfs}"
name="${2:-$(sed -n 's/^FROM \([^ ]*\).*/\1/p' "$(dirname "$0")/../Dockerfile" | head -n 1)}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ ! -x "$rootfs/usr/bin/python3" ]; then
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$mirror"
fi
# the official image has `python` on PATH; Debian only `python3`
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null
fi
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
# the official image's environment (an imported tarball has none)
tar -C "$rootfs" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$name" >/dev/null
echo "stand-in imported as $name ($(docker image inspect -f '{{.Size}}' "$name") bytes)"
