#!/usr/bin/env bash
# Checks that every C++ file of the tree is formatted by clang-format with the
# repository's .clang-format (Google style, 120 columns).
#   scripts/check-format.sh [SOURCE_DIR]          list the files that differ; exit 1 if any
#   scripts/check-format.sh --fix [SOURCE_DIR]    format them in place
set -euo pipefail
fix=0
if [[ "${1:-}" == "--fix" ]]; then fix=1; shift; fi
src="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
cd "$src"
clang_format="$(command -v clang-format || command -v clang-format-14 || true)"
if [[ -z "$clang_format" ]]; then
  echo "check-format: clang-format is not installed (scripts/install-deps.sh --test installs it)" >&2
  exit 2
fi

# The tracked sources when this is a git checkout, else every .cc/.h outside build folders.
if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  mapfile -t files < <(git ls-files -- '*.cc' '*.h')
else
  mapfile -t files < <(find . -path './build*' -prune -o \( -name '*.cc' -o -name '*.h' \) -print | sed 's|^\./||' | sort)
fi

if [[ $fix -eq 1 ]]; then
  "$clang_format" -i "${files[@]}"
  echo "check-format: formatted ${#files[@]} files"
  exit 0
fi

# The check itself must be able to fail: a misformatted probe has to be reported.
probe="$(mktemp --suffix=.cc)"
trap 'rm -f "$probe"' EXIT
printf 'int  main( ){return 0 ;}\n' > "$probe"
if "$clang_format" --style=file:"$src/.clang-format" --dry-run --Werror "$probe" > /dev/null 2>&1; then
  echo "check-format: clang-format did not report a misformatted file; the check cannot be trusted" >&2
  exit 2
fi

unformatted=()
for f in "${files[@]}"; do
  if ! "$clang_format" --dry-run --Werror "$f" > /dev/null 2>&1; then unformatted+=("$f"); fi
done
if [[ ${#unformatted[@]} -gt 0 ]]; then
  echo "check-format: ${#unformatted[@]} of ${#files[@]} files are not formatted (scripts/check-format.sh --fix):"
  printf '  %s\n' "${unformatted[@]}"
  exit 1
fi
echo "check-format: ${#files[@]} files formatted"
