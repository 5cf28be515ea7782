#!/usr/bin/env bash
# Build the image and run it as an operator would: the demo, then the daemon with a mounted
# config, state volume and folders; wait until HEALTHCHECK says healthy, drop a file into
# the watched folder, see it copied, and time `docker stop` (it must exit 0, not 137).
# Skips (exit 0) when no Docker engine answers. Usage: bench/docker_smoke.sh [IMAGE_TAG]
# Extra flags (word-split): DOCKER_BUILD_FLAGS for `docker build` (e.g. a local pip mirror,
# see the Dockerfile), DOCKER_RUN_FLAGS for `docker run`; on an engine without a bridge
# (`dockerd --bridge=none`) set both to "--network host". Without Docker Hub, build the
# base image first with bench/docker_standin.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-imgsync:smoke}"
if ! docker info >/dev/null 2>&1; then
    echo "docker_smoke: skipped (no Docker engine answers 'docker info')"
    exit 0
fi
read -r -a build_flags <<<"${DOCKER_BUILD_FLAGS:-}"
read -r -a run_flags <<<"${DOCKER_RUN_FLAGS:-}"
# a free port, in case the container shares the host's network
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
work="$(mktemp -d)"
name="imgsync-smoke-$$"
cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; docker volume rm "$name-state" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

start=$(date +%s)
docker build -q "${build_flags[@]}" -t "$tag" . >/dev/null
echo "build: $(( $(date +%s) - start )) s, image $(( $(docker image inspect -f '{{.Size}}' "$tag") / 1000000 )) MB"

docker run --rm "${run_flags[@]}" "$tag" demo >"$work/demo.out" 2>&1 || { cat "$work/demo.out"; echo "demo failed"; exit 1; }
echo "demo: ok"

mkdir -p "$work/shots" "$work/mirror" "$work/config"
cat >"$work/config/config.toml" <<'TOML'
[daemon]
debounce = "1s"
listen = "127.0.0.1:PORT"

[[jobs]]
name = "shots"
kind = "watch"
source = "/data/shots"
destinations = ["/data/mirror"]
TOML
sed -i "s/PORT/$port/" "$work/config/config.toml"
chown -R 1000:1000 "$work/shots" "$work/mirror" 2>/dev/null || chmod 0777 "$work/shots" "$work/mirror"
docker run -d --name "$name" --stop-timeout 15 "${run_flags[@]}" \
    -v "$name-state:/state" -v "$work/config:/config:ro" \
    -v "$work/shots:/data/shots" -v "$work/mirror:/data/mirror" \
    --health-interval 2s --health-start-period 2s "$tag" >/dev/null
for _ in $(seq 60); do
    health=$(docker inspect -f '{{.State.Health.Status}}' "$name")
    [ "$health" = healthy ] && break
    sleep 1
done
echo "health: $health"
[ "$health" = healthy ] || { docker logs "$name"; exit 1; }

python3 -c "import base64,sys; sys.stdout.buffer.write(base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=='))" >"$work/shots/one.png"
for _ in $(seq 30); do [ -f "$work/mirror/one.png" ] && break; sleep 1; done
[ -f "$work/mirror/one.png" ] || { docker logs "$name"; echo "not copied"; exit 1; }
echo "watch: copied"

start=$(date +%s%N)
docker stop "$name" >/dev/null
echo "docker stop: $(( ($(date +%s%N) - start) / 1000000 )) ms, exit code $(docker inspect -f '{{.State.ExitCode}}' "$name")"
[ "$(docker inspect -f '{{.State.ExitCode}}' "$name")" = 0 ]
