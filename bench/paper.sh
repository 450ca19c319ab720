#!/usr/bin/env bash
# The QZFS paper's two experiments (USENIX ATC '19, section 5), on every peer in one run
# (docs/BENCHMARKS.md "The paper's experiments"):
#   bench/paper.sh [--quick] [BUILD_DIR=build]
# Peers, each on its own file-backed loop device in $QZFS_BENCH_DIR (default /var/tmp), so all
# see the same disk: ext4 (no compression), btrfs compress=zlib:3 and compress=zstd:1, ZFS gzip-6
# and gzip-1 through zfs-fuse (Debian's; its daemon started and stopped here), a FUSE passthrough
# over ext4 (FUSE's own cost: $PASSTHROUGH, libfuse's passthrough_ll/hp, when set, else Debian's
# bindfs), and qzfs with gzip, zstd, lz4, auto and off over ext4.
#  - FIO: sequential writes of 128 KiB and 1 MiB blocks, buffer_compress_percentage 0/50/70,
#    refill_buffers, end_fsync=1, with fio's default preallocation and with --fallocate=none
#    (btrfs keeps preallocated ranges uncompressed); MB/s, CPU-seconds per GiB of the whole
#    machine (kernel threads and daemons included: /proc/stat's busy time), bytes stored.
#  - SAMtools: the corpus's SAM of simulated reads copied in, `samtools sort` from the mount to
#    the mount, `samtools view -c` of the result; wall time, CPU-seconds, bytes stored, and the
#    cost efficiency (MB of SAM per CPU-second spent copying it in and sorting it: throughput
#    over CPU utilisation, the paper's measure; docs/BENCHMARKS.md defines it before any figure).
# Every cell is the median of REPS runs (3; --quick: 1, smaller files, fewer FIO jobs, under 10
# minutes here; the full run, FIO_SIZE=512M per job and SAM_MB=512, about 30 minutes on 2 cores); every row prints the machine's load average when it started. Writes
# docs/paper/paper[-quick].md (the table, ratios to ext4 and btrfs zlib:3 in the same run) and
# PNG plots (gnuplot) next to it. Needs root; installs what is missing (btrfs-progs, zfs-fuse,
# samtools, bindfs, gnuplot-nox).
#   bench/paper.sh --report CELLS [BUILD_DIR]: the table and plots again from a run's measurements
#   (docs/paper/paper[-quick].cells, written as the run goes).
set -euo pipefail
quick=0 report_only=
if [ "${1:-}" = --quick ]; then quick=1; shift; fi
if [ "${1:-}" = --report ]; then report_only=$(realpath "$2"); shift 2; grep -q '^quick=1' "$report_only" && quick=1; fi
build=${1:-build}
here=$(cd "$(dirname "$0")/.." && pwd)
q=$(realpath "$build/qzfs")
[ -x "$q" ] || { echo "paper.sh: $q is missing: build first (scripts/build.sh build)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "paper.sh: needs root (loop devices, mounts)" >&2; exit 1; }
if [ $quick = 1 ]; then
  reps=${REPS:-1} fio_size=${FIO_SIZE:-256M} img=3G
  fio_bs=(128k 1m) fio_pct=(70) fio_alloc=(default none)
  qzfs_pols=(gzip zstd lz4 auto off)
else
  reps=${REPS:-3} fio_size=${FIO_SIZE:-512M} img=6G
  fio_bs=(128k 1m) fio_pct=(0 50 70) fio_alloc=(default none)
  qzfs_pols=(gzip zstd lz4 auto off)
fi

. "$here/bench/lib.sh"
if [ -z "$report_only" ]; then
need=()
for p in btrfs-progs zfs-fuse samtools bindfs gnuplot-nox fio; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "paper.sh: installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
fi
src_sam=$here/corpus/sam/reads.sam
[ -f "$src_sam" ] || "$here/scripts/make-corpus.sh" "$here/corpus" > /dev/null

work=$(mktemp -d "${QZFS_BENCH_DIR:-/var/tmp}/qzfs-paper.XXXXXX")
# The SAM samtools sorts: the corpus's simulated reads (ART), mended where ART's SAM is not what
# samtools reads (its @SQ name carries the FASTA description; a few reads at the genome's ends
# have a CIGAR longer than their sequence: left out), repeated to SAM_MB (--quick: 256, else
# 512) so that sorting takes long enough to measure.
sam=$work/reads.sam
mend_sam "$src_sam" "$sam" "$work/body.sam"
sam_mb=${SAM_MB:-$([ $quick = 1 ] && echo 256 || echo 512)}
body=$(stat -c %s "$work/body.sam")
for ((i = 0; i < (sam_mb * 1000000 + body - 1) / body; i++)); do cat "$work/body.sam"; done >> "$sam"
rm -f "$work/body.sam"
sam_bytes=$(stat -c %s "$sam")
# zfs-fuse is started by up() inside command substitutions (subshells): whether it ran before
# the script is what decides, at the end, whether the script stops it.
zfs_before=0
pgrep -x zfs-fuse > /dev/null && zfs_before=1
cleanup() {
  set +e
  for m in "$work"/m-*; do
    [ -d "$m" ] || continue
    mountpoint -q "$m" && { "$q" umount "$m" 2>/dev/null || fusermount3 -u "$m" 2>/dev/null || umount "$m" 2>/dev/null || umount -l "$m"; }
  done
  zpool destroy -f qzpaper 2>/dev/null
  for b in "$work"/b-*; do mountpoint -q "$b" && umount "$b"; done
  [ $zfs_before = 0 ] && pkill -x zfs-fuse
  rm -rf "$work"
}
trap cleanup EXIT


# Targets: up NAME makes it and mounts it at $work/m-NAME; used NAME prints the bytes it stores;
# down NAME takes it away. Each target starts empty for each run.
targets=(ext4 btrfs-zlib3 btrfs-zstd1 zfs-gzip6 zfs-gzip1 fuse)
for p in "${qzfs_pols[@]}"; do targets+=("qzfs-$p"); done
loop_ext4() {  # NAME: a fresh ext4 image mounted at $work/b-NAME
  truncate -s "$img" "$work/$1.img"
  mkfs.ext4 -q -F "$work/$1.img" > /dev/null
  mkdir -p "$work/b-$1"
  mount -o loop "$work/$1.img" "$work/b-$1"
}
up() {
  local t=$1 m=$work/m-$1
  mkdir -p "$m"
  case $t in
    ext4) loop_ext4 ext4; mount --bind "$work/b-ext4" "$m" ;;
    btrfs-*)
      truncate -s "$img" "$work/$t.img"
      mkfs.btrfs -f "$work/$t.img" > /dev/null 2>&1
      mount -o loop,compress="$([ "$t" = btrfs-zlib3 ] && echo zlib:3 || echo zstd:1)" "$work/$t.img" "$m" ;;
    zfs-*)
      pgrep -x zfs-fuse > /dev/null || { zfs-fuse; sleep 1; }
      truncate -s "$img" "$work/$t.img"
      zpool create -f -m "$m" qzpaper "$work/$t.img" > /dev/null
      zfs set compression="$(echo "${t#zfs-}" | sed 's/gzip/gzip-/')" qzpaper > /dev/null ;;
    fuse)
      loop_ext4 fuse
      if [ -n "${PASSTHROUGH:-}" ]; then
        "$PASSTHROUGH" -o allow_other,source="$work/b-fuse" "$m" 2>/dev/null || "$PASSTHROUGH" "$work/b-fuse" "$m"
      else
        bindfs --no-allow-other "$work/b-fuse" "$m"
      fi ;;
    qzfs-*) loop_ext4 "$t"; "$q" mount -o compression="${t#qzfs-}" "$work/b-$t" "$m" ;;
  esac
}
used() {
  local t=$1 m=$work/m-$1
  case $t in
    btrfs-*) btrfs filesystem sync "$m" > /dev/null; sleep 1; df -B1 --output=used "$m" | tail -1 ;;
    zfs-*) zfs get -Hp -o value used qzpaper ;;
    *) du -sB1 "$work/b-$t" | cut -f1 ;;  # the backing ext4's blocks (qzfs: after its commit)
  esac
}
down() {
  local t=$1 m=$work/m-$1
  case $t in
    qzfs-*) "$q" umount "$m" ;;
    fuse) fusermount3 -u "$m" ;;
    zfs-*) zfs umount qzpaper 2>/dev/null || true
           for _ in 1 2 3 4 5 6 7 8 9 10; do zpool destroy -f qzpaper 2>/dev/null && break; sleep 1; done ;;
    *) umount "$m" ;;
  esac
  if mountpoint -q "$work/b-$t" 2>/dev/null; then umount "$work/b-$t"; fi
  rm -f "$work/$t.img"
}
# The bytes a target stores for what was written: for qzfs, what the backing directory holds
# once every file is committed, so it is read after the unmount.
stored_then_down() {
  local t=$1 s
  case $t in
    qzfs-*) "$q" umount "$work/m-$t"; s=$(du -sB1 "$work/b-$t" | cut -f1); mkdir -p "$work/m-$t"
            umount "$work/b-$t"; rm -f "$work/$t.img" ;;
    *) s=$(used "$t"); down "$t" ;;
  esac
  echo "$s"
}

