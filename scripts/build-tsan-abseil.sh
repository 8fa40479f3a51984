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
# kept in OUT_DIR, so the system's apt configuration is left as it is), with
# apt's signature and checksum checks. A finished build is reused while the
# installed version stays the same. Needs root only if dpkg-dev is missing.
#
#   scripts/build-tsan-abseil.sh [OUT_DIR]
set -euo pipefail

OUT_DIR=$(realpath -m "${1:-build-tsan-abseil}")
JOBS=${JOBS:-$(nproc)}

# The installed runtime package (libabsl20220623 on Debian 12) and its source version.
read -r PACKAGE SOURCE VERSION < <(dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${source:Package} ${source:Version}\n' 'libabsl2*' |
  awk '$1 == "ii" { print $2, $3, $4; exit }')
if [[ -z "${PACKAGE:-}" ]]; then
  echo "build-tsan-abseil: no Abseil runtime package is installed (libabsl2*)" >&2
  exit 1
fi
if [[ -f "$OUT_DIR/lib/.built" && "$(cat "$OUT_DIR/lib/.built")" == "$SOURCE $VERSION" ]]; then
  echo "build-tsan-abseil: $SOURCE $VERSION already built in $OUT_DIR/lib"
  exit 0
fi
command -v dpkg-source > /dev/null || apt-get install -y -q dpkg-dev > /dev/null

echo "build-tsan-abseil: fetching the source of $SOURCE $VERSION (for $PACKAGE)"
APT_DIR="$OUT_DIR/apt"
rm -rf "${APT_DIR:?}" "${OUT_DIR:?}/src" "${OUT_DIR:?}/build" "${OUT_DIR:?}/lib"
mkdir -p "$APT_DIR/sources.list.d" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$OUT_DIR/src"
# deb-src twins of the configured archives, one-line and deb822 forms alike.
if [[ -f /etc/apt/sources.list ]]; then
  sed -n 's/^deb\s/deb-src /p' /etc/apt/sources.list > "$APT_DIR/sources.list"
else
  : > "$APT_DIR/sources.list"
fi
for f in /etc/apt/sources.list.d/*.sources; do
  [[ -f "$f" ]] && sed 's/^Types:.*/Types: deb-src/' "$f" > "$APT_DIR/sources.list.d/$(basename "$f")"
done
for f in /etc/apt/sources.list.d/*.list; do
  [[ -f "$f" ]] && sed -n 's/^deb\s/deb-src /p' "$f" > "$APT_DIR/sources.list.d/$(basename "$f")"
done
APT_OPTIONS=(-o "Dir::Etc::SourceList=$APT_DIR/sources.list" -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
  -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache" -o "APT::Sandbox::User=root")
apt-get "${APT_OPTIONS[@]}" -q update > "$APT_DIR/update.log" 2>&1 || {
  cat "$APT_DIR/update.log" >&2
  echo "build-tsan-abseil: cannot read the archives' source indices" >&2
  exit 1
}
(cd "$OUT_DIR/src" && apt-get "${APT_OPTIONS[@]}" -q source "$SOURCE=$VERSION" > "$APT_DIR/source.log" 2>&1) || {
  cat "$APT_DIR/source.log" >&2
  echo "build-tsan-abseil: cannot fetch $SOURCE $VERSION's source" >&2
  exit 1
}
SRC_DIR=$(find "$OUT_DIR/src" -mindepth 1 -maxdepth 1 -type d | head -n 1)

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
# Every installed shared library must have its instrumented twin, or a test
# would silently load an uninstrumented one.
missing=0
for lib in $(dpkg -L "$PACKAGE" | grep -E '/libabsl_[a-z0-9_]+\.so\.[0-9]+$'); do
  if [[ ! -e "$OUT_DIR/lib/$(basename "$lib")" ]]; then
    echo "build-tsan-abseil: $(basename "$lib") was not built" >&2
    missing=1
  fi
done
[[ $missing == 0 ]] || exit 1
echo "$SOURCE $VERSION" > "$OUT_DIR/lib/.built"
rm -rf "$OUT_DIR/build" "$OUT_DIR/src" "$APT_DIR"
echo "build-tsan-abseil: $(find "$OUT_DIR/lib" -name 'libabsl_*.so.*[0-9]' -type f | wc -l) libraries in $OUT_DIR/lib"
