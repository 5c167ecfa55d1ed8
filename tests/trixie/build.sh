#!/usr/bin/env bash
# Build (once) a Debian 13 (trixie) chroot holding today's engines: Docker 26 (with the containerd
# image store available), containerd 1.7, Podman 5. Idempotent: a finished chroot has .ovf-ready.
# Usage: tests/trixie/build.sh DIR     (as root; needs debootstrap and Debian's package mirror)
set -euo pipefail
C=${1:?usage: build.sh DIR}
[ -e "$C/.ovf-ready" ] && exit 0
command -v debootstrap >/dev/null || { echo "build.sh: debootstrap is not installed" >&2; exit 2; }
mirror=$(awk '$1=="deb" && $2 ~ /^http/ {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(sed -n 's/^URIs: *\(http[^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
rm -rf "$C.tmp"; mkdir -p "$(dirname "$C")"
debootstrap --variant=minbase trixie "$C.tmp" "$mirror" >"$C.log" 2>&1 || { tail -5 "$C.log" >&2; exit 2; }
printf '#!/bin/sh\nexit 101\n' >"$C.tmp/usr/sbin/policy-rc.d"; chmod 755 "$C.tmp/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$C.tmp/etc/" 2>/dev/null || true
# apt inside the chroot needs only /proc and /dev/null: no namespace for the install
IN="chroot $C.tmp /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DEBIAN_FRONTEND=noninteractive"
for v in PIP_CERT SSL_CERT_FILE REQUESTS_CA_BUNDLE; do :; done
mount -t proc proc "$C.tmp/proc"
trap 'umount "$C.tmp/proc" 2>/dev/null || true' EXIT
$IN apt-get update -qq >>"$C.log" 2>&1
$IN apt-get install -y -qq --no-install-recommends docker.io docker-cli containerd podman runc iptables procps \
  ca-certificates >>"$C.log" 2>&1 || { tail -5 "$C.log" >&2; exit 2; }
$IN apt-get clean
umount "$C.tmp/proc"; trap - EXIT
mkdir -p "$C.tmp/etc/containers"
printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n' \
  >"$C.tmp/etc/containers/containers.conf"
$IN sh -c 'dpkg-query -W -f "\${Package} \${Version}\n" docker.io containerd podman runc' >"$C.tmp/.ovf-versions"
touch "$C.tmp/.ovf-ready"
mv "$C.tmp" "$C"
