#!/usr/bin/env bash
# Longer runs of the randomized tests than CI affords: scripts/soak.sh [BUILD_DIR] [FACTOR]
#   the fsx-style exerciser on a real mount (3000 ops in CI) and the store's model-based test
#   (25,000 ops per run in CI), each FACTOR times longer (default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-test}
factor=${2:-20}
[ -x "$build/tests/mount_tests" ] || { echo "soak: build the tests first (scripts/build.sh $build)"; exit 2; }
QZFS_FSX_OPS=$((3000 * factor)) "$build/tests/mount_tests" --gtest_filter='*fsx*'
QZFS_MODEL_OPS=$((25000 * factor)) "$build/tests/unit_tests" --gtest_brief=1 --gtest_filter='runs/store_model.*'
