#!/usr/bin/env bash
# The paper's FIO experiment with a modelled QAT card (docs/BENCHMARKS.md "Modelled QAT card"):
#   [COMPRESSION=gzip-6] bench/model_fio.sh BUILD_DIR [SIZE=512M] [REPS=1] [MODEL=model:gbps=24]
# fio sequential writes, bs 128 KiB and 1 MiB, buffers 60% compressible
# (buffer_compress_percentage=60, refill_buffers), no preallocation (fallocate=none), ending with
# an fsync, on gzip mounts side by side in one run: CPU only (accel=cpu), the modelled card with
# the mount's default verification (full: every member decoded and compared), and the modelled
# card with accel_verify=crc.
# Per GiB written: "busy" is the whole machine's CPU during the job (fio, kernel, daemon);
# "daemon" the qzfs process's, and "card" the part of it that stands for the card (the
# compression it did, timed on the thread that ran it; `qzfs stats --json`: process.device_cpu_s);
# host = daemon - card, what the host pays. "to card": the share of the eligible records (gzip,
# inside the card's size window) the card took. "off host": how much of the compression's CPU the
# card took off the host, (host of accel=cpu - host) / the compression's CPU, which is the card's
# CPU scaled to every record (card / to-card share) in the same run. Medians of REPS rounds; in a
# round the mounts take turns per job.
set -euo pipefail
build=${1:?usage: model_fio.sh BUILD_DIR [SIZE] [REPS] [MODEL]}
size=${2:-512M}
reps=${3:-1}
model=${4:-model:gbps=24}
compression=${COMPRESSION:-gzip}  # the mounts' policy (gzip is gzip-1)
q=$(realpath "$build/qzfs")
command -v fio > /dev/null || { echo "model_fio: fio is missing (scripts/setup.sh installs it)" >&2; exit 1; }
work=$(mktemp -d "${QZFS_BENCH_DIR:-/var/tmp}/qzfs-model-fio.XXXXXX")
hz=$(getconf CLK_TCK)
busy() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }  # user nice system irq softirq (no steal)

# job BS MNT FILE: one fio write; prints "MB/s busy-cpu-s/GiB daemon-cpu-s/GiB card-cpu-s/GiB to_card_pct"
job() {
  local bs=$1 mnt=$2 file=$3 b0 b1 s0 s1 out
  s0=$("$q" stats --json "$mnt")
  b0=$(busy)
  out=$(fio --name="w$bs" --filename="$mnt/$file" --rw=write --bs="$bs" --size="$size" --ioengine=psync \
            --fallocate=none --end_fsync=1 --buffer_compress_percentage=60 --refill_buffers \
            --randseed=1 --output-format=json)
  b1=$(busy)
  s1=$("$q" stats --json "$mnt")
  python3 - "$out" "$b0" "$b1" "$hz" "$s0" "$s1" <<'PY'
import json, sys
a = sys.argv
j = json.loads(a[1][a[1].index('{'):])['jobs'][0]['write']
gib = j['io_bytes'] / 2**30
machine = (float(a[3]) - float(a[2])) / float(a[4])
s0, s1 = json.loads(a[5]), json.loads(a[6])
r = {k: s1['routing'][k] - s0['routing'].get(k, 0) for k in s1['routing']}
eligible = r['to_accel'] + r['overflow'] + r['not_serving']
pct = 100.0 * r['to_accel'] / eligible if eligible else 0.0
daemon = s1['process']['cpu_s'] - s0['process']['cpu_s']
card = s1['process']['device_cpu_s'] - s0['process']['device_cpu_s']
print(f"{j['bw_bytes'] / 1e6:.1f} {machine / gib:.3f} {daemon / gib:.3f} {card / gib:.3f} {pct:.1f}")
PY
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
med() { tr ' ' '\n' <<< "$1" | grep . | median; }

targets=(cpu "$model" "$model,accel_verify=crc")
n=${#targets[@]}
bss=(128k 1M)
declare -A mb mach dmn card pct
trap 'for ((i = 0; i < n; i++)); do "$q" umount "$work/m$i" 2> /dev/null || true; done; rm -rf "$work"' EXIT
for ((r = 1; r <= reps; r++)); do
  for ((i = 0; i < n; i++)); do
    rm -rf "$work/b$i"
    mkdir -p "$work/b$i" "$work/m$i"
    "$q" mount -o "compression=$compression,accel=${targets[$i]}" "$work/b$i" "$work/m$i"
  done
  for bs in "${bss[@]}"; do
    for ((k = 0; k < n; k++)); do
      i=$(( (k + r - 1) % n ))  # who goes first turns with the rounds
      read -r m c dm d p <<< "$(job "$bs" "$work/m$i" "f$bs")"
      [ -n "${QZFS_BENCH_VERBOSE:-}" ] && echo "round $r ${targets[$i]} $bs: $m MB/s, busy $c, daemon $dm, card $d cpu-s/GiB, $p% to card" >&2
      mb[$i,$bs]+="$m "
      mach[$i,$bs]+="$c "
      dmn[$i,$bs]+="$dm "
      card[$i,$bs]+="$d "
      pct[$i,$bs]+="$p "
      rm -f "$work/m$i/f$bs"
      sleep 0.5
    done
  done
  for ((i = 0; i < n; i++)); do "$q" umount "$work/m$i"; done
done

printf '%-8s | %-31s | %7s | %6s | %-21s | %7s | %8s\n' "" "" "" "busy" "daemon cpu-s/GiB" "" ""
printf '%-8s | %-31s | %7s | %6s | %6s %6s %7s | %7s | %8s\n' "write bs" accel "MB/s" "/GiB" all card host "to card" "off host"
for bs in "${bss[@]}"; do
  base=""
  for ((i = 0; i < n; i++)); do
    m=$(med "${mb[$i,$bs]}"); c=$(med "${mach[$i,$bs]}"); dm=$(med "${dmn[$i,$bs]}"); d=$(med "${card[$i,$bs]}")
    p=$(med "${pct[$i,$bs]}")
    h=$(awk -v a="$dm" -v d="$d" 'BEGIN { printf "%.3f", a - d }')
    [ "$i" = 0 ] && base=$h
    off=$(awk -v b="$base" -v h="$h" -v d="$d" -v p="$p" \
          'BEGIN { if (d > 0 && p > 0) printf "%.0f%%", 100 * (b - h) / (d * 100 / p); else print "-" }')
    printf '%-8s | %-31s | %7s | %6s | %6s %6s %7s | %6s%% | %8s\n' "$bs" "${targets[$i]}" "$m" "$c" "$dm" "$d" "$h" "$p" "$off"
  done
done
echo "(compression=$compression, size $size, $reps round(s), $(nproc) cores; medians; busy: the whole machine during the job; daemon: the"
echo " qzfs process; card: its compression on the modelled card; host = daemon - card; off host: the share of the"
echo " compression's CPU taken off the host against accel=cpu in the same run)"