declare -A cell
# fio_one TARGET BS PCT ALLOC: "MB/s cpu-s/GiB stored-bytes"
fio_one() {
  local t=$1 bs=$2 pct=$3 alloc=$4 extra=() b0 b1 s e out
  [ "$alloc" = none ] && extra=(--fallocate=none)
  up "$t"
  drop
  b0=$(busy); s=$(date +%s.%N)
  out=$(fio --name=w --filename="$work/m-$t/fio.dat" --rw=write --bs="$bs" --size="$fio_size" --ioengine=psync \
            --buffer_compress_percentage="$pct" --refill_buffers --end_fsync=1 --randseed=1 "${extra[@]}" \
            --output-format=terse 2>&1) || { down "$t"; echo "failed failed failed"; return; }
  e=$(date +%s.%N); b1=$(busy)
  local bytes
  bytes=$(stat -c %s "$work/m-$t/fio.dat")
  local st
  st=$(stored_then_down "$t")
  echo "$(calc "$bytes / 1e6 / ($e - $s)") $(calc "($b1 - $b0) / $hz / ($bytes / 1073741824)") $st"
}
# sam_one TARGET: "copy-MB/s sort-seconds sort-cpu-s view-seconds stored-bytes records copy-cpu-s"
sam_one() {
  local t=$1 m b0 b1 s e c_s c_c sort_s sort_c view_s n st
  m=$work/m-$1
  up "$t"
  drop
  b0=$(busy); s=$(date +%s.%N)
  cp "$sam" "$m/reads.sam" && sync "$m/reads.sam"
  e=$(date +%s.%N); b1=$(busy)
  c_s=$(calc "$sam_bytes / 1e6 / ($e - $s)"); c_c=$(calc "($b1 - $b0) / $hz")
  b0=$(busy); s=$(date +%s.%N)
  if ! (cd "$m" && samtools sort -@ "$(nproc)" -m 256M -T "$m/tmp" -o "$m/sorted.bam" "$m/reads.sam" 2> "$work/sort.log") ||
     ! sync "$m/sorted.bam"; then
    echo "paper.sh: samtools sort on $t failed: $(tail -3 "$work/sort.log")" >&2
    down "$t"; echo "failed failed failed failed failed failed failed"; return
  fi
  e=$(date +%s.%N); b1=$(busy)
  sort_s=$(calc "$e - $s"); sort_c=$(calc "($b1 - $b0) / $hz")
  drop
  s=$(date +%s.%N)
  n=$(samtools view -c "$m/sorted.bam")
  view_s=$(calc "$(date +%s.%N) - $s")
  st=$(stored_then_down "$t")
  echo "$c_s $sort_s $sort_c $view_s $st $n $c_c"
}

