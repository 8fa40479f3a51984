#!/usr/bin/env bash
# Builds the CPU container image on a machine with no container registry, runs
# it and checks it from outside:
#   1. a Debian 12 base made with debootstrap from Debian's archive (minbase),
#      kept in the local image store as debian:bookworm and debian:bookworm-slim
#      (the names the Dockerfile builds FROM), and reused by later runs;
#   2. the project's Dockerfile built with Debian's buildah (chroot isolation,
#      vfs storage: no daemon, no registry);
#   3. the image run with the host's network on free ports: health must reach
#      SERVING, tcm-client must generate images over gRPC from outside, the
#      playground page must answer on the HTTP port, and the server must run
#      as the image's non-root user (uid 10001).
# The last line is "image: NAME SIZE" on success. Exits 77 (skipped) with the
# reason when this machine cannot build images (no root, no buildah or
# debootstrap, no access to Debian's archive, no mount namespaces). Untagged
# images (build stages, earlier builds) are removed after a build.
#
#   scripts/build-image.sh [NAME]      NAME defaults to tcm-serve:cpu
#
# Environment: TCM_CLIENT (a host tcm-client; default build/bin/tcm-client),
# DEBIAN_MIRROR (default http://deb.debian.org/debian), TCM_IMAGE_WORK (scratch
# folder; default a temporary one).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
name="${1:-tcm-serve:cpu}"
client="${TCM_CLIENT:-$root/build/bin/tcm-client}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
work="${TCM_IMAGE_WORK:-$(mktemp -d)}"
buildah=(buildah --storage-driver vfs)

skip() { echo "build-image: skipped: $*"; exit 77; }
[[ "$(id -u)" -eq 0 ]] || skip "needs root (buildah's chroot isolation and debootstrap)"
command -v buildah > /dev/null || skip "buildah is not installed (apt-get install buildah)"
command -v debootstrap > /dev/null || skip "debootstrap is not installed (apt-get install debootstrap)"
[[ -x "$client" ]] || skip "no host tcm-client at $client (make build first)"
curl -sfI --max-time 20 "$mirror/dists/bookworm/Release" > /dev/null || skip "Debian's archive ($mirror) is unreachable"
# buildah's chroot isolation needs new mount namespaces: an unprivileged
# container, root in it or not, cannot make them.
unshare --mount true 2> /dev/null || skip "cannot create a mount namespace (unshare --mount): an unprivileged container"

log() { echo "build-image: $*"; }
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2> /dev/null || true; wait "$server_pid" 2> /dev/null || true; fi
  if [[ -n "${container:-}" ]]; then "${buildah[@]}" rm "$container" > /dev/null 2>&1 || true; fi
  if [[ -z "${TCM_IMAGE_WORK:-}" ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT

# 1. The base, made once and then reused from the local store.
if "${buildah[@]}" inspect --type image debian:bookworm > /dev/null 2>&1; then
  log "reusing the local debian:bookworm base"
else
  log "debootstrap: a minimal Debian 12 from $mirror"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; exit 1; }
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  base="$("${buildah[@]}" from scratch)"
  cp -a "$work/rootfs/." "$("${buildah[@]}" mount "$base")/"
  "${buildah[@]}" umount "$base" > /dev/null
  "${buildah[@]}" config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$base"
  "${buildah[@]}" commit --quiet "$base" debian:bookworm > /dev/null
  "${buildah[@]}" rm "$base" > /dev/null
  rm -rf "$work/rootfs"
fi
"${buildah[@]}" tag debian:bookworm debian:bookworm-slim  # one minimal base for both stages

# 2. The image, from the project's Dockerfile.
log "buildah build of $name (this compiles tcm-server and tcm-client)"
"${buildah[@]}" build --isolation chroot --network host --pull=never -f "$root/Dockerfile" \
  -t "$name" "$root" > "$work/build.log" 2>&1 || { tail -40 "$work/build.log"; exit 1; }

# 3. Run it and check it from outside.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
grpc_port="$(free_port)" metrics_port="$(free_port)" http_port="$(free_port)"
container="$("${buildah[@]}" from --pull=never "$name")"
# The image's own user (USER 10001:10001) and the ENTRYPOINT's flags, on free ports.
"${buildah[@]}" run --isolation chroot --network host "$container" -- \
  tcm-server --port "$grpc_port" --metrics_port "$metrics_port" --http_port "$http_port" \
  --model_repository /models --default_model fashion-mnist-tcm > "$work/server.log" 2>&1 &
server_pid=$!
log "waiting for SERVING on port $grpc_port"
for _ in $(seq 600); do
  if "$client" --server "127.0.0.1:$grpc_port" --health --timeout 2 > /dev/null 2>&1; then break; fi
  kill -0 "$server_pid" 2> /dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.5
done
"$client" --server "127.0.0.1:$grpc_port" --health --timeout 5 || { cat "$work/server.log"; exit 1; }
"$client" --server "127.0.0.1:$grpc_port" --class 3 --steps 2 --num 4 --seed 7 --out "$work/images" \
  || { cat "$work/server.log"; exit 1; }
images=$(ls "$work/images"/*.png 2> /dev/null | wc -l)
[[ "$images" -ge 1 ]] || { echo "build-image: FAIL: tcm-client wrote no image"; exit 1; }
page="$(curl -sS --max-time 30 "http://127.0.0.1:$http_port/" 2>&1)"
[[ "$page" == *"tcm-serve playground"* ]] || {
  echo "build-image: FAIL: no playground on the HTTP port $http_port: ${page:0:300}"
  cat "$work/server.log"
  exit 1
}
server_uid=""
for pid in $(pgrep -f "tcm-server --port $grpc_port "); do server_uid="$(stat -c %u "/proc/$pid")"; done
[[ "$server_uid" == "10001" ]] || { echo "build-image: FAIL: tcm-server runs as uid '$server_uid', not 10001"; exit 1; }
log "served from the image: health SERVING, $images PNG(s) from tcm-client, the playground; uid $server_uid"
size="$("${buildah[@]}" images --format '{{.Size}}' "$name" | head -1)"
# Untagged images (the build stage, an earlier build of NAME) would fill the
# disk run after run; the base and NAME stay.
"${buildah[@]}" rmi --prune > /dev/null 2>&1 || true
echo "image: $name $size"
