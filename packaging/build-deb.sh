#!/usr/bin/env bash
# Build the daxd .deb from this source tree, without touching it:
#
#   packaging/build-deb.sh [OUTDIR]        (OUTDIR defaults to dist/ at the top of the tree)
#
# Copies the tree (what git would commit: tracked and untracked files, less what .gitignore
# ignores; without git, everything less the usual caches) to a scratch folder, links
# packaging/debian there as debian/, runs `dpkg-buildpackage -us -uc -b` and copies the .deb,
# .buildinfo and .changes to OUTDIR.
#
# The build dependencies must be installed (see packaging/README.md).  The test dependencies
# are marked <!nocheck>; when only they are missing (Debian 12 has no pydantic 2) the package
# is built with the nocheck profile, without running the unit tests.  Set DAXD_DEB_NOCHECK=1
# to always skip the tests.  Extra arguments after OUTDIR go to dpkg-buildpackage.
set -euo pipefail
# Debian's own interpreters and tools only: a python3 from pyenv, a venv or /usr/local earlier
# in PATH would otherwise build the package (and lack Debian's modules).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV

src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$src/dist}
shift || true
mkdir -p "$out"
out=$(cd "$out" && pwd)

for tool in dpkg-buildpackage dpkg-parsechangelog dpkg-checkbuilddeps tar; do
  command -v "$tool" >/dev/null || {
    echo "build-deb: $tool is missing (apt-get install dpkg-dev)" >&2
    exit 1
  }
done

version=$(dpkg-parsechangelog -l "$src/packaging/debian/changelog" -S Version)
upstream=${version%-*}
work=$(mktemp -d "${TMPDIR:-/tmp}/daxd-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
# The D-Bus tests run clients as nobody, which must be able to read the built package.
chmod 0755 "$work"
tree=$work/daxd-$upstream
mkdir -p "$tree"

# Copy the source tree.
if command -v git >/dev/null && git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (
    cd "$src"
    git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
      tar --null -T - -cf -
  ) | tar -xf - -C "$tree"
else
  tar -C "$src" -cf - \
    --exclude=.git --exclude=.venv --exclude=.lab --exclude=dist --exclude=build \
    --exclude=__pycache__ --exclude='*.egg-info' --exclude=.mypy_cache --exclude=.ruff_cache \
    --exclude=.pytest_cache --exclude=.hypothesis --exclude=tests/vm/cache --exclude=./debian \
    . | tar -xf - -C "$tree"
fi
rm -rf "$tree/debian"
ln -s packaging/debian "$tree/debian"

# Build dependencies; fall back to the nocheck profile when only the test ones are missing.
profile_args=()
if [ "${DAXD_DEB_NOCHECK:-0}" = 1 ]; then
  profile_args=(-Pnocheck)
elif ! (cd "$tree" && dpkg-checkbuilddeps 2>/dev/null); then
  if (cd "$tree" && dpkg-checkbuilddeps -P nocheck); then
    echo "build-deb: the test dependencies are not installable here; building without tests" >&2
    profile_args=(-Pnocheck)
  else
    echo "build-deb: install the build dependencies above (see packaging/README.md)" >&2
    exit 1
  fi
fi
if [ "${#profile_args[@]}" -gt 0 ]; then
  export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:+$DEB_BUILD_OPTIONS }nocheck"
fi

(cd "$tree" && dpkg-buildpackage -us -uc -b "${profile_args[@]}" "$@")

shopt -s nullglob
built=("$work"/*.deb "$work"/*.buildinfo "$work"/*.changes)
[ "${#built[@]}" -gt 0 ] || { echo "build-deb: no .deb was built" >&2; exit 1; }
cp "${built[@]}" "$out"/
for f in "${built[@]}"; do echo "build-deb: $out/$(basename "$f")"; done
