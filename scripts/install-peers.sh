#!/usr/bin/env bash
# The peers people run (docs/peers.md), README command 3: a virtual environment with PyTorch 2.8,
# Intel Extension for PyTorch 2.8 (on x86-64 CPUs with AVX-512), transformers 4.55 and NumPy 2,
# pinned to versions that work together. Safe to run again. About 7 GB (PyPI's torch wheel brings
# its CUDA libraries). moe-bench finds the default location by itself.
# Usage: bash scripts/install-peers.sh [VENV]   (default: ~/.cache/moe-bench/peers)
set -euo pipefail
venv=${1:-$HOME/.cache/moe-bench/peers}
python=/usr/bin/python3
rm -f "$venv/moe-bench-peers.ok"
if [ ! -x "$venv/bin/python" ]; then
  dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q "install ok installed" || {
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  }
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
fi
# Intel Extension for PyTorch 2.8 imports names that transformers 5 removed: transformers 4.55.
pkgs=("torch==2.8.0" "numpy>=2,<3" "transformers==4.55.4")
if grep -qw avx512f /proc/cpuinfo && [ "$(uname -m)" = x86_64 ]; then
  pkgs+=("intel-extension-for-pytorch==2.8.0")
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "${pkgs[@]}"
"$venv/bin/python" - <<'PY'
import importlib
for name in ("numpy", "torch", "transformers", "intel_extension_for_pytorch"):
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except ImportError:
        print(f"{name}: not installed")
PY
# moe-bench uses the default location only once this marker says the install finished.
date -u +%FT%TZ > "$venv/moe-bench-peers.ok"
echo "install-peers: ready at $venv"
