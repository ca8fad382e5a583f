#!/usr/bin/env bash
# The one test command: builds, runs the whole suite (unit, integration on the real models
# and datasets, CLI end-to-end) with CTest, then the unit tests again under ASan+UBSan.
# Models and datasets default to ../shared beside the checkout; set NEARLABEL_MODELS and
# NEARLABEL_DATASETS to point elsewhere. NEARLABEL_SANITIZE=0 skips the sanitizer pass.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -z "${NEARLABEL_MODELS:-}" ] && [ -d ../shared/models ] && NEARLABEL_MODELS="$(cd ../shared/models && pwd)"
[ -z "${NEARLABEL_DATASETS:-}" ] && [ -d ../shared/datasets ] && NEARLABEL_DATASETS="$(cd ../shared/datasets && pwd)"
export NEARLABEL_MODELS="${NEARLABEL_MODELS:-}" NEARLABEL_DATASETS="${NEARLABEL_DATASETS:-}"
echo "test: models=${NEARLABEL_MODELS:-unset} datasets=${NEARLABEL_DATASETS:-unset}"

[ -f build/build.ninja ] || scripts/setup.sh
cmake --build build -j"${NEARLABEL_JOBS:-2}"

if [ "${NEARLABEL_SANITIZE:-1}" = 1 ]; then
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DNEARLABEL_SANITIZE=ON > /dev/null
  cmake --build build-asan -j"${NEARLABEL_JOBS:-2}" --target nearlabel_unit_tests
  echo "test: unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
  (cd build-asan && ctest -L unit --output-on-failure)
fi

(cd build && ctest --output-on-failure)
