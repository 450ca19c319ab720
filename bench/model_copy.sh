#!/usr/bin/env bash
# A SAM copy through gzip mounts with and without the modelled QAT card, in one run
# (docs/BENCHMARKS.md "Modelled QAT card"):
#   [COMPRESSION=gzip-6] bench/model_copy.sh BUILD_DIR [COPIES=14] [MODEL=model:gbps=24]
# The corpus's SAM (scripts/make-corpus.sh) is written COPIES times into one file (14: ~1 GiB)
# and fsynced, on a fresh mount each: accel=cpu; the model (the mount's full verification); the
# model with accel_verify=crc; the model with faults composed (error=0.1, timeout=0.01,
# garbage=0.05). Each file is then read back with the page cache dropped and compared, and
# `qzfs check` reads every record of the backing directory after the unmount.
# Per GiB: daemon = the qzfs process's CPU, card = the part that stands for the card (its
# compression), host = daemon - card (`qzfs stats --json` process.cpu_s, process.device_cpu_s).
# "to card": the share of the eligible records the card took; "off host": the share of the
# compression's CPU taken off the host against accel=cpu (the compression's CPU is the card's
# scaled to every record); teardowns, probes and jobs redone on the CPU from `qzfs stats`.
set -euo pipefail
build=${1:?usage: model_copy.sh BUILD_DIR [COPIES] [MODEL]}
copies=${2:-14}
model=${3:-model:gbps=24}
compression=${COMPRESSION:-gzip}  # the mounts' policy (gzip is gzip-1)
q=$(realpath "$build/qzfs")
sam=${QZFS_CORPUS:-$(dirname "$0")/../corpus}/sam/reads.sam
[ -f "$sam" ] || { echo "model_copy: $sam is missing (scripts/make-corpus.sh makes it)" >&2; exit 1; }
work=$(mktemp -d "${QZFS_BENCH_DIR:-/var/tmp}/qzfs-model-copy.XXXXXX")
trap '"$q" umount "$work/m" 2> /dev/null || true; rm -rf "$work"' EXIT
targets=(cpu "$model" "$model,accel_verify=crc" "$model+error=0.1+timeout=0.01+garbage=0.05")
stream() { for ((c = 0; c < copies; c++)); do cat "$sam"; done; }

printf '%-52s | %7s | %6s %6s %6s | %7s | %8s | %9s %6s %6s | %s\n' accel "MB/s" daemon card host "to card" "off host" teardowns probes redone "read back, check"
base="" 
for t in "${targets[@]}"; do
  rm -rf "$work/b" && mkdir -p "$work/b" "$work/m"
  "$q" mount -o "compression=$compression,accel=$t" "$work/b" "$work/m"
  s0=$("$q" stats --json "$work/m")
  t0=$(date +%s.%N)
  stream > "$work/m/reads.sam"
  sync "$work/m/reads.sam"
  t1=$(date +%s.%N)
  s1=$("$q" stats --json "$work/m")
  sync && echo 3 > /proc/sys/vm/drop_caches 2> /dev/null || true
  if cmp -s <(stream) "$work/m/reads.sam"; then rb=identical; else rb=DIFFERS; fi
  "$q" umount "$work/m"
  if "$q" check "$work/b" > /dev/null 2>&1; then ck=clean; else ck=DAMAGED; fi
  out=$(python3 - "$t" "$s0" "$s1" "$t0" "$t1" "$base" <<'PY'
import json, sys
t, s0, s1, t0, t1, base = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
gib = (s1['engine']['bytes_in'] - s0['engine']['bytes_in']) / 2**30
r = {k: s1['routing'][k] - s0['routing'].get(k, 0) for k in s1['routing']}
eligible = r['to_accel'] + r['overflow'] + r['not_serving']
pct = 100.0 * r['to_accel'] / eligible if eligible else 0.0
daemon = (s1['process']['cpu_s'] - s0['process']['cpu_s']) / gib
card = (s1['process']['device_cpu_s'] - s0['process']['device_cpu_s']) / gib
host = daemon - card
base = host if not base else float(base)
off = f"{100 * (base - host) / (card * 100 / pct):.0f}%" if card > 0 and pct > 0 else "-"
a = s1['accel']
print(f"{t[:52]:<52} | {gib * 1024 / (t1 - t0):7.1f} | {daemon:6.2f} {card:6.2f} {host:6.2f} | {pct:6.1f}% | {off:>8} | "
      f"{a.get('teardowns', 0):9} {a.get('probes', 0):6} {r['redone']:6} |")
print(base)
PY
)
  base=$(tail -n 1 <<< "$out")
  echo "$(head -n 1 <<< "$out") $rb, $ck"
done
echo "(compression=$compression; $copies copies of $(basename "$sam"), $(( $(stat -c %s "$sam") * copies / 1048576 )) MiB; $(nproc) cores; MB/s are MiB/s;"
echo " daemon, card, host: CPU-s per GiB written; load average $(cut -d' ' -f1-3 /proc/loadavg))"
