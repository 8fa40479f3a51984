#!/usr/bin/env bash
# Builds the installed gRPC core and C++ libraries (Debian's source package of
# exactly the installed version, Debian's patches applied) with
# ThreadSanitizer, as shared libraries with the installed ones' names, into
# OUT_DIR/lib (default build-tsan-grpc), against the installed Abseil,
# protobuf, c-ares, RE2, OpenSSL and zlib.
#
# Why: the gRPC reactor tests hand calls between gRPC's completion-queue
# threads and the service's own; with an uninstrumented libgrpc every
# synchronisation inside it is invisible to ThreadSanitizer, which then
# reports races at accesses gRPC orders. Run with
# LD_LIBRARY_PATH=OUT_DIR/lib:ABSEIL_TSAN_DIR/lib (scripts/run-tsan-tests.sh).
#
# The source comes through apt (scripts/lib/debian-source.sh). A finished
# build is reused while the installed version stays the same. About 700
# compile units: allow about an hour on two cores the first time.
#
#   scripts/build-tsan-grpc.sh [OUT_DIR]
set -euo pipefail

OUT_DIR=$(realpath -m "${1:-build-tsan-grpc}")
JOBS=${JOBS:-$(nproc)}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib/debian-source.sh
source "$ROOT/scripts/lib/debian-source.sh"

read -r CORE_PACKAGE SOURCE VERSION < <(debian_installed_source 'libgrpc[0-9]*')
read -r CPP_PACKAGE _ CPP_VERSION < <(debian_installed_source 'libgrpc++[0-9]*')
if [[ -z "${CORE_PACKAGE:-}" || -z "${CPP_PACKAGE:-}" ]]; then
  echo "build-tsan-grpc: the gRPC runtime packages are not installed (libgrpc[0-9]*, libgrpc++[0-9]*)" >&2
  exit 1
fi
if [[ "$CPP_VERSION" != "$VERSION" ]]; then
  echo "build-tsan-grpc: $CORE_PACKAGE is $VERSION but $CPP_PACKAGE is $CPP_VERSION" >&2
  exit 1
fi
debian_already_built build-tsan-grpc "$OUT_DIR/lib" "$SOURCE" "$VERSION" && exit 0

echo "build-tsan-grpc: fetching the source of $SOURCE $VERSION"
rm -rf "${OUT_DIR:?}/build" "${OUT_DIR:?}/lib"
SRC_DIR=$(debian_fetch_source build-tsan-grpc "$SOURCE" "$VERSION" "$OUT_DIR")

# The libraries a gRPC C++ server or client loads; the code generators, the
# other languages and the optional C++ extras are not built.
TARGETS=(gpr address_sorting upb grpc grpc++)
LIBRARY_REGEX='/lib(gpr|address_sorting|upb|grpc|grpc\+\+)\.so\.[0-9.]+$'
echo "build-tsan-grpc: building ${TARGETS[*]} with -fsanitize=thread ($JOBS jobs; allow about an hour)"
cmake -S "$SRC_DIR" -B "$OUT_DIR/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_STANDARD=17 \
  -DBUILD_SHARED_LIBS=ON -DgRPC_BUILD_TESTS=OFF -DgRPC_BUILD_CODEGEN=OFF -DgRPC_BACKWARDS_COMPATIBILITY_MODE=OFF \
  -DgRPC_ABSL_PROVIDER=package -DgRPC_CARES_PROVIDER=package -DgRPC_PROTOBUF_PROVIDER=package \
  -DgRPC_RE2_PROVIDER=package -DgRPC_SSL_PROVIDER=package -DgRPC_ZLIB_PROVIDER=package \
  -DProtobuf_PROTOC_LIBRARY="$(find /usr/lib -name 'libprotoc.so.*' -type f | head -n 1)" \
  -DCMAKE_C_FLAGS=-fsanitize=thread -DCMAKE_CXX_FLAGS=-fsanitize=thread \
  -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread > "$OUT_DIR/configure.log" 2>&1 || {
  cat "$OUT_DIR/configure.log" >&2
  exit 1
}
cmake --build "$OUT_DIR/build" -j "$JOBS" --target "${TARGETS[@]}" > "$OUT_DIR/build.log" 2>&1 || {
  tail -n 40 "$OUT_DIR/build.log" >&2
  exit 1
}
mkdir -p "$OUT_DIR/lib"
find "$OUT_DIR/build" -maxdepth 1 -regextype posix-extended -regex '.*/lib(gpr|address_sorting|upb|grpc|grpc\+\+)\.so.*' \
  -exec cp -P {} "$OUT_DIR/lib/" \;
debian_check_twins build-tsan-grpc "$CORE_PACKAGE" "$LIBRARY_REGEX" "$OUT_DIR/lib"
debian_check_twins build-tsan-grpc "$CPP_PACKAGE" "$LIBRARY_REGEX" "$OUT_DIR/lib"
echo "$SOURCE $VERSION" > "$OUT_DIR/lib/.built"
rm -rf "$OUT_DIR/build" "$OUT_DIR/src"
echo "build-tsan-grpc: $(find "$OUT_DIR/lib" -name 'lib*.so.*' -type f | wc -l) libraries in $OUT_DIR/lib"
