#!/usr/bin/env bash
# fio writes on a gzip mount with accel=cpu and with the modelled QAT card, in the same run
# (docs/BENCHMARKS.md "Modelled QAT card"):
#   bench/model_fio.sh BUILD_DIR [SIZE=512M] [REPS=1] [MODEL=model:gbps=24]
# Sequential writes with bs 128 KiB and 1 MiB, buffers 60% compressible
# (buffer_compress_percentage=60), no preallocation (fallocate=none), ending with an fsync.
# CPU per GiB written: "machine" is the whole machine's busy time during the job (fio, kernel,
# daemon, and the card's instance threads); "card" is the CPU time of the modelled card's own
# threads (named qzfs-qatmodelN in the daemon: CLOCK_THREAD_CPUTIME_ID as the kernel counts it in
# /proc/PID/task/TID/stat), which a real card would spend on its own silicon; "host" is machine
# minus card: what the host pays. "to card" is the share of the eligible records (gzip, inside the
# card's size window) the card took, from `qzfs stats --json` routing counters. Each cell is the
# median of REPS rounds; within a round the two mounts take turns per job.
set -euo pipefail
build=${1:?usage: model_fio.sh BUILD_DIR [SIZE] [REPS] [MODEL]}
size=${2:-512M}
reps=${3:-1}
model=${4:-model:gbps=24}
q=$(realpath "$build/qzfs")
command -v fio > /dev/null || { echo "model_fio: fio is missing (scripts/setup.sh installs it)" >&2; exit 1; }
work=$(mktemp -d "${QZFS_BENCH_DIR:-/var/tmp}/qzfs-model-fio.XXXXXX")
hz=$(getconf CLK_TCK)
busy() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }  # user nice system irq softirq (no steal)
# card_ticks MNT: utime + stime of the daemon's modelled-card threads (0 without a card).
card_ticks() {
  local pid t sum=0
  pid=$(pgrep -n -f "[q]zfs mount .*$1\$" || true)
  [ -n "$pid" ] || { echo 0; return; }
  for t in /proc/"$pid"/task/*; do
    if [[ $(cat "$t/comm" 2> /dev/null) == qzfs-qatmodel* ]]; then
      # Fields 14 and 15 (utime, stime), counted after the ")" that ends the name.
      sum=$((sum + $(sed 's/.*) //' "$t/stat" | awk '{ print $12 + $13 }')))
    fi
  done
  echo "$sum"
}
# daemon_ticks MNT: utime + stime of the whole daemon (all its threads, the card's included).
daemon_ticks() {
  local pid
  pid=$(pgrep -n -f "[q]zfs mount .*$1\$" || true)
  [ -n "$pid" ] || { echo 0; return; }
  sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }'
}
stat_json() { "$q" stats --json "$1"; }

# job BS MNT FILE: one fio write; prints
# "MB/s machine-cpu-s/GiB card-cpu-s/GiB to_card_pct daemon-cpu-s/GiB"
job() {
  local bs=$1 mnt=$2 file=$3 b0 b1 c0 c1 p0 p1 s0 s1 out
  s0=$(stat_json "$mnt")
  c0=$(card_ticks "$mnt")
  p0=$(daemon_ticks "$mnt")
  b0=$(busy)
  out=$(fio --name="w$bs" --filename="$mnt/$file" --rw=write --bs="$bs" --size="$size" --ioengine=psync \
            --fallocate=none --end_fsync=1 --buffer_compress_percentage=60 --refill_buffers \
            --randseed=1 --output-format=json)
  b1=$(busy)
  c1=$(card_ticks "$mnt")
  p1=$(daemon_ticks "$mnt")
  s1=$(stat_json "$mnt")
  python3 - "$out" "$b0" "$b1" "$c0" "$c1" "$hz" "$s0" "$s1" "$p0" "$p1" <<'PY'
import json, sys
a = sys.argv
j = json.loads(a[1][a[1].index('{'):])['jobs'][0]['write']
gib = j['io_bytes'] / 2**30
hz = float(a[6])
machine = (float(a[3]) - float(a[2])) / hz
card = (float(a[5]) - float(a[4])) / hz
r0, r1 = json.loads(a[7])['routing'], json.loads(a[8])['routing']
d = {k: r1[k] - r0[k] for k in r1}
eligible = d['to_accel'] + d['overflow'] + d['not_serving']
pct = 100.0 * d['to_accel'] / eligible if eligible else 0.0
daemon = (float(a[10]) - float(a[9])) / hz
print(f"{j['bw_bytes'] / 1e6:.1f} {machine / gib:.3f} {card / gib:.3f} {pct:.0f} {daemon / gib:.3f}")
PY
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
med() { tr ' ' '\n' <<< "$1" | grep . | median; }

targets=(cpu "$model")
bss=(128k 1M)
declare -A mb mach card pct dmn
trap 'for i in 0 1; do "$q" umount "$work/m$i" 2> /dev/null || true; done; rm -rf "$work"' EXIT
for ((r = 1; r <= reps; r++)); do
  for i in 0 1; do
    rm -rf "$work/b$i"
    mkdir -p "$work/b$i" "$work/m$i"
    "$q" mount -o "compression=gzip,accel=${targets[$i]}" "$work/b$i" "$work/m$i"
  done
  for bs in "${bss[@]}"; do
    for i in $(( (r - 1) % 2 )) $(( r % 2 )); do
      read -r m c d p dm <<< "$(job "$bs" "$work/m$i" "f$bs")"
      [ -n "${QZFS_BENCH_VERBOSE:-}" ] && echo "round $r ${targets[$i]} $bs: $m MB/s, machine $c, card $d, daemon $dm cpu-s/GiB, $p% to card" >&2
      dmn[$i,$bs]+="$dm "
      mb[$i,$bs]+="$m "
      mach[$i,$bs]+="$c "
      card[$i,$bs]+="$d "
      pct[$i,$bs]+="$p "
      rm -f "$work/m$i/f$bs"
      sleep 0.5
    done
  done
  for i in 0 1; do "$q" umount "$work/m$i"; done
done

printf '%-9s | %-16s | %7s | %-30s | %-22s | %7s\n' "" "" "" "machine cpu-s/GiB" "daemon cpu-s/GiB" ""
printf '%-9s | %-16s | %7s | %8s %6s %6s %6s | %6s %6s %7s | %7s\n' "write bs" accel "MB/s" busy card host "vs cpu" all card host "to card"
for bs in "${bss[@]}"; do
  base_h="" base_dh=""
  for i in 0 1; do
    m=$(med "${mb[$i,$bs]}"); c=$(med "${mach[$i,$bs]}"); d=$(med "${card[$i,$bs]}"); p=$(med "${pct[$i,$bs]}")
    dm=$(med "${dmn[$i,$bs]}")
    h=$(awk -v c="$c" -v d="$d" 'BEGIN { printf "%.3f", c - d }')
    dh=$(awk -v c="$dm" -v d="$d" 'BEGIN { printf "%.3f", c - d }')
    [ "$i" = 0 ] && base_h=$h
    rel=$(awk -v h="$h" -v b="$base_h" 'BEGIN { printf "%.2fx", (b > 0 ? h / b : 0) }')
    printf '%-9s | %-16s | %7s | %8s %6s %6s %6s | %6s %6s %7s | %6s%%\n' "$bs" "${targets[$i]}" "$m" "$c" "$d" "$h" "$rel" "$dm" "$d" "$dh" "$p"
  done
done
echo "(size $size, $reps round(s), $(nproc) cores; busy: the whole machine during the job; card: the modelled"
echo " card's threads; host = busy - card; daemon: the qzfs process alone, host = all - card; vs cpu: host"
echo " against the accel=cpu mount's host in the same run)"
