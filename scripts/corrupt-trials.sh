#!/usr/bin/env bash
# Corruption injection through a real mount: N (default 1000) damaged copies of containers (bit
# flips and zeroed 4 KiB blocks in slots, map copies, frame headers, payloads, anywhere), read
# back through a fresh mount; prints the records read right, failed with EIO, and wrong (must
# be 0). Needs a build: scripts/build.sh build first (or BUILD=dir). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
QZFS_CORRUPT_TRIALS=${1:-1000} "$build/tests/mount_tests" --gtest_filter='*corruption_trials*'
