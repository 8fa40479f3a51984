# Assertions shared by the command-line tests; each failure prints "FAIL: ..."
# and sets fail=1, which the test exits with.
fail=0
check() {  # check CONDITION DESCRIPTION
  if ! eval "$1"; then echo "FAIL: $2"; fail=1; fi
}
# expect_error EXIT FRAGMENT command...: the command exits EXIT and prints
# exactly one line, which contains FRAGMENT.
expect_error() {
  local want="$1" fragment="$2"
  shift 2
  local out rc
  out="$("$@" 2>&1)"
  rc=$?
  if [[ $rc -ne $want || "$out" != *"$fragment"* || $(printf '%s\n' "$out" | wc -l) -ne 1 ]]; then
    echo "FAIL: '$*' gave exit $rc (want $want) and: $out"
    fail=1
  fi
}
