#!/usr/bin/env bash
# Installs the Debian packages moe-bench needs that are not installed yet; safe to run again.
set -euo pipefail
pkgs=(build-essential cmake ninja-build ccache git pkg-config
      libcli11-dev libfmt-dev nlohmann-json3-dev catch2
      libopenblas-dev libopenblas0-pthread libomp-dev openmpi-bin libopenmpi-dev
      python3 python3-numpy python3-matplotlib python3-jsonschema python3-torch)
# Where nvcc is, the CUDA build also compiles the CUTLASS engine: its headers come from PyPI's
# pinned wheel (scripts/install-cutlass.sh), which pip fetches.
have_nvcc=0
if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then have_nvcc=1; fi
[ "$have_nvcc" -eq 1 ] && pkgs+=(python3-pip)
cutlass() {
  if [ "$have_nvcc" -eq 1 ]; then bash "$(dirname "$0")/install-cutlass.sh"; fi
}
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  cutlass
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo_cmd apt-get update -qq
$sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
cutlass
