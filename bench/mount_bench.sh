#!/usr/bin/env bash
# Write throughput through `qzfs mount` against the backing file system itself (ext4 here), on
# the same data in the same run: bench/mount_bench.sh BUILD_DIR [DATA...] (default:
# corpus/sam/reads.sam corpus/sam/reads.fq). Each copy is timed up to an fsync of every file
# (sync(1) never reaches a FUSE daemon); the daemon's CPU time comes from /proc.
set -euo pipefail
build=${1:?usage: mount_bench.sh BUILD_DIR [DATA...]}
shift
data=("$@")
[ ${#data[@]} -gt 0 ] || data=(corpus/sam/reads.sam corpus/sam/reads.fq)
q=$(realpath "$build/qzfs")
work=$(mktemp -d /var/tmp/qzfs-mount-bench.XXXXXX)
trap '"$q" umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
bytes=0
for f in "${data[@]}"; do bytes=$((bytes + $(stat -c %s "$f"))); done
fsync_all() { python3 -c 'import os, sys; [os.fsync(os.open(f, os.O_RDONLY)) for f in sys.argv[1:]]' "$@"; }
copy() {  # copy DIR: seconds
  local dir=$1 s e
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  cat "${data[@]}" > /dev/null  # sources in the page cache for every run alike
  s=$(date +%s.%N)
  local out=()
  for f in "${data[@]}"; do cp "$f" "$dir/"; out+=("$dir/$(basename "$f")"); done
  fsync_all "${out[@]}"
  e=$(date +%s.%N)
  awk -v s="$s" -v e="$e" 'BEGIN { print e - s }'
}
cpu_of() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"; }
printf '%-24s %9s %9s %8s %10s\n' target 'MB/s' 'x ext4' ratio 'daemon CPU s'
mkdir -p "$work/ext4"
t_ext4=$(copy "$work/ext4")
calc() { awk "BEGIN { print $1 }"; }
printf '%-24s %9.1f %9.2f %8.3f %10s\n' "ext4 (backing fs)" "$(calc "$bytes / 1000000 / $t_ext4")" 1 1 -
for pol in gzip zstd-1 lz4 gzip-6; do
  mkdir -p "$work/b-$pol" "$work/mnt"
  "$q" mount -o compression=$pol "$work/b-$pol" "$work/mnt"
  pid=$(pgrep -f "[q]zfs mount -o compression=$pol $work/b-$pol" | head -1)
  c0=$(cpu_of "$pid")
  t=$(copy "$work/mnt")
  c1=$(cpu_of "$pid")
  stored=$(du -sb "$work/b-$pol" | cut -f1)
  "$q" umount "$work/mnt"
  sleep 0.5
  printf '%-24s %9.1f %9.2f %8.3f %10.2f\n' "qzfs $pol" "$(calc "$bytes / 1000000 / $t")" \
    "$(calc "$t_ext4 / $t")" "$(calc "$bytes / $stored")" "$(calc "$c1 - $c0")"
done
echo "data: ${data[*]} ($((bytes / 1000000)) MB); ratio = logical / stored bytes of the backing directory"
