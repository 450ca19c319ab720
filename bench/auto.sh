#!/usr/bin/env bash
# Is `auto` ever dominated? Each data set is copied into a fresh qzfs mount under auto and under
# each fixed policy, in the same run (docs/BENCHMARKS.md "auto"):
#   bench/auto.sh BUILD_DIR [SET...]      (sets: sam src mixed; default all three)
#     sam    corpus/sam: reads.sam + reads.fq, four copies of each (about 560 MB)
#     src    corpus/text (kernel sources, ~25,000 files) + corpus/bin (shared libraries)
#     mixed  kernel sources, libraries, random files and compressed files (xz, gzip, zstd)
# Speed: bytes / seconds of `cp -r` plus an fsync of every file (sources in the page cache).
# Ratio: logical / allocated bytes of the mount (`qzfs stats`). Medians of REPS runs (default 3),
# policies in turn within each repetition, each repetition starting with the next policy. A
# fixed policy dominates auto when it is both faster by more than 5% and denser by more than 2%:
# the table says so for each.
# QZFS_BENCH_DIR: where backing directories go (default /var/tmp); POLICIES to override the list.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
build=${1:?usage: bench/auto.sh BUILD_DIR [sam|src|mixed ...]}
shift
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(sam src mixed)
policies=(${POLICIES:-auto lz4 gzip zstd-1 zstd-3})
reps=${REPS:-3}
q=$(realpath "$build/qzfs")
[ -f corpus/sam/.done ] && [ -f corpus/text/.done ] && [ -f corpus/bin/.done ] || scripts/make-corpus.sh corpus
work=$(mktemp -d "${QZFS_BENCH_DIR:-/var/tmp}/qzfs-auto.XXXXXX")
trap '"$q" umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/mnt"

# The mixed tree: a quarter of the kernel sources, the libraries, 64 MiB of random bytes and
# files that are compressed already.
make_mixed() {
  local m=$work/mixed
  [ -d "$m" ] && return
  mkdir -p "$m/rand" "$m/packed"
  cp -r corpus/text/kernel corpus/text/mm corpus/text/fs "$m/" 2>/dev/null || cp -r corpus/text "$m/text"
  cp -r corpus/bin "$m/bin"
  for i in 1 2 3 4; do head -c 16M /dev/urandom > "$m/rand/r$i.bin"; done
  xz -T1 -3 -c corpus/sam/reads.fq > "$m/packed/reads.fq.xz"
  gzip -1 -c corpus/sam/reads.sam > "$m/packed/reads.sam.gz"
  tar -cf - -C corpus/bin . | zstd -q -3 -c > "$m/packed/bin.tar.zst"
}
make_sam() {
  local d=$work/sam
  [ -d "$d" ] && return
  mkdir -p "$d"
  for i in 1 2 3 4; do cp corpus/sam/reads.sam "$d/reads$i.sam"; cp corpus/sam/reads.fq "$d/reads$i.fq"; done
}
sources() {  # SET: the paths to copy
  case $1 in
    sam) make_sam; echo "$work/sam" ;;
    src) echo corpus/text corpus/bin ;;
    mixed) make_mixed; echo "$work/mixed" ;;
    *) echo "bench/auto.sh: unknown set '$1' (sam, src, mixed)" >&2; exit 2 ;;
  esac
}

run_one() {  # POLICY PATHS...: prints "seconds ratio"
  local pol=$1 s e
  shift
  rm -rf "$work/back" && mkdir -p "$work/back"
  "$q" mount -o "compression=$pol" "$work/back" "$work/mnt"
  cat $(find "$@" -type f) > /dev/null  # the sources in the page cache, for every policy alike
  sync
  s=$(date +%s.%N)
  cp -r "$@" "$work/mnt/"
  find "$work/mnt" -type f -print0 | xargs -0 -r sync
  e=$(date +%s.%N)
  local ratio
  ratio=$("$q" stats --json "$work/mnt" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ratio"])')
  [ "$pol" = auto ] && "$q" stats "$work/mnt" | grep -E '^(auto|codecs) ' | sed 's/^/    /' >&2
  "$q" umount "$work/mnt"
  echo "$(calc "$e - $s") $ratio"
}

echo "# auto against fixed policies (medians of $reps; MB/s of cp -r + fsync, ratio logical/allocated)"
for set in "${sets[@]}"; do
  read -r -a paths <<< "$(sources "$set")"
  bytes=$(du -sb --apparent-size "${paths[@]}" | awk '{ t += $1 } END { print t }')
  declare -A secs=() ratios=()
  for ((r = 1; r <= reps; r++)); do
    # Each repetition starts with another policy: the first copy after the sources were read
    # finds the dentry cache warmest (worth ~10% on the small files of src).
    order=("${policies[@]:$(((r - 1) % ${#policies[@]}))}" "${policies[@]:0:$(((r - 1) % ${#policies[@]}))}")
    for pol in "${order[@]}"; do
      read -r t ratio <<< "$(run_one "$pol" "${paths[@]}")"
      secs[$pol]+="$t "
      ratios[$pol]+="$ratio "
      echo "  $set rep $r $pol: $t s, ratio $ratio" >&2
    done
  done
  echo
  echo "## $set ($(calc "$bytes / 1e6") MB)"
  echo "| policy | MB/s | ratio | vs auto: speed | vs auto: ratio | dominates auto |"
  echo "|---|---|---|---|---|---|"
  as=$(tr ' ' '\n' <<< "${secs[auto]}" | grep . | median)
  ar=$(tr ' ' '\n' <<< "${ratios[auto]}" | grep . | median)
  for pol in "${policies[@]}"; do
    t=$(tr ' ' '\n' <<< "${secs[$pol]}" | grep . | median)
    ratio=$(tr ' ' '\n' <<< "${ratios[$pol]}" | grep . | median)
    speed=$(calc "$bytes / $t / 1e6")
    sx=$(calc "$as / $t")
    rx=$(calc "$ratio / $ar")
    dom=$(awk -v s="$sx" -v r="$rx" 'BEGIN { print (s > 1.05 && r > 1.02) ? "**yes**" : "no" }')
    [ "$pol" = auto ] && dom=-
    printf '| %s | %.0f | %.3f | %.2fx | %.3fx | %s |\n' "$pol" "$speed" "$ratio" "$sx" "$rx" "$dom"
  done
  unset secs ratios
done
