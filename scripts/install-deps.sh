#!/usr/bin/env bash
# Installs the Debian 12 packages tcm-serve needs to build, run and train.
#   install-deps.sh           the build and its tools (what `make run` needs)
#   install-deps.sh --test    also what only the tests use (`make test`)
#   install-deps.sh --fuzz    also clang with libFuzzer (`make fuzz`)
# Idempotent: does nothing when every package is present. Uses sudo only when not root.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libtorch-dev libdnnl-dev libopenblas0-pthread python3-torch python3-numpy
  python3-matplotlib python3-scipy python3-requests
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  prometheus-cpp-dev nlohmann-json3-dev libpng-dev libmicrohttpd-dev libgnutls28-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist
)
case "${1:-}" in
  "") ;;
  --test)
    # curl and promtool (prometheus) read the metrics, openssl makes the TLS test's
    # certificates, jq and yamllint/python3-yaml check JSON and manifests,
    # clang-format checks the code's format (scripts/check-format.sh), python3-grpcio
    # and python3-protobuf are the independent Open Inference Protocol client, chromium
    # and python3-websocket (its DevTools protocol) test the playground page in a browser,
    # debootstrap and buildah build and run the container image (scripts/build-image.sh).
    PACKAGES+=(curl openssl prometheus jq yamllint python3-yaml clang-format python3-grpcio python3-protobuf
      chromium python3-websocket debootstrap buildah)
    # kubectl renders the Kubernetes manifests (`kubectl kustomize`). Debian's own
    # (kubernetes-client) only where none is installed: it does not unpack over another.
    if ! command -v kubectl > /dev/null; then PACKAGES+=(kubernetes-client); fi
    ;;
  --fuzz) PACKAGES+=(clang libfuzzer-14-dev libclang-rt-14-dev) ;;
  *)
    echo "install-deps: unknown option '$1' (none, --test or --fuzz)" >&2
    exit 2
    ;;
esac

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
