#!/usr/bin/env bash
# Build the example jobs' image from Debian's busybox-static with umoci (no internet):
# an OCI layout at jobs/images/busybox, tag "1", exposing 8080/tcp (rkt name "8080-tcp").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/jobs/images/busybox}
if [ -f "$dest/index.json" ] && grep -q '"org.opencontainers.image.ref.name":"1"' "$dest/index.json"; then
  exit 0
fi
command -v umoci >/dev/null || { echo "umoci is missing: apt-get install umoci" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "busybox-static is missing: apt-get install busybox-static" >&2; exit 1; }
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umoci init --layout "$dest"
umoci new --image "$dest:1"
umoci unpack --image "$dest:1" "$work/bundle" >/dev/null
rootfs=$work/bundle/rootfs
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/www" "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh echo cat ls sleep true false env id httpd nc wget date hostname ps; do
  ln -sf busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
printf '<h1>hello from a rkt pod</h1>\n' > "$rootfs/www/index.html"
umoci repack --image "$dest:1" "$work/bundle" >/dev/null
umoci config --image "$dest:1" --config.cmd /bin/sh --config.cmd -c --config.cmd 'echo hello from rkt' \
  --config.exposedports 8080/tcp --config.env PATH=/bin --config.workingdir /
umoci gc --layout "$dest"
echo "built $dest:1"