echo "paper.sh: $([ $quick = 1 ] && echo quick || echo full) run, $reps rep(s), $(nproc) cores, $(date -u +%FT%TZ), qzfs $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "SAM: $sam ($((sam_bytes / 1000000)) MB); FIO: $fio_size per job"
fio_jobs=()
for bs in "${fio_bs[@]}"; do for pct in "${fio_pct[@]}"; do for a in "${fio_alloc[@]}"; do fio_jobs+=("$bs/$pct/$a"); done; done; done
# Every measurement is also kept as it is made (--report makes the table again from it).
mkdir -p "$here/docs/paper"
cells_file=$here/docs/paper/paper.cells
[ $quick = 1 ] && cells_file=$here/docs/paper/paper-quick.cells
{
  echo "# bench/paper.sh measurements, $(date -u +%FT%TZ), qzfs $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores"
  echo "quick=$quick reps=$reps fio_size=$fio_size sam_bytes=$sam_bytes run_date=$(date -u +%F) run_rev=$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "targets=(${targets[*]})"
  echo "fio_jobs=(${fio_jobs[*]})"
  echo "fio_pct=(${fio_pct[*]})"
} > "$cells_file"
for job in "${fio_jobs[@]}"; do
  IFS=/ read -r bs pct a <<< "$job"
  for t in "${targets[@]}"; do
    l=$(load); runs=()
    for ((r = 0; r < reps; r++)); do runs+=("$(fio_one "$t" "$bs" "$pct" "$a")"); done
    mbs=$(printf '%s\n' "${runs[@]}" | cut -d' ' -f1 | median)
    cpu=$(printf '%s\n' "${runs[@]}" | cut -d' ' -f2 | median)
    st=$(printf '%s\n' "${runs[@]}" | cut -d' ' -f3 | median)
    cell["fio|$job|$t"]="$mbs $cpu $st $l"
    echo "cell[\"fio|$job|$t\"]=\"$mbs $cpu $st $l\"" >> "$cells_file"
    printf 'fio %-16s %-14s %8s MB/s %8s cpu-s/GiB %12s B stored  (load %s)\n' "$job" "$t" "$mbs" "$cpu" "$st" "$l"
  done
