#!/usr/bin/env bash
# The one set-up command: installs the Debian packages nearlabel needs (when missing), ONNX
# Runtime's Linux library from npm (package onnxruntime-node, pinned in package-lock.json),
# and builds into build/ (the binary is build/nearlabel).
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake ninja-build pkg-config python3
      libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev libopencv-dnn-dev
      libsqlite3-dev zlib1g-dev libpq-dev postgresql-15 nlohmann-json3-dev libcli11-dev libopenblas-dev libssl-dev libgtest-dev
      libonnx-dev libprotobuf-dev libhnswlib-dev libcpp-httplib-dev libmicrohttpd-dev chromium curl
      clang libclang-rt-14-dev libjpeg-dev  # sanitizer and fuzz builds; test images (CMYK JPEG)
      libfaiss-dev python3-hnswlib python3-numpy  # the last three: baselines for bench/search
      pybind11-dev python3-dev python3-pytest python3-pil)  # the Python module and its tests
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
# npm may come with a Node.js that is not Debian's; only install Debian's when there is none.
command -v npm > /dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# ONNX Runtime: only its shared library is used (loaded at run time); the package's install
# script, which fetches GPU add-ons, is not run.
ORT_LIB=node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1
if [ ! -f "$ORT_LIB" ] || [ package-lock.json -nt "$ORT_LIB" ]; then
  echo "setup: installing ONNX Runtime from npm (onnxruntime-node)"
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
  touch "$ORT_LIB"
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"${NEARLABEL_JOBS:-2}"
echo "setup: built build/nearlabel"
