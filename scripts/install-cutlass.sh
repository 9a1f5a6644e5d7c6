#!/usr/bin/env bash
# CUTLASS's C++ headers for the `cuda_cutlass` engine, from PyPI's pinned `nvidia-cutlass` wheel:
# downloaded once with pip, checked against its SHA-256, and unpacked into a cache folder that
# CMake finds (MOE_BENCH_CUTLASS_DIR, default below). Nothing is downloaded at build time.
#
#   install-cutlass.sh                 fetch (if missing) and unpack into the cache; safe to rerun
#   install-cutlass.sh --from WHEEL    unpack a wheel already here (the lent GPU machine, offline)
#   install-cutlass.sh --print-dir     the folder CMake is given
#
# The folder gets include/ (cutlass, cute) and util/include/ (cutlass/util); 28 MB in all.
set -euo pipefail
version=4.2.0.0
sha256=f9599ada45c7bcb6bf53f7d3f0a7d154183e53451c01bfa59eecd37dd4a693f6
wheel_name=nvidia_cutlass-${version}-py3-none-any.whl
dir=${MOE_BENCH_CUTLASS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moe-bench/cutlass-$version}

case "${1:-}" in
  --print-dir)
    echo "$dir"
    exit 0
    ;;
  --from)
    wheel=${2:?"install-cutlass: --from needs the wheel's path"}
    ;;
  "")
    wheel="$dir/$wheel_name"
    ;;
  *)
    echo "install-cutlass: unknown argument '$1' (--from WHEEL, --print-dir)" >&2
    exit 2
    ;;
esac

if [ -f "$dir/include/cutlass/cutlass.h" ] && [ -f "$dir/util/include/cutlass/util/packed_stride.hpp" ]; then
  echo "install-cutlass: CUTLASS $version headers present in $dir"
  exit 0
fi
mkdir -p "$dir"
if [ ! -f "$wheel" ]; then
  echo "install-cutlass: fetching nvidia-cutlass==$version from PyPI"
  python3 -m pip --version >/dev/null 2>&1 || {
    echo "install-cutlass: python3 has no pip (Debian: apt-get install python3-pip)" >&2
    exit 1
  }
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary :all: --dest "$tmp" \
    "nvidia-cutlass==$version" || {
    rm -rf "$tmp"
    echo "install-cutlass: pip could not download nvidia-cutlass==$version" >&2
    exit 1
  }
  mv "$tmp/$wheel_name" "$wheel"
  rm -rf "$tmp"
fi
echo "$sha256  $wheel" | sha256sum --check --status || {
  echo "install-cutlass: $wheel does not have the pinned SHA-256 $sha256" >&2
  exit 1
}
# Unpack beside, then move into place: an interrupted run leaves no half-written folder.
python3 - "$wheel" "$dir" <<'EOF'
import os, shutil, sys, tempfile, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
parts = {"cutlass_library/source/include/": "include",
         "cutlass_library/source/tools/util/include/": "util/include"}
tmp = tempfile.mkdtemp(dir=dest)
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        for prefix, sub in parts.items():
            if name.startswith(prefix) and not name.endswith("/"):
                target = os.path.join(tmp, sub, name[len(prefix):])
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with z.open(name) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
for sub in ("include", "util"):
    shutil.rmtree(os.path.join(dest, sub), ignore_errors=True)
    os.replace(os.path.join(tmp, sub), os.path.join(dest, sub))
os.rmdir(tmp)
EOF
echo "install-cutlass: CUTLASS $version headers in $dir"