done
for t in "${targets[@]}"; do
  l=$(load); runs=()
  for ((r = 0; r < reps; r++)); do runs+=("$(sam_one "$t")"); done
  for k in 1 2 3 4 5 6 7; do
    declare "v$k=$(printf '%s\n' "${runs[@]}" | cut -d' ' -f$k | median)"
  done
  cell["sam|$t"]="$v1 $v2 $v3 $v4 $v5 $v6 $v7 $l"
  echo "cell[\"sam|$t\"]=\"$v1 $v2 $v3 $v4 $v5 $v6 $v7 $l\"" >> "$cells_file"
  printf 'sam %-14s copy %7s MB/s %6s cpu-s  sort %6s s %6s cpu-s  view %6s s  %12s B stored  %s reads  (load %s)\n' \
    "$t" "$v1" "$v7" "$v2" "$v3" "$v4" "$v5" "$v6" "$l"
done

else
  # shellcheck disable=SC1090
  declare -A cell
  . "$report_only"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
# The report: Markdown and plots.
out_dir=$here/docs/paper
mkdir -p "$out_dir"
name=paper  # (an assignment from $(false && ...) would end the script under set -e)
[ $quick = 1 ] && name=paper-quick
md=$out_dir/$name.md
{
  echo "# The paper's experiments on this machine ($([ $quick = 1 ] && echo quick || echo full) run)"
  echo
  echo "\`bench/paper.sh$([ $quick = 1 ] && echo ' --quick')\`, ${run_date:-$(date -u +%F)}, qzfs ${run_rev:-$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')}, $(nproc) cores, medians of $reps run(s); every peer on its own loop device in ${QZFS_BENCH_DIR:-/var/tmp}; FUSE: ${PASSTHROUGH:-bindfs}. Load: the 1-minute load average when the row started."
  echo
  echo "Cost efficiency = MB of SAM per CPU-second of the whole machine spent copying it in and sorting it (the pipeline's throughput divided by its CPU utilisation: MB/s over busy cores). Stored: the SAM and the sorted BAM together. Ratios are to ext4 and to btrfs zlib:3 in this run."
  for job in "${fio_jobs[@]}"; do
    echo
    echo "## FIO sequential write, bs/compress%/prealloc = $job, $fio_size"
    echo
    echo "| target | MB/s | x ext4 | x btrfs-zlib3 | CPU-s/GiB | CPU x btrfs-zlib3 | stored MiB | ratio | load |"
    echo "|---|---|---|---|---|---|---|---|---|"
    read -r e_mbs _ _ _ <<< "${cell["fio|$job|ext4"]}"
    read -r z_mbs z_cpu _ _ <<< "${cell["fio|$job|btrfs-zlib3"]}"
    size_b=$(numfmt --from=iec "${fio_size}")
    for t in "${targets[@]}"; do
      read -r mbs cpu st l <<< "${cell["fio|$job|$t"]}"
      if [ "$mbs" = failed ]; then echo "| $t | failed | | | | | | | $l |"; continue; fi
      printf '| %s | %.0f | %.2fx | %.2fx | %.2f | %.2fx | %.0f | %.2f | %s |\n' "$t" "$mbs" "$(calc "$mbs / $e_mbs")" \
        "$(calc "$mbs / $z_mbs")" "$cpu" "$(calc "$cpu / $z_cpu")" "$(calc "$st / 1048576")" "$(calc "$size_b / ($st > 0 ? $st : 1)")" "$l"
    done
  done
  echo
  echo "## SAMtools: copy in, sort mount to mount, view (SAM $((sam_bytes / 1000000)) MB)"
  echo
  echo "| target | copy MB/s | copy CPU-s | sort s | sort CPU-s | cost efficiency MB/CPU-s | x btrfs-zlib3 | view s | stored MiB | load |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  read -r _ _ z_c _ _ _ z_cc _ <<< "${cell["sam|btrfs-zlib3"]}"
  z_eff=$(calc "$sam_bytes / 1e6 / ($z_c + $z_cc)")
  for t in "${targets[@]}"; do
    read -r c s sc v st n cc l <<< "${cell["sam|$t"]}"
    if [ "$sc" = failed ]; then echo "| $t | failed | | | | | | | | $l |"; continue; fi
    eff=$(calc "$sam_bytes / 1e6 / ($sc + $cc)")
    printf '| %s | %.0f | %.1f | %.1f | %.1f | %.1f | %.2fx | %.1f | %.0f | %s |\n' "$t" "$c" "$cc" "$s" "$sc" "$eff" "$(calc "$eff / $z_eff")" "$v" "$(calc "$st / 1048576")" "$l"
  done
} > "$md"

