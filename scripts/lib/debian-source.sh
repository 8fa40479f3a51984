# shellcheck shell=bash
# Sourced by the scripts that rebuild an installed Debian library with a
# sanitizer (build-tsan-abseil.sh, build-tsan-grpc.sh). Each function states
# what it sets or prints.

# debian_installed_source PACKAGE_GLOB: prints "PACKAGE SOURCE VERSION" of the
# first installed package matching PACKAGE_GLOB, or nothing.
debian_installed_source() {
  dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${source:Package} ${source:Version}\n' "$1" 2> /dev/null |
    awk '$1 == "ii" { print $2, $3, $4; exit }'
}

# debian_fetch_source NAME SOURCE VERSION WORK_DIR: unpacks Debian's source
# package SOURCE=VERSION, Debian's patches applied, under WORK_DIR/src and
# prints the unpacked folder. apt reads deb-src twins of the system's own
# archives from WORK_DIR/apt (apt's signature and checksum checks apply), so
# the system's apt configuration is left as it is. Messages name NAME.
debian_fetch_source() {
  local name="$1" source="$2" version="$3" work_dir="$4"
  local apt_dir="$work_dir/apt" f
  command -v dpkg-source > /dev/null || apt-get install -y -q dpkg-dev > /dev/null
  rm -rf "${apt_dir:?}" "${work_dir:?}/src"
  mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$work_dir/src"
  # deb-src twins of the configured archives, one-line and deb822 forms alike.
  if [[ -f /etc/apt/sources.list ]]; then
    sed -n 's/^deb\s/deb-src /p' /etc/apt/sources.list > "$apt_dir/sources.list"
  else
    : > "$apt_dir/sources.list"
  fi
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] && sed 's/^Types:.*/Types: deb-src/' "$f" > "$apt_dir/sources.list.d/$(basename "$f")"
  done
  for f in /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] && sed -n 's/^deb\s/deb-src /p' "$f" > "$apt_dir/sources.list.d/$(basename "$f")"
  done
  local options=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o "APT::Sandbox::User=root")
  apt-get "${options[@]}" -q update > "$apt_dir/update.log" 2>&1 || {
    cat "$apt_dir/update.log" >&2
    echo "$name: cannot read the archives' source indices" >&2
    return 1
  }
  (cd "$work_dir/src" && apt-get "${options[@]}" -q source "$source=$version" > "$apt_dir/source.log" 2>&1) || {
    cat "$apt_dir/source.log" >&2
    echo "$name: cannot fetch $source $version's source" >&2
    return 1
  }
  rm -rf "${apt_dir:?}"
  find "$work_dir/src" -mindepth 1 -maxdepth 1 -type d | head -n 1
}

# debian_check_twins NAME PACKAGE LIB_REGEX LIB_DIR: fails, naming each, when
# a shared library of installed PACKAGE whose path matches LIB_REGEX has no
# file of the same name in LIB_DIR (a test would silently load the
# uninstrumented one).
debian_check_twins() {
  local name="$1" package="$2" regex="$3" lib_dir="$4" lib missing=0
  for lib in $(dpkg -L "$package" | grep -E "$regex"); do
    if [[ ! -e "$lib_dir/$(basename "$lib")" ]]; then
      echo "$name: $(basename "$lib") was not built" >&2
      missing=1
    fi
  done
  return $missing
}

# debian_already_built NAME LIB_DIR SOURCE VERSION: true (and says so) when
# LIB_DIR holds a finished build of SOURCE VERSION.
debian_already_built() {
  local name="$1" lib_dir="$2" source="$3" version="$4"
  [[ -f "$lib_dir/.built" && "$(cat "$lib_dir/.built")" == "$source $version" ]] || return 1
  echo "$name: $source $version already built in $lib_dir"
}
