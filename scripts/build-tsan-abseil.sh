#!/usr/bin/env bash
# Builds the installed Abseil (Debian's source package of exactly the installed
# version, Debian's patches applied) with ThreadSanitizer, as shared libraries
# with the installed ones' names, into OUT_DIR (default build-tsan-abseil).
#
# Why: Debian's gRPC locks with absl::Mutex, and Debian's Abseil is built
# without ThreadSanitizer, so every lock taken inside gRPC is invisible to it
# and the gRPC-based tests report races at accesses those locks guard. Run
# with LD_LIBRARY_PATH=OUT_DIR/lib, Debian's own libgrpc calls the instrumented
# absl::Mutex, whose annotations tell ThreadSanitizer about each lock.
#
# The source comes through apt (a deb-src twin of the system's own sources,
# see scripts/lib/debian-source.sh). A finished build is reused while the
# installed version stays the same. Needs root only if dpkg-dev is missing.
#
#   scripts/build-tsan-abseil.sh [OUT_DIR]
set -euo pipefail

OUT_DIR=$(realpath -m "${1:-build-tsan-abseil}")
JOBS=${JOBS:-$(nproc)}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib/debian-source.sh
source "$ROOT/scripts/lib/debian-source.sh"

# The installed runtime package (libabsl20220623 on Debian 12) and its source version.
read -r PACKAGE SOURCE VERSION < <(debian_installed_source 'libabsl2*')
if [[ -z "${PACKAGE:-}" ]]; then
  echo "build-tsan-abseil: no Abseil runtime package is installed (libabsl2*)" >&2
  exit 1
fi
debian_already_built build-tsan-abseil "$OUT_DIR/lib" "$SOURCE" "$VERSION" && exit 0

echo "build-tsan-abseil: fetching the source of $SOURCE $VERSION (for $PACKAGE)"
rm -rf "${OUT_DIR:?}/build" "${OUT_DIR:?}/lib"
SRC_DIR=$(debian_fetch_source build-tsan-abseil "$SOURCE" "$VERSION" "$OUT_DIR")

# Only what libgrpc and the tests reach needs to be instrumented, but the
# whole library set is built so that LD_LIBRARY_PATH never mixes versions.
echo "build-tsan-abseil: building with -fsanitize=thread ($JOBS jobs; several minutes)"
cmake -S "$SRC_DIR" -B "$OUT_DIR/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_STANDARD=17 \
  -DBUILD_SHARED_LIBS=ON -DBUILD_TESTING=OFF -DCMAKE_C_FLAGS=-fsanitize=thread -DCMAKE_CXX_FLAGS=-fsanitize=thread \
  -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread > "$OUT_DIR/configure.log" 2>&1 || {
  cat "$OUT_DIR/configure.log" >&2
  exit 1
}
cmake --build "$OUT_DIR/build" -j "$JOBS" > "$OUT_DIR/build.log" 2>&1 || {
  tail -n 40 "$OUT_DIR/build.log" >&2
  exit 1
}
mkdir -p "$OUT_DIR/lib"
find "$OUT_DIR/build" -name 'libabsl_*.so*' -exec cp -P {} "$OUT_DIR/lib/" \;
# Every installed shared library must have its instrumented twin.
debian_check_twins build-tsan-abseil "$PACKAGE" '/libabsl_[a-z0-9_]+\.so\.[0-9]+$' "$OUT_DIR/lib"
echo "$SOURCE $VERSION" > "$OUT_DIR/lib/.built"
rm -rf "$OUT_DIR/build" "$OUT_DIR/src"
echo "build-tsan-abseil: $(find "$OUT_DIR/lib" -name 'libabsl_*.so.*[0-9]' -type f | wc -l) libraries in $OUT_DIR/lib"
