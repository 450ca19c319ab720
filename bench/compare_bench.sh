#!/usr/bin/env bash
# Writing SAM + FASTQ reads into qzfs and into the file systems people would otherwise turn
# compression on in, on the same data in the same run (docs/BENCHMARKS.md "Against btrfs and ZFS"):
#   bench/compare_bench.sh BUILD_DIR [COPIES=6]
# The data: corpus/sam/reads.{sam,fq} copied COPIES times (6: 846 MB). Every file system sits on
# a file-backed loop device (or, for zfs-fuse, a file vdev) in /var/tmp, so all see the same disk.
# Each copy is `cp` of every file then an fsync of each (for qzfs, sync(1) never reaches the
# daemon; for the others, fsync is what an application that cares does). CPU is the whole
# machine's busy time during the copy (kernel threads compress for btrfs, a daemon for zfs-fuse
# and qzfs), per GiB. Ratio: logical bytes / the space the file system says it used for them.
# Needs root; installs btrfs-progs and zfs-fuse (Debian) when missing.
set -euo pipefail
build=${1:?usage: compare_bench.sh BUILD_DIR [COPIES]}
copies=${2:-6}
q=$(realpath "$build/qzfs")
src=(corpus/sam/reads.sam corpus/sam/reads.fq)
for p in btrfs-progs zfs-fuse; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" > /dev/null
done
pgrep -x zfs-fuse > /dev/null || { zfs-fuse; sleep 1; }
work=$(mktemp -d /var/tmp/qzfs-compare.XXXXXX)
cleanup() {
  "$q" umount "$work/qzfs" 2>/dev/null || true
  zfs umount qzcmp 2>/dev/null || true
  zpool destroy -f qzcmp 2>/dev/null || true
  for m in "$work"/m-*; do umount "$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
bytes=0
for f in "${src[@]}"; do bytes=$((bytes + $(stat -c %s "$f"))); done
bytes=$((bytes * copies))
hz=$(getconf CLK_TCK)
busy() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
used() { df -B1 --output=used "$1" | tail -1; }
calc() { awk "BEGIN { print $1 }"; }
# fsync of each file (coreutils sync with file names; a python start would add ~80 ms to every copy)
fsync_all() { sync "$@"; }
# copy DIR: "seconds cpu-seconds"
copy() {
  local dir=$1 s e b0 b1 out=()
  sync; echo 3 > /proc/sys/vm/drop_caches
  cat "${src[@]}" > /dev/null
  b0=$(busy); s=$(date +%s.%N)
  for ((i = 0; i < copies; i++)); do
    for f in "${src[@]}"; do cp "$f" "$dir/$i-$(basename "$f")"; out+=("$dir/$i-$(basename "$f")"); done
  done
  fsync_all "${out[@]}"
  e=$(date +%s.%N); b1=$(busy)
  echo "$(calc "$e - $s") $(calc "($b1 - $b0) / $hz")"
}
loopfs() {  # NAME MKFS-COMMAND... : a loop-mounted file system at $work/m-NAME
  local name=$1; shift
  truncate -s 4G "$work/$name.img"
  "$@" "$work/$name.img" > /dev/null 2>&1
  mkdir -p "$work/m-$name"
}
declare -A mbs ratio cpu
report() {  # NAME SECONDS CPU STORED
  mbs[$1]=$(calc "$bytes / 1e6 / $2")
  cpu[$1]=$(calc "$3 / ($bytes / 1073741824)")
  ratio[$1]=$(calc "$bytes / $4")
}
order=()

loopfs ext4 mkfs.ext4 -q -F
mount -o loop "$work/ext4.img" "$work/m-ext4"
u0=$(used "$work/m-ext4"); read -r t c <<< "$(copy "$work/m-ext4")"; sync
report ext4 "$t" "$c" $(( $(used "$work/m-ext4") - u0 )); order+=(ext4)

for comp in zlib:3 zstd:1; do
  name="btrfs-${comp/:/-}"
  loopfs "$name" mkfs.btrfs -f
  mount -o loop,compress="$comp" "$work/$name.img" "$work/m-$name"
  u0=$(used "$work/m-$name"); read -r t c <<< "$(copy "$work/m-$name")"; sync
  report "$name" "$t" "$c" $(( $(used "$work/m-$name") - u0 )); order+=("$name")
done

truncate -s 4G "$work/zfs.img"
zpool create -f -m "$work/m-zfs" qzcmp "$work/zfs.img" > /dev/null 2>&1
zfs set compression=gzip-6 qzcmp
u0=$(zfs get -Hp -o value used qzcmp); read -r t c <<< "$(copy "$work/m-zfs")"; sync
report "zfs-fuse-gzip-6" "$t" "$c" $(( $(zfs get -Hp -o value used qzcmp) - u0 )); order+=(zfs-fuse-gzip-6)
zfs umount qzcmp || true
for i in 1 2 3 4 5 6 7 8 9 10; do zpool destroy -f qzcmp 2>/dev/null && break; sleep 1; done  # busy for a moment after umount

loopfs qz mkfs.ext4 -q -F
mount -o loop "$work/qz.img" "$work/m-qz"
for pol in gzip zstd-1; do
  mkdir -p "$work/m-qz/$pol" "$work/qzfs"
  "$q" mount -o compression="$pol" "$work/m-qz/$pol" "$work/qzfs"
  read -r t c <<< "$(copy "$work/qzfs")"
  "$q" umount "$work/qzfs"
  report "qzfs-$pol" "$t" "$c" "$(du -sb "$work/m-qz/$pol" | cut -f1)"; order+=("qzfs-$pol")
  sleep 0.5
done

printf '%-18s %9s %8s %7s %10s %14s\n' target 'MB/s' 'x ext4' ratio 'cpu-s/GiB' 'cpu x btrfs-zlib'
for n in "${order[@]}"; do
  printf '%-18s %9.1f %8.2f %7.2f %10.2f %14.2f\n' "$n" "${mbs[$n]}" "$(calc "${mbs[$n]} / ${mbs[ext4]}")" \
    "${ratio[$n]}" "${cpu[$n]}" "$(calc "${cpu[$n]} / ${cpu[btrfs-zlib-3]}")"
done
echo "data: ${src[*]} x $copies ($((bytes / 1000000)) MB); every file system on a loop device (zfs-fuse: a file vdev) in /var/tmp; $(nproc) cores"
