#!/usr/bin/env bash
# The whole test suite, as CI runs it: dependencies, one clang build with ASan+UBSan and the
# libFuzzer targets, then ctest (unit tests, and a short fuzz campaign per target); then the
# same code under valgrind and the concurrent parts under TSan.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DQZFS_SANITIZE=address -DQZFS_FUZZ=ON -DQZFS_BENCH=OFF
# A plain build for what ASan cannot see (uninitialised reads, under valgrind), and a TSan build
# for the concurrent parts (the offload module's pools, watchdog and scheduler).
scripts/build.sh build-valgrind -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQZFS_BENCH=OFF
scripts/build.sh build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQZFS_SANITIZE=thread -DQZFS_BENCH=OFF
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# The mount's fsx-style exerciser: 100,000 random operations (about 45 s under ASan) in CI;
# scripts/soak.sh runs it longer.
export QZFS_FSX_OPS=${QZFS_FSX_OPS:-100000}
TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/unit_tests --gtest_brief=1 \
  --gtest_filter='qat.*:cpu_backend.*:accel_backend.*:scheduler.*:modes/faults.*:engine.*:bench_cli.*:store_concurrency.*:store_budget.*:store.sequential*:seeds/store_crash.*:store_failure.*'
ctest --test-dir build-valgrind --output-on-failure -L 'valgrind|package'
ctest --test-dir build-test --output-on-failure -j "$(nproc)"
