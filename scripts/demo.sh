#!/usr/bin/env bash
# The main job: dependencies, a release build, a real corpus from Debian packages, and
# `qzfs bench` over it on every core. Until `qzfs mount` exists this is what qzfs does.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh build -DCMAKE_BUILD_TYPE=Release -DQZFS_TESTS=OFF >/dev/null
scripts/make-corpus.sh corpus
threads=$(nproc)
for class in sam text bin; do
  echo
  echo "== corpus/$class, $threads threads =="
  build/qzfs bench --threads "$threads" --max-bytes 128M --min-time 0.5 \
    --codecs lz4,gzip-1,gzip-3,gzip-6,zstd-1,zstd-3,zstd-9 "corpus/$class"
done
