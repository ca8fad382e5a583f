#!/usr/bin/env bash
# The one test command: builds, runs the whole suite (unit, integration on the real models
# and datasets, CLI, server, browser, hostile inputs, crash test) with CTest, then again under
# sanitizers:
#   build-asan  clang, ASan+UBSan: unit and integration tests, then every libFuzzer target for
#               NEARLABEL_FUZZ_SECONDS (default 30) each after replaying fuzz/regressions
#   build-tsan  gcc, ThreadSanitizer: unit tests, the ingest pipeline (crash test), batch classify, the server
#               and the PostgreSQL store (workers and servers against a throw-away cluster)
# Models and datasets default to ../shared beside the checkout; set NEARLABEL_MODELS and
# NEARLABEL_DATASETS to point elsewhere. NEARLABEL_SANITIZE=0 skips the sanitizer passes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -z "${NEARLABEL_MODELS:-}" ] && [ -d ../shared/models ] && NEARLABEL_MODELS="$(cd ../shared/models && pwd)"
[ -z "${NEARLABEL_DATASETS:-}" ] && [ -d ../shared/datasets ] && NEARLABEL_DATASETS="$(cd ../shared/datasets && pwd)"
export NEARLABEL_MODELS="${NEARLABEL_MODELS:-}" NEARLABEL_DATASETS="${NEARLABEL_DATASETS:-}"
echo "test: models=${NEARLABEL_MODELS:-unset} datasets=${NEARLABEL_DATASETS:-unset}"
JOBS=${NEARLABEL_JOBS:-2}
SECONDS=0

[ -f build/build.ninja ] || scripts/setup.sh
cmake --build build -j"$JOBS"
(cd build && ctest --output-on-failure)
echo "test: release suite passed (${SECONDS} s)"

[ "${NEARLABEL_SANITIZE:-1}" = 1 ] || exit 0

# ASan+UBSan. Leaks inside ONNX Runtime's prebuilt library are not ours (fuzz/lsan.supp).
export LSAN_OPTIONS="suppressions=$PWD/fuzz/lsan.supp"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
if ! grep -q 'NEARLABEL_FUZZ:BOOL=ON' build-asan/CMakeCache.txt 2> /dev/null; then
  rm -rf build-asan
  CC=clang CXX=clang++ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DNEARLABEL_FUZZ=ON > /dev/null
fi
cmake --build build-asan -j"$JOBS" --target nearlabel_unit_tests nearlabel_integration_tests
echo "test: unit and integration tests under AddressSanitizer + UndefinedBehaviorSanitizer"
build-asan/nearlabel_unit_tests --gtest_brief=1
build-asan/nearlabel_integration_tests --gtest_brief=1
if [ -n "$NEARLABEL_DATASETS" ] && [ -n "$NEARLABEL_MODELS" ]; then
  echo "test: fuzzing every target for ${NEARLABEL_FUZZ_SECONDS:-30} s"
  bash tests/fuzz.sh "${NEARLABEL_FUZZ_SECONDS:-30}"
fi
echo "test: ASan/UBSan passes done (${SECONDS} s)"

# ThreadSanitizer: the threaded parts (ingest pipeline, parallel search and index build, the
# server's request pool) with their real workloads.
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNEARLABEL_TSAN=ON > /dev/null
cmake --build build-tsan -j"$JOBS" --target nearlabel nearlabel_unit_tests
# Deadlock detection (lock-order graphs) is on except where hnswlib builds a graph: its
# per-element locks make a graph TSan needs minutes for and reports as cycles (tests/tsan.supp).
TSAN_BASE="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp"
skippable() { "$@" || [ $? -eq 77 ]; }  # exit 77: the test said "skipped" (no shared data)
echo "test: unit tests, ingest pipeline and server under ThreadSanitizer"
TSAN_OPTIONS="$TSAN_BASE" build-tsan/nearlabel_unit_tests --gtest_brief=1 --gtest_filter=-HnswIndex*:StoreIndex*:CollectionIndex*
TSAN_OPTIONS="$TSAN_BASE:detect_deadlocks=0" build-tsan/nearlabel_unit_tests --gtest_brief=1 --gtest_filter=HnswIndex*:StoreIndex*:CollectionIndex*
TSAN_OPTIONS="$TSAN_BASE:detect_deadlocks=0" skippable bash tests/crash_test.sh build-tsan/nearlabel 3
TSAN_OPTIONS="$TSAN_BASE" skippable bash tests/server_test.sh build-tsan/nearlabel
# Batch classify: the decoders, the embedder and the sink thread of EmbedFilesStreaming.
TSAN_OPTIONS="$TSAN_BASE" skippable bash tests/batch_test.sh build-tsan/nearlabel build/make_tiny_model
# The shared store: concurrent ingest workers, and servers with their change-feed thread.
TSAN_OPTIONS="$TSAN_BASE" skippable bash tests/postgres_test.sh build-tsan/nearlabel
echo "test: all passed (${SECONDS} s)"
