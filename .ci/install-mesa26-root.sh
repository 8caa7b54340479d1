#!/usr/bin/env bash
# Make (or reuse) a minimal Debian unstable root with Mesa 26's lavapipe, whose Vulkan driver
# has cooperative matrices (VK_KHR_cooperative_matrix: 8x8x8 f16 x f16 -> f16 / f32) that
# bookworm's Mesa 25 lacks. Test binaries built on this host run inside it through
# .ci/chroot-runner (see .ci/run), so the cooperative-matrix kernels are tested on every
# submission.
#   .ci/install-mesa26-root.sh ROOT
# Needs root (debootstrap, chroot). Takes about 45 s with a nearby mirror.
set -euo pipefail
root=${1:?usage: install-mesa26-root.sh ROOT}
have_mesa26() {
  [ -x "$root/usr/bin/env" ] &&
    chroot "$root" dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | grep -Eq '^(2[6-9]|[3-9][0-9])\.'
}
if have_mesa26; then
  echo "Mesa 26 root already at $root: mesa-vulkan-drivers $(chroot "$root" dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! command -v debootstrap >/dev/null; then
  apt-get install -y -q debootstrap || { apt-get update -q && apt-get install -y -q debootstrap; }
fi
# The machine's own Debian mirror (first URI of its first source stanza), else Debian's.
mirror=http://deb.debian.org/debian
src=/etc/apt/sources.list.d/debian.sources
if [ -f "$src" ]; then
  uri=$(awk '/^URIs:/ {print $2; exit}' "$src")
  [ -n "$uri" ] && mirror=$uri
fi
rm -rf "$root"
debootstrap --variant=minbase --include=mesa-vulkan-drivers,libvulkan1 sid "$root" "$mirror"
have_mesa26 || { echo "debootstrap gave no Mesa 26 in $root" >&2; exit 1; }
echo "Mesa 26 root at $root: mesa-vulkan-drivers $(chroot "$root" dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
