#!/usr/bin/env bash
# Copying real data into and out of `qzfs mount`, against the backing file system itself and
# against qzfs with compression off (the FUSE cost alone), on the same data in the same run
# (docs/BENCHMARKS.md "Mount"):
#   bench/mount_bench.sh BUILD_DIR [DATA...]      (default: corpus/sam/reads.sam corpus/sam/reads.fq)
# Copy in: cp, then fsync of every file (sync(1) never reaches a FUSE daemon). Copy out: cat to
# /dev/null from cold caches. CPU: the daemon's own (from /proc), per GiB. Ratio: logical /
# allocated bytes of the backing directory. Then memory: the daemon's peak RSS while the data is
# copied in 8 times (and read back) under a small cache budget (cache=32M).
# QZFS_BENCH_DIR: where the backing directories go (default /var/tmp); QZFS_BENCH_POLICIES.
set -euo pipefail
build=${1:?usage: mount_bench.sh BUILD_DIR [DATA...]}
shift
data=("$@")
[ ${#data[@]} -gt 0 ] || data=(corpus/sam/reads.sam corpus/sam/reads.fq)
policies=(${QZFS_BENCH_POLICIES:-off gzip zstd-1 lz4 gzip-6})
q=$(realpath "$build/qzfs")
work=$(mktemp -d "${QZFS_BENCH_DIR:-/var/tmp}/qzfs-mount-bench.XXXXXX")
trap '"$q" umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
bytes=0
for f in "${data[@]}"; do bytes=$((bytes + $(stat -c %s "$f"))); done
# fsync of each file (coreutils sync with file names; a python start would add ~80 ms to every copy)
fsync_all() { sync "$@"; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s.%N; }
calc() { awk "BEGIN { print $1 }"; }
cpu_of() { [ -n "$1" ] && awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat" || echo 0; }
copy_in() {  # DIR PID: seconds cpu
  local dir=$1 pid=$2 s e c0 c1 out=()
  drop
  cat "${data[@]}" > /dev/null  # sources in the page cache for every run alike
  c0=$(cpu_of "$pid"); s=$(now)
  for f in "${data[@]}"; do cp "$f" "$dir/"; out+=("$dir/$(basename "$f")"); done
  fsync_all "${out[@]}"
  e=$(now); c1=$(cpu_of "$pid")
  echo "$(calc "$e - $s") $(calc "$c1 - $c0")"
}
copy_out() {  # DIR PID: seconds cpu
  local dir=$1 pid=$2 s e c0 c1
  drop
  c0=$(cpu_of "$pid"); s=$(now)
  for f in "${data[@]}"; do cat "$dir/$(basename "$f")" > /dev/null; done
  e=$(now); c1=$(cpu_of "$pid")
  echo "$(calc "$e - $s") $(calc "$c1 - $c0")"
}
mount_q() {  # POLICY BACKING [OPTS]: the daemon's pid
  "$q" mount -o "compression=$1${3:+,$3}" "$2" "$work/mnt"
  pgrep -f "[q]zfs mount -o compression=$1${3:+,$3} $2" | head -1
}
gib=$(calc "$bytes / 1073741824")
fstype=$(findmnt -n -o FSTYPE --target "$work" 2>/dev/null | head -1)
printf '%-18s | %8s %6s %9s | %8s %6s %9s | %7s\n' target 'in MB/s' 'x off' 'cpu s/GiB' 'out MB/s' 'x off' 'cpu s/GiB' ratio
mkdir -p "$work/plain"
read -r t_in _ <<< "$(copy_in "$work/plain" "")"
read -r t_out _ <<< "$(copy_out "$work/plain" "")"
printf '%-18s | %8.1f %6s %9s | %8.1f %6s %9s | %7s\n' "$fstype (no FUSE)" "$(calc "$bytes / 1e6 / $t_in")" - - \
  "$(calc "$bytes / 1e6 / $t_out")" - - 1.000
off_in=0 off_out=0
for pol in "${policies[@]}"; do
  mkdir -p "$work/b-$pol" "$work/mnt"
  pid=$(mount_q "$pol" "$work/b-$pol")
  read -r ti ci <<< "$(copy_in "$work/mnt" "$pid")"
  read -r to co <<< "$(copy_out "$work/mnt" "$pid")"
  "$q" umount "$work/mnt"
  sleep 0.5
  stored=$(du -sb "$work/b-$pol" | cut -f1)
  mb_in=$(calc "$bytes / 1e6 / $ti"); mb_out=$(calc "$bytes / 1e6 / $to")
  [ "$pol" = off ] && off_in=$mb_in off_out=$mb_out
  printf '%-18s | %8.1f %6.2f %9.2f | %8.1f %6.2f %9.2f | %7.3f\n' "qzfs $pol" "$mb_in" "$(calc "$mb_in / $off_in")" \
    "$(calc "$ci / $gib")" "$mb_out" "$(calc "$mb_out / $off_out")" "$(calc "$co / $gib")" "$(calc "$bytes / $stored")"
done
echo "data: ${data[*]} ($((bytes / 1000000)) MB) on $fstype; ratio = logical / stored bytes of the backing directory"

# Memory: the corpus copied in 8 times and read back through a 32 MiB cache budget.
mkdir -p "$work/b-rss"
pid=$(mount_q gzip "$work/b-rss" cache=32M)
for i in 1 2 3 4 5 6 7 8; do
  mkdir -p "$work/mnt/$i"
  for f in "${data[@]}"; do cp "$f" "$work/mnt/$i/"; done
done
fsync_all "$work"/mnt/*/*
cat "$work"/mnt/*/* > /dev/null
hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")
peak=$("$q" stats --json "$work/mnt" | python3 -c 'import json, sys; print(json.load(sys.stdin)["cache"]["peak_bytes"])')
"$q" umount "$work/mnt"
echo "memory: $((8 * bytes / 1000000)) MB copied in and read back with cache=32M: daemon peak RSS $((hwm / 1024)) MiB," \
  "cache peak $((peak / 1048576)) MiB"
