#!/usr/bin/env bash
# The main job: dependencies, a release build, a real corpus from Debian packages, `qzfs bench`
# over it on every core, a demo backing directory of real data packed into compressed containers
# and checked, then mounted: more data copied in through the mount, and its live statistics.
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
echo
echo "== the whole engine, policy auto, on every class (plus the kernel's .tar.xz: incompressible) =="
build/qzfs bench --policy auto --threads "$threads" --max-bytes 64M \
  corpus/sam corpus/text corpus/bin /usr/src/linux-source-6.1.tar.xz
echo
echo "== policy gzip through a rehearsed failing accelerator: nothing is lost =="
build/qzfs bench --policy gzip --threads "$threads" --max-bytes 32M \
  --accel fault:error=0.05,garbage=0.02,timeout=0.01 corpus/sam
echo
echo "== the record store: a demo backing directory (SAM + FASTQ reads, kernel sources) packed in place, then checked =="
rm -rf demo/backing && mkdir -p demo/backing
cp -r corpus/sam demo/backing/reads
cp -r corpus/text/kernel corpus/text/mm demo/backing/
build/qzfs pack --policy gzip demo/backing
build/qzfs check demo/backing
du -sh --apparent-size corpus/sam corpus/text/kernel corpus/text/mm | sed 's/^/  before: /'
du -sh demo/backing | sed 's/^/  after:  /'
echo
echo "== qzfs mount: the demo backing directory mounted on demo/mnt, FASTQ and SAM copied in, live statistics =="
mkdir -p demo/mnt
if mountpoint -q demo/mnt; then build/qzfs umount demo/mnt; fi
build/qzfs mount -o compression=gzip demo/backing demo/mnt
trap 'build/qzfs umount demo/mnt 2>/dev/null || true' EXIT
start=$(date +%s.%N)
cp corpus/sam/reads.fq demo/mnt/more.fq
cp corpus/sam/reads.sam demo/mnt/more.sam
# fsync both (sync(1) never reaches a FUSE daemon): the time includes making them durable.
sync demo/mnt/more.fq demo/mnt/more.sam  # fsync of each (sync(1) with file names)
end=$(date +%s.%N)
bytes=$(( $(stat -c %s corpus/sam/reads.fq) + $(stat -c %s corpus/sam/reads.sam) ))
awk -v b="$bytes" -v s="$start" -v e="$end" 'BEGIN { printf "copied and fsynced %.0f MB through the mount in %.2f s: %.0f MB/s\n", b / 1e6, e - s, b / 1e6 / (e - s) }'
cmp corpus/sam/reads.sam demo/mnt/more.sam && echo "read back: identical"
du -sh --apparent-size demo/mnt | sed 's/^/  apparent (logical): /'
du -sh demo/mnt | sed 's/^/  du (compressed):    /'
build/qzfs stats demo/mnt
build/qzfs umount demo/mnt
trap - EXIT
