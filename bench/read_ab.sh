#!/usr/bin/env bash
# A focused side-by-side of cold sequential reads on ONE ext4 loop image, targets taking turns
# (docs/BENCHMARKS.md "Reads"): for the gaps that bench/read.sh's per-target images cannot
# resolve (each image's disk behaves differently from run to run).
#   bench/read_ab.sh ROUNDS TARGET...
# TARGET: `hp` (libfuse's passthrough_hp, $PASSTHROUGH_HP, over the file as it is) or
# POLICY[,OPTION...]@QZFS (a qzfs binary mounting the file stored with compression=POLICY, with
# more mount options if given: off,readahead=1M@build/qzfs), e.g.
#   PASSTHROUGH_HP=/work/ext/pt/passthrough_hp bench/read_ab.sh 4 hp off@build/qzfs off@/tmp/old/qzfs
# The data: DATA_MB (default 1024) of the corpus's SAM, stored once per policy (by the first
# binary naming it). Each run: caches dropped, `dd bs=1M` of the file through the target. Per
# run and as medians per target: MB/s, the whole machine's busy CPU-s per GiB (/proc/stat), and
# the loop device's reads (count and average size: how the backing file was read). Needs root.
# WARM=1: the backing files stay in the page cache (read once before the rounds) and each run
# drops only the mount's own cache of the file (`dd iflag=nocache`): the daemon's and FUSE's CPU
# per GiB without the disk, which is what tells the targets' costs apart on a noisy machine.
set -euo pipefail
rounds=${1:?usage: read_ab.sh ROUNDS TARGET...}
shift
[ $# -gt 0 ] || { echo "read_ab: no targets" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "read_ab.sh: needs root (loop devices, drop_caches)" >&2; exit 1; }
[ -f "$here/corpus/sam/reads.sam" ] || "$here/scripts/make-corpus.sh" "$here/corpus" > /dev/null
data_mb=${DATA_MB:-1024}
work=$(mktemp -d "${QZFS_BENCH_DIR:-/var/tmp}/qzfs-read-ab.XXXXXX")
cleanup() {
  set +e
  mountpoint -q "$work/m" && { fusermount3 -u "$work/m" 2> /dev/null || umount -l "$work/m"; }
  mountpoint -q "$work/b" && umount "$work/b"
  rm -rf "$work"
}
trap cleanup EXIT
truncate -s $((data_mb * 3 + 1024))M "$work/img"
mkfs.ext4 -q -F "$work/img"
mkdir -p "$work/b" "$work/m"
mount -o loop "$work/img" "$work/b"
dev=$(basename "$(losetup -j "$work/img" | cut -d: -f1)")
mkdir -p "$work/b/plain"
while [ "$(stat -c %s "$work/b/plain/big" 2> /dev/null || echo 0)" -lt $((data_mb << 20)) ]; do
  cat "$here/corpus/sam/reads.sam" >> "$work/b/plain/big"
done
truncate -s $((data_mb << 20)) "$work/b/plain/big"
bytes=$((data_mb << 20))
for t in "$@"; do
  [ "$t" = hp ] && { [ -x "${PASSTHROUGH_HP:-}" ] || { echo "read_ab: hp needs PASSTHROUGH_HP" >&2; exit 2; }; continue; }
  pol=${t%%@*} q=${t#*@}
  pol=${pol%%,*}
  [ -x "$q" ] || { echo "read_ab: $q is not a binary" >&2; exit 2; }
  [ -d "$work/b/$pol" ] && continue
  mkdir -p "$work/b/$pol"
  "$q" mount -o compression="$pol" "$work/b/$pol" "$work/m"
  cp "$work/b/plain/big" "$work/m/big"
  sync
  "$q" umount "$work/m"
done
hz=$(getconf CLK_TCK)
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
echo "read_ab.sh: $(date -u +%FT%TZ), $(nproc) cores, ${data_mb} MiB of SAM, $rounds rounds$([ "${WARM:-0}" = 1 ] && echo ', backing files cached')"
declare -A runs
for ((r = 1; r <= rounds; r++)); do
  for t in "$@"; do
    if [ "$t" = hp ]; then
      "$PASSTHROUGH_HP" "$work/b/plain" "$work/m" > /dev/null 2>&1
      sleep 1
    else
      o=${t%%@*}
      "${t#*@}" mount -o compression="$o" "$work/b/${o%%,*}" "$work/m"
    fi
    if [ "${WARM:-0}" = 1 ]; then
      cat "$work/b"/*/big > /dev/null
      dd if="$work/m/big" iflag=nocache count=0 status=none
    else
      sync
      echo 3 > /proc/sys/vm/drop_caches
    fi
    read -r -a s0 < "/sys/block/$dev/stat"
    b0=$(busy)
    t0=$(date +%s.%N)
    dd if="$work/m/big" of=/dev/null bs=1M status=none
    t1=$(date +%s.%N)
    b1=$(busy)
    read -r -a s1 < "/sys/block/$dev/stat"
    line=$(awk -v by=$bytes -v a=$t0 -v b=$t1 -v c=$b0 -v d=$b1 -v hz=$hz -v n=$((s1[0] - s0[0])) -v sec=$((s1[2] - s0[2])) \
      'BEGIN { printf "%.0f %.3f %d %.0f", by / (b - a) / 1e6, (d - c) / hz / (by / 2^30), n, n ? sec / n / 2 : 0 }')
    runs[$t]+="$line;"
    read -r mbs cpu n kib <<< "$line"
    printf '%-28s %6s MB/s %6s CPU-s/GiB  %5s reads of %5s KiB\n' "$t" "$mbs" "$cpu" "$n" "$kib"
    fusermount3 -u "$work/m"
    sleep 0.5
  done
done
echo "medians (and, against the first target, the median of each round's ratio of speeds):"
first=$1
for t in "$@"; do
  paste -d' ' <(tr ';' '\n' <<< "${runs[$t]}") <(tr ';' '\n' <<< "${runs[$first]}") |
    awk -v t="$t" 'NF { m[NR] = $1; c[NR] = $2; k[NR] = $4; r[NR] = $1 / $5; n = NR }
    function med(a,   i, j, x) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { x = a[i]; a[i] = a[j]; a[j] = x }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    END { printf "%-28s %6.0f MB/s %6.3f CPU-s/GiB  reads of %5.0f KiB  %.2fx\n", t, med(m), med(c), med(k), med(r) }'
done
