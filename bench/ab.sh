#!/usr/bin/env bash
# Before and after a change, in one run: two qzfs binaries take turns writing the same files
# through a gzip mount and reading them back with cold caches, REPS rounds each.
#   bench/ab.sh QZFS_A QZFS_B [POLICY=gzip] [REPS=3] FILE...
# Writes are `cp` + fsync of each file; reads `cat` to /dev/null after dropping the caches. CPU
# is the daemon's and the copying process's own CPU time (user + system, so the kernel's FUSE
# and page-cache work on their behalf counts) per GiB: other load on a shared machine slows the
# steps but does not enter the CPU figures. Prints each binary's medians and B/A ratios (speed:
# above 1 is faster; CPU: below 1 is cheaper). Needs root (drop_caches). QZFS_BENCH_DIR: where
# the backing directories go (default /var/tmp).
set -euo pipefail
a=$(realpath "${1:?usage: ab.sh QZFS_A QZFS_B [POLICY] [REPS] FILE...}")
b=$(realpath "${2:?usage: ab.sh QZFS_A QZFS_B [POLICY] [REPS] FILE...}")
shift 2
pol=gzip
reps=3
[ $# -gt 0 ] && [ ! -e "$1" ] && { pol=$1; shift; }
[ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]] && [ ! -e "$1" ] && { reps=$1; shift; }
[ $# -gt 0 ] || { echo "ab: no input files" >&2; exit 2; }
files=("$@")
work=$(mktemp -d "${QZFS_BENCH_DIR:-/var/tmp}/qzfs-ab.XXXXXX")
cleanup() {
  for q in "$a" "$b"; do "$q" umount "$work/m" 2> /dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
bytes=0
for f in "${files[@]}"; do bytes=$((bytes + $(stat -c %s "$f"))); done
hz=$(getconf CLK_TCK)
now() { date +%s.%N; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
daemon_ticks() { awk '{ print $14 + $15 }' "/proc/$(pgrep -n -f "[q]zfs mount .*$work/m")/stat"; }
# step FUNCTION: "MB/s cpu-s/GiB" (the daemon's CPU and the step's own, children included)
step() {
  local t0 d0 t1 d1 own
  t0=$(now); d0=$(daemon_ticks)
  own=$( { TIMEFORMAT='%U %S'; time "$1" > /dev/null; } 2>&1 | tail -1)
  t1=$(now); d1=$(daemon_ticks)
  awk "BEGIN { split(\"$own\", o, \" \"); s = $t1 - $t0;
    printf \"%.1f %.3f\n\", $bytes / s / 1e6, (($d1 - $d0) / $hz + o[1] + o[2]) / ($bytes / 2^30) }"
}
write_all() { for f in "${files[@]}"; do cp "$f" "$work/m/"; done; sync "$work"/m/*; }
read_all() { cat "$work"/m/* > /dev/null; }
declare -A res
for r in $(seq "$reps"); do
  for side in A B; do
    q=$a; [ $side = B ] && q=$b
    rm -rf "$work/back" && mkdir -p "$work/back" "$work/m"
    "$q" mount -o "compression=$pol" "$work/back" "$work/m"
    res[$side,w,$r]=$(step write_all)
    "$q" umount "$work/m"
    "$q" mount -o "compression=$pol" "$work/back" "$work/m"
    drop
    res[$side,r,$r]=$(step read_all)
    "$q" umount "$work/m"
    echo "round $r $side: write ${res[$side,w,$r]}  read ${res[$side,r,$r]}  (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  done
done
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() {  # SIDE w|r FIELD
  for r in $(seq "$reps"); do echo "${res[$1,$2,$r]}" | cut -d' ' -f"$3"; done | median
}
echo "| $pol, $(numfmt --to=iec "$bytes")B, median of $reps | A | B | B/A |"
echo "|---|---|---|---|"
for op in w r; do
  name=write; [ $op = r ] && name=read
  for fld in 1 2; do
    unit="MB/s"; [ $fld = 2 ] && unit="CPU-s/GiB"
    va=$(col A $op $fld); vb=$(col B $op $fld)
    echo "| $name $unit | $va | $vb | $(awk "BEGIN { printf \"%.2f\", $vb / $va }") |"
  done
done
