#!/usr/bin/env bash
# Debian's Chromium, for two things:
# - a real browser with WebGPU (Dawn, with its own WGSL compiler Tint, on its bundled
#   SwiftShader), for web/browser_check.py;
# - SwiftShader's Vulkan driver (/usr/lib/chromium/vk_swiftshader_icd.json), a second
#   software Vulkan implementation beside lavapipe (4-wide subgroups, no shader-f16), for
#   the GPU tests.
# And spirv-tools, whose spirv-val checks naga's SPIR-V of every module.
set -euo pipefail
if [ -f /usr/lib/chromium/vk_swiftshader_icd.json ] && command -v chromium >/dev/null \
   && command -v spirv-val >/dev/null; then
  echo "chromium and spirv-tools already installed: $(chromium --version 2>/dev/null || true)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# --no-install-recommends: the browser alone, without the desktop packages it recommends.
apt-get install -y -q --no-install-recommends chromium spirv-tools
echo "installed $(chromium --version 2>/dev/null || echo chromium)"