# Plots: FIO MB/s and CPU per GiB of the 128 KiB, most compressible, no-preallocation job; SAMtools cost efficiency.
pj="128k/${fio_pct[-1]}/none"
{ for t in "${targets[@]}"; do read -r mbs cpu _ _ <<< "${cell["fio|$pj|$t"]}"; echo "$t $mbs $cpu"; done; } > "$work/fio.dat"
{ for t in "${targets[@]}"; do read -r _ _ sc _ _ _ cc _ <<< "${cell["sam|$t"]}"; [ "$sc" = failed ] && sc=1e99 cc=0; echo "$t $(calc "$sam_bytes / 1e6 / ($sc + $cc)")"; done; } > "$work/sam.dat"
gnuplot <<EOF
set terminal pngcairo size 1000,520 font ",10"
set style data histogram
set style fill solid 0.8 border -1
set boxwidth 0.8
set xtics rotate by -35
set grid ytics
set yrange [0:*]
set output "$out_dir/$name-fio.png"
set multiplot layout 1,2 title "FIO sequential write, 128 KiB blocks, ${fio_pct[-1]}% compressible, no preallocation ($fio_size, $(nproc) cores)"
set ylabel "MB/s"
plot "$work/fio.dat" using 2:xtic(1) title "throughput" lc rgb "#3b75af"
set ylabel "CPU-s per GiB (whole machine)"
plot "$work/fio.dat" using 3:xtic(1) title "CPU cost" lc rgb "#c44e52"
unset multiplot
set output "$out_dir/$name-samtools.png"
set title "SAMtools: SAM copied in and sorted mount to mount, cost efficiency (MB per CPU-second)"
set ylabel "MB per CPU-second"
plot "$work/sam.dat" using 2:xtic(1) title "" lc rgb "#55a868"
EOF
echo "paper.sh: wrote $md, $out_dir/$name-fio.png, $out_dir/$name-samtools.png"
