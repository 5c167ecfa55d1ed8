#!/usr/bin/env bash
# Build (once) a Debian 12 (bookworm) minbase root for the package-database tests
# (tests/test_packages_engines.py imports it into a hermetic dockerd and podman).
# Idempotent: a finished root has .ovf-ready. ~30 s, ~200 MB.
# Usage: tests/bookworm/build.sh DIR     (as root; needs debootstrap and Debian's package mirror)
set -euo pipefail
C=${1:?usage: build.sh DIR}
[ -e "$C/.ovf-ready" ] && exit 0
command -v debootstrap >/dev/null || { echo "build.sh: debootstrap is not installed" >&2; exit 2; }
mirror=$(awk '$1=="deb" && $2 ~ /^http/ {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(sed -n 's/^URIs: *\(http[^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
rm -rf "$C.tmp"; mkdir -p "$(dirname "$C")"
debootstrap --variant=minbase bookworm "$C.tmp" "$mirror" >"$C.log" 2>&1 || { tail -5 "$C.log" >&2; exit 2; }
chroot "$C.tmp" apt-get clean
touch "$C.tmp/.ovf-ready"
mv "$C.tmp" "$C"
