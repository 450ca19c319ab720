#!/usr/bin/env bash
# fio through `qzfs mount` against the backing file system without FUSE and against qzfs with
# compression off (the FUSE cost alone), in the same run (docs/BENCHMARKS.md "fio"):
#   bench/fio_bench.sh BUILD_DIR [SIZE=512M] [POLICY=gzip] [REPS=3]
# Buffers are 50% compressible (buffer_compress_percentage=50, as in QZFS's FIO runs), except the
# "incompressible" job (0%). Writes end with an fsync (end_fsync=1; sync(1) never reaches a FUSE
# daemon); reads start from cold caches. CPU is the whole machine's busy time during the job
# (fio, kernel, daemon), per GiB moved. Ratio: logical / allocated bytes of the job's file.
# "engine" is `qzfs bench --policy POLICY` on the same file (the engine alone, all cores); the
# targets are POLICY >= 0.8 x min(off, engine) for compressible writes, >= 0.9 x off for the
# incompressible one. Each cell is the median of REPS rounds, the ratios the median of each
# round's ratio; within a round the targets take turns per job.
set -euo pipefail
build=${1:?usage: fio_bench.sh BUILD_DIR [SIZE] [POLICY] [REPS]}
size=${2:-512M}
pol=${3:-gzip}
reps=${4:-3}
q=$(realpath "$build/qzfs")
[ "$pol" != off ] || { echo "fio_bench: POLICY must compress (off is always measured)" >&2; exit 2; }
command -v fio > /dev/null || { echo "fio_bench: fio is missing (scripts/setup.sh installs it)" >&2; exit 1; }
# QZFS_BENCH_DIR: where the backing directories go (default /var/tmp, on disk; /dev/shm takes the
# disk out and leaves the CPU path).
work=$(mktemp -d "${QZFS_BENCH_DIR:-/var/tmp}/qzfs-fio-bench.XXXXXX")
hz=$(getconf CLK_TCK)
busy() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }  # user nice system irq softirq (no steal)
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

# job NAME RW BS PCT FILE: one fio job; prints "MB/s cpu-s/GiB"
job() {
  local name=$1 rw=$2 bs=$3 pct=$4 file=$5 extra=() b0 b1 out
  case $rw in *write) extra=(--end_fsync=1 --buffer_compress_percentage="$pct" --refill_buffers) ;; *) drop ;; esac
  b0=$(busy)
  out=$(fio --name="$name" --filename="$file" --rw="$rw" --bs="$bs" --size="$size" --ioengine=psync \
            --randseed=1 --output-format=json "${extra[@]}")
  b1=$(busy)
  python3 - "$out" "$b0" "$b1" "$hz" <<'PY'
import json, sys
j = json.loads(sys.argv[1][sys.argv[1].index('{'):])['jobs'][0]
d = j['write'] if j['write']['io_bytes'] > 0 else j['read']
gib = d['io_bytes'] / 2**30
cpu = (float(sys.argv[3]) - float(sys.argv[2])) / float(sys.argv[4])
print(f"{d['bw_bytes'] / 1e6:.1f} {cpu / gib:.2f}")
PY
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

jobs=("seq-write-1M write 1M 50 s1m"
      "seq-write-128k write 128k 50 s128k"
      "rand-write-128k randwrite 128k 50 r128k"
      "incompressible-1M write 1M 0 rnd"
      "seq-read-1M read 1M - s1m"
      "seq-read-128k read 128k - s128k"
      "rand-read-128k randread 128k - r128k")
# Run order: each file is read back right after it is written and then deleted, so that little
# memory is in use at any time (see below).
run=("seq-write-1M" "seq-read-1M" "rm s1m" "seq-write-128k" "seq-read-128k" "rm s128k"
     "rand-write-128k" "rand-read-128k" "rm r128k" "incompressible-1M" "rm rnd")
