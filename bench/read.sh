#!/usr/bin/env bash
# Reads through the mount, side by side with FUSE's own cost and the decoder's
# (docs/BENCHMARKS.md "Reads"):
#   bench/read.sh [BUILD_DIR=build] [ROW...]
# Rows (default all): seq1 seq4 rand4k view
#  - seq1: one reader of one large file, cold (caches dropped), 1 MiB reads: MB/s and the whole
#    machine's CPU-seconds per GiB (/proc/stat busy time: reader, kernel and daemon).
#  - seq4: four readers of four files at once, cold: MB/s together, CPU-s/GiB.
#  - rand4k: fio random 4 KiB reads of the file for RAND_SECONDS (cold at the start): IOPS and
#    CPU-ms per 1000 reads, on qzfs with 128 KiB, 32 KiB and 16 KiB records (the trade-off).
#  - view: `samtools view -c` of a sorted BAM made from the corpus's SAM (BGZF is compressed
#    already: qzfs stores it raw), cold.
# Targets, each on its own fresh ext4 loop image in $QZFS_BENCH_DIR (default /var/tmp): fuse_hp
# (libfuse's passthrough_hp, $PASSTHROUGH_HP; left out without it: the FUSE baseline), qzfs-off,
# qzfs-gzip, qzfs-zstd-1, qzfs-lz4. The data: the corpus's SAM and FASTQ (scripts/make-corpus.sh)
# repeated to DATA_MB (default 1024) per large file. Also measured in the same run: each codec's
# decoder alone on the same records (`qzfs bench`, one thread): CPU-s per GiB it needs, so that
#   budget = fuse_hp's CPU-s/GiB + the decoder's CPU-s/GiB
# is what a read through qzfs cannot avoid; the table shows qzfs's CPU-s/GiB over that budget.
# Medians of REPS (3) for seq rows; TARGETS="qzfs-gzip ..." measures only those. Needs root.
set -euo pipefail
build=${1:-build}
[ $# -gt 0 ] && shift
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(seq1 seq4 rand4k view)
here=$(cd "$(dirname "$0")/.." && pwd)
q=$(realpath "$build/qzfs")
[ -x "$q" ] || { echo "read.sh: $q is missing: build first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "read.sh: needs root (loop devices, drop_caches)" >&2; exit 1; }
reps=${REPS:-3}
data_mb=${DATA_MB:-1024}
rand_s=${RAND_SECONDS:-15}
for p in fio samtools; do command -v "$p" > /dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" > /dev/null; done
[ -f "$here/corpus/sam/reads.sam" ] || "$here/scripts/make-corpus.sh" "$here/corpus" > /dev/null

work=$(mktemp -d "${QZFS_BENCH_DIR:-/var/tmp}/qzfs-read.XXXXXX")
targets=()
[ -n "${PASSTHROUGH_HP:-}" ] && targets+=(fuse_hp)
targets+=(qzfs-off qzfs-gzip qzfs-zstd-1 qzfs-lz4)
[ -n "${TARGETS:-}" ] && read -r -a targets <<< "$TARGETS"  # e.g. TARGETS="fuse_hp qzfs-gzip"
cleanup() {
  set +e
  for m in "$work"/m-*; do
    mountpoint -q "$m" && { "$q" umount "$m" 2>/dev/null || fusermount3 -u "$m" 2>/dev/null || umount -l "$m"; }
  done
  for b in "$work"/b-*; do mountpoint -q "$b" && umount "$b"; done
  rm -rf "$work"
}
trap cleanup EXIT

. "$here/bench/lib.sh"

# The data: SAM and FASTQ, each repeated to half of DATA_MB, one after the other.
src=$work/src
mkdir -p "$src"
half=$((data_mb * 500000))
: > "$src/big"
for f in reads.sam reads.fq; do
  s=$(stat -c %s "$here/corpus/sam/$f")
  for ((i = 0; i < (half + s - 1) / s; i++)); do cat "$here/corpus/sam/$f"; done > "$work/part"
  truncate -s "$half" "$work/part"
  cat "$work/part" >> "$src/big"
done
rm -f "$work/part"
size=$(stat -c %s "$src/big")
# The four readers' files: the large one's quarters (SAM, SAM, FASTQ, FASTQ).
for k in 0 1 2 3; do
  dd if="$src/big" of="$src/part$k" bs=1M iflag=skip_bytes,count_bytes skip=$((k * size / 4)) count=$((size / 4)) status=none
done
if [[ " ${rows[*]} " == *" view "* ]]; then
  # A sorted BAM of the corpus's SAM (mended as bench/paper.sh does: samtools reads it then).
  mend_sam "$here/corpus/sam/reads.sam" "$work/v.sam" "$work/body.sam"
  for ((i = 0; i < 4; i++)); do cat "$work/body.sam"; done >> "$work/v.sam"
  samtools sort -@2 -o "$src/sorted.bam" "$work/v.sam" 2> /dev/null
  rm -f "$work/v.sam" "$work/body.sam"
fi

# up T [RECORDSIZE]: a fresh ext4 image mounted at $work/b-T and the target over it at $work/m-T,
# the data copied in and committed (unmounted and mounted again: nothing of it in memory).
up() {
  local t=$1 rs=${2:-128K} m=$work/m-$1 b=$work/b-$1
  truncate -s $((data_mb * 4 + 2048))M "$work/$t.img"
  mkfs.ext4 -q -F "$work/$t.img" > /dev/null
  mkdir -p "$b" "$m"
  mount -o loop "$work/$t.img" "$b"
  mount_target() {
    case $t in
      fuse_hp) "$PASSTHROUGH_HP" "$b" "$m" > /dev/null 2>&1 & sleep 1 ;;
      qzfs-*) "$q" mount -o compression="${t#qzfs-}",recordsize="$rs" "$b" "$m" ;;
    esac
  }
  mount_target
  cp "$src"/* "$m"/
  sync
  down_target
  mount_target
}
down_target() {
  local m=$work/m-$t
  case $t in
    fuse_hp) fusermount3 -u "$m"; sleep 0.5 ;;
    qzfs-*) "$q" umount "$m" ;;
  esac
}
down() {
  local t=$1
  down_target
  umount "$work/b-$t"
  rm -f "$work/$t.img"
}

# One cold run of CMD...: prints "MB/s CPU-s/GiB" for `bytes`.
measure() {
  local bytes=$1; shift
  drop
  local b0 t0 b1 t1
  b0=$(busy); t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N); b1=$(busy)
  calc "$bytes / 1000000 / ($t1 - $t0)"
  calc "($b1 - $b0) / $hz / ($bytes / 1073741824)"
}
seq1() { dd if="$1/big" of=/dev/null bs=1M status=none; }
seq4() { for k in 0 1 2 3; do dd if="$1/part$k" of=/dev/null bs=1M status=none & done; wait; }

declare -A cell
echo "read.sh: $(date -u +%FT%TZ), qzfs $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, data $((size / 1000000)) MB per large file, medians of $reps"

# The decoders alone on the same records, one thread: CPU-s per GiB of decoded data.
for c in gzip-1 zstd-1 lz4; do  # gzip-1: the members of compression=gzip
  dec=$("$q" bench --quiet --json --codecs "$c" --threads 1 --min-time 1 --max-bytes 256M "$src/big" |
        python3 -c 'import json,sys; c=sys.argv[1]; r=[x for x in json.load(sys.stdin)["results"] if x["codec"] == c][0]; print(r["decompress_mib_s_per_thread"])' "$c")
  cell[decoder,$c]=$(calc "1024 / $dec")
  echo "decoder $c: $dec MiB/s on one core = ${cell[decoder,$c]} CPU-s/GiB"
done

for t in "${targets[@]}"; do
  for r in "${rows[@]}"; do
    case $r in
      seq1|seq4)
        up "$t"
        mb=() cpu=()
        for ((i = 0; i < reps; i++)); do
          out=($(measure "$size" "$r" "$work/m-$t"))
          mb+=("${out[0]}") cpu+=("${out[1]}")
        done
        cell[$r,$t]="$(printf '%s\n' "${mb[@]}" | median) $(printf '%s\n' "${cpu[@]}" | median)"
        echo "$r  $t  ${cell[$r,$t]% *} MB/s  ${cell[$r,$t]#* } CPU-s/GiB  (load $(load))"
        down "$t" ;;
      rand4k)
        for rs in 128K 32K 16K; do
          [ "$t" = fuse_hp ] && [ $rs != 128K ] && continue
          [ "$t" = qzfs-off ] && [ $rs != 128K ] && continue
          up "$t" "$rs"
          drop
          b0=$(busy)
          out=$(fio --name=r --filename="$work/m-$t/big" --rw=randread --bs=4k --ioengine=psync --runtime="$rand_s" \
                --time_based --readonly --output-format=json 2> /dev/null)
          b1=$(busy)
          iops=$(python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))' <<< "$out")
          cell[rand4k-$rs,$t]="$iops $(calc "($b1 - $b0) / $hz * 1000 / ($iops * $rand_s) * 1000")"
          echo "rand4k $rs  $t  $iops IOPS  $(calc "($b1 - $b0) / $hz * 1000 / ($iops * $rand_s) * 1000") CPU-ms per 1000 reads  (load $(load))"
          down "$t"
        done ;;
      view)
        up "$t"
        drop
        b0=$(busy); t0=$(date +%s.%N)
        samtools view -c "$work/m-$t/sorted.bam" > /dev/null
        t1=$(date +%s.%N); b1=$(busy)
        cell[view,$t]="$(calc "$t1 - $t0") $(calc "($b1 - $b0) / $hz")"
        echo "view  $t  $(calc "$t1 - $t0") s  $(calc "($b1 - $b0) / $hz") CPU-s  (load $(load))"
        down "$t" ;;
    esac
  done
done

# The table, with the ratios: to qzfs-off and fuse_hp, and the read cost over its budget.
echo
echo "| row | target | MB/s | CPU-s/GiB | vs qzfs-off (speed) | vs fuse_hp (speed) | CPU over budget (fuse_hp + decoder) |"
echo "|---|---|---:|---:|---:|---:|---:|"
for r in seq1 seq4; do
  [[ " ${rows[*]} " == *" $r "* ]] || continue
  for t in "${targets[@]}"; do
    read -r mbs cpu <<< "${cell[$r,$t]}"
    read -r off_mbs _ <<< "${cell[$r,qzfs-off]}"
    vs_hp=- budget=-
    if [ -n "${cell[$r,fuse_hp]:-}" ]; then
      read -r hp_mbs hp_cpu <<< "${cell[$r,fuse_hp]}"
      vs_hp=$(calc "$mbs / $hp_mbs")
      case $t in
        qzfs-gzip) budget=$(calc "$cpu / ($hp_cpu + ${cell[decoder,gzip-1]})") ;;
        qzfs-zstd-1) budget=$(calc "$cpu / ($hp_cpu + ${cell[decoder,zstd-1]})") ;;
        qzfs-lz4) budget=$(calc "$cpu / ($hp_cpu + ${cell[decoder,lz4]})") ;;
        qzfs-off) budget=$(calc "$cpu / $hp_cpu") ;;
      esac
    fi
    echo "| $r | $t | $mbs | $cpu | $(calc "$mbs / $off_mbs") | $vs_hp | $budget |"
  done
done
if [[ " ${rows[*]} " == *" rand4k "* ]]; then
  echo
  echo "| random 4 KiB reads | record size | IOPS | CPU-ms per 1000 reads |"
  echo "|---|---|---:|---:|"
  for t in "${targets[@]}"; do
    for rs in 128K 32K 16K; do
      [ -n "${cell[rand4k-$rs,$t]:-}" ] || continue
      read -r iops ms <<< "${cell[rand4k-$rs,$t]}"
      echo "| $t | $rs | $iops | $ms |"
    done
  done
fi
if [[ " ${rows[*]} " == *" view "* ]]; then
  echo
  echo "| samtools view -c (sorted BAM, cold) | s | CPU-s |"
  echo "|---|---:|---:|"
  for t in "${targets[@]}"; do read -r s c <<< "${cell[view,$t]}"; echo "| $t | $s | $c |"; done
fi
