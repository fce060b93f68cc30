#!/usr/bin/env bash
# Build the example jobs' images from Debian's busybox-static (no internet):
# - an OCI layout at jobs/images/busybox, tag "1", exposing 8080/tcp (rkt name "8080-tcp"), with umoci;
# - an ACI next to it, jobs/images/busybox.aci (appc name example.com/busybox, port "http" 8080/tcp),
#   signed with a throwaway gpg key (busybox.aci.asc) whose public key is trusted for the prefix
#   example.com in the demo trust dir jobs/images/trustedkeys (rkt's prefix.d layout).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/jobs/images/busybox}
images=$(dirname "$dest")

build_aci() {
  local aci=$images/busybox.aci
  if [ -f "$aci" ] && [ -f "$aci.asc" ] && [ -d "$images/trustedkeys/prefix.d/example.com" ]; then
    return 0
  fi
  command -v gpg >/dev/null || { echo "gpg is missing: apt-get install gnupg" >&2; exit 1; }
  local work arch
  case "$(uname -m)" in x86_64) arch=amd64 ;; i?86) arch=i386 ;; *) arch=$(uname -m) ;; esac
  mkdir -p "$images"
  work=$(mktemp -d)
  mkdir -p "$work/aci/rootfs/bin" "$work/aci/rootfs/etc" "$work/aci/rootfs/www" "$work/aci/rootfs/tmp" "$work/gnupg"
  chmod 700 "$work/gnupg"
  cp /bin/busybox "$work/aci/rootfs/bin/busybox"
  for applet in sh echo cat ls sleep true false env id httpd wget; do
    ln -sf busybox "$work/aci/rootfs/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$work/aci/rootfs/etc/passwd"
  printf 'root:x:0:\n' > "$work/aci/rootfs/etc/group"
  printf '<h1>hello from an ACI</h1>\n' > "$work/aci/rootfs/www/index.html"
  cat > "$work/aci/manifest" <<MANIFEST
{
  "acKind": "ImageManifest",
  "acVersion": "0.8.11",
  "name": "example.com/busybox",
  "labels": [{"name": "version", "value": "1"}, {"name": "os", "value": "linux"}, {"name": "arch", "value": "$arch"}],
  "app": {
    "exec": ["/bin/sh", "-c", "echo hello from an ACI signed by its publisher"],
    "user": "0",
    "group": "0",
    "environment": [{"name": "PATH", "value": "/bin"}],
    "ports": [{"name": "http", "protocol": "tcp", "port": 8080}]
  }
}
MANIFEST
  tar -C "$work/aci" --owner=0 --group=0 -czf "$aci.tmp" manifest rootfs
  local gpg=(gpg --homedir "$work/gnupg" --batch --quiet)
  "${gpg[@]}" --passphrase '' --quick-gen-key 'demo publisher <demo@example.com>' ed25519 sign never 2>/dev/null
  local fpr
  fpr=$("${gpg[@]}" --with-colons --list-keys | awk -F: '/^fpr:/ {print tolower($10); exit}')
  "${gpg[@]}" --yes --armor --output "$aci.asc" --detach-sign "$aci.tmp"
  mkdir -p "$images/trustedkeys/prefix.d/example.com"
  rm -f "$images/trustedkeys/prefix.d/example.com/"*
  "${gpg[@]}" --armor --export "$fpr" > "$images/trustedkeys/prefix.d/example.com/$fpr"
  gpgconf --homedir "$work/gnupg" --kill gpg-agent 2>/dev/null || true
  mv "$aci.tmp" "$aci"
  rm -rf "$work"
  echo "built $aci (signed by $fpr)"
}

build_aci
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