declare -A spec
for j in "${jobs[@]}"; do spec[${j%% *}]=$j; done
targets=(ext4 off "$pol")
declare -A mb cpu ratio engine
# All three targets stay mounted through a round and every job runs on each of them back to back,
# first target rotating per round: each job meets the same memory state on every target. On a VM
# the first touch of memory the host has taken back costs up to ~1 s/GiB (measured here: a 1 GiB
# fio write on qzfs off fell from 1100 MB/s to 283 once some 8-12 GiB had been allocated), so the
# files are also deleted as soon as they have been read.
trap '"$q" umount "$work/m-off" 2>/dev/null || true; "$q" umount "$work/m-$pol" 2>/dev/null || true; rm -rf "$work"' EXIT
for ((r = 1; r <= reps; r++)); do
  declare -A dir=()
  for t in "${targets[@]}"; do
    rm -rf "$work/b-$t"
    mkdir -p "$work/b-$t"
    dir[$t]="$work/b-$t"
    if [ "$t" != ext4 ]; then
      mkdir -p "$work/m-$t"
      "$q" mount -o compression="$t" "$work/b-$t" "$work/m-$t"
      dir[$t]="$work/m-$t"
    fi
  done
  order=("${targets[@]:$(( (r - 1) % 3 ))}" "${targets[@]:0:$(( (r - 1) % 3 ))}")
  for step in "${run[@]}"; do
    if [[ $step == rm\ * ]]; then
      for t in "${targets[@]}"; do rm -f "${dir[$t]}/${step#rm }"; done
      continue
    fi
    read -r name rw bs pct file <<< "${spec[$step]}"
    for t in "${order[@]}"; do
      read -r m c <<< "$(job "$name" "$rw" "$bs" "$pct" "${dir[$t]}/$file")"
      [ -n "${QZFS_BENCH_VERBOSE:-}" ] && echo "round $r $t $name: $m MB/s, $c cpu-s/GiB" >&2
      mb[$t,$name]+="$m "
      cpu[$t,$name]+="$c "
      if [[ $rw == *write ]]; then
        alloc=$(( $(stat -c %b "$work/b-$t/$file") * 512 ))
        ratio[$t,$name]=$(awk -v l="$(stat -c %s "${dir[$t]}/$file")" -v a="$alloc" 'BEGIN { printf "%.2f", (a > 0 ? l / a : 0) }')
        if [ "$t" = ext4 ] && [ "$r" = 1 ]; then
          engine[$name]=$("$q" bench -q --policy "$pol" --threads "$(nproc)" --json "${dir[$t]}/$file" |
            python3 -c 'import json, sys; j = json.load(sys.stdin); print(round(j["logical_bytes"] / j["wall_s"] / 1e6))')
        fi
      fi
      sleep 0.2
    done
  done
  for t in off "$pol"; do "$q" umount "$work/m-$t"; done
  unset dir
done

med() { tr ' ' '\n' <<< "$1" | grep . | median; }
# paired G O [E]: the median over rounds of G / min(O, E) (E absent: G / O), each round's figures
# measured back to back, so the machine's drift between rounds cancels.
paired() {
  paste -d' ' <(tr ' ' '\n' <<< "$1" | grep .) <(tr ' ' '\n' <<< "$2" | grep .) |
    awk -v e="${3:-0}" '{ m = (e > 0 && e < $2) ? e : $2; printf "%.4f\n", $1 / m }' | median
}
fstype=$(findmnt -n -o FSTYPE --target "$work" 2>/dev/null | head -1)
printf '%-18s | %-16s | %-16s | %-23s | %-7s | %s\n' job "$fstype (no FUSE)" "qzfs off" "qzfs $pol" engine "$pol vs target"
printf '%-18s | %-16s | %-16s | %-23s | %-7s | %s\n' "" "MB/s  cpu-s/GiB" "MB/s  cpu-s/GiB" "MB/s  cpu-s/GiB  ratio" "MB/s" ""
for j in "${jobs[@]}"; do
  read -r name rw _ pct _ <<< "$j"
  e_mb=$(med "${mb[ext4,$name]}"); e_cpu=$(med "${cpu[ext4,$name]}")
  o_mb=$(med "${mb[off,$name]}"); o_cpu=$(med "${cpu[off,$name]}")
  g_mb=$(med "${mb[$pol,$name]}"); g_cpu=$(med "${cpu[$pol,$name]}")
  eng=${engine[$name]:-}
  if [[ $rw == *write && $pct == 0 ]]; then
    vs=$(printf '%.2f x off (target 0.9)' "$(paired "${mb[$pol,$name]}" "${mb[off,$name]}")")
  elif [[ $rw == *write ]]; then
    vs=$(printf '%.2f x min(off, engine) (target 0.8)' "$(paired "${mb[$pol,$name]}" "${mb[off,$name]}" "$eng")")
  else
    vs=$(printf '%.2f x off' "$(paired "${mb[$pol,$name]}" "${mb[off,$name]}")")
  fi
  printf '%-18s | %7s %7s  | %7s %7s  | %7s %7s %6s  | %7s | %s\n' "$name" "$e_mb" "$e_cpu" "$o_mb" "$o_cpu" \
    "$g_mb" "$g_cpu" "${ratio[$pol,$name]:--}" "${eng:--}" "$vs"
done
echo "backing: $fstype under ${QZFS_BENCH_DIR:-/var/tmp}; $(fio --version), $size per job, psync, buffer_compress_percentage=50 (incompressible: 0), median of $reps; $(nproc) cores"
echo "vs target: the median of each round's ratio (gzip and off of one round ran back to back)"
