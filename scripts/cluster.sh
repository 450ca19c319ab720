#!/usr/bin/env bash
# A GlusterFS volume whose bricks are qzfs mounts, on this machine, in a private network namespace.
#
#   scripts/cluster.sh [OPTIONS] up|down|status|stop|start|bench|recover BRICK [--resync]|gluster ARGS...
#
#   -n N        bricks (default 2)
#   -t TYPE     distribute | replica2 | replica3 | disperse (N >= 3, redundancy 1); default replica2
#   -b DIR      build directory holding the qzfs binary (default: build/ of this repository)
#   -w DIR      work directory: everything `up` makes lives under it (default: /tmp/qzfs-cluster)
#   -s NS       network namespace name (default: qzfs-cluster)
#   -a ADDR     the namespace's address, on a dummy (or veth) interface in it (default: 10.213.0.1, /24)
#   -V VOL      volume name (default: qzvol)
#   -o OPTS     qzfs mount options for the bricks (allow_other is always added; default: compression=gzip)
#   -m MIB      bench: MiB of SAM text to write (default 256)
#
# up       N backing directories and N qzfs mounts (WORK/backing/bI, WORK/qzfs/bI, brick
#          WORK/qzfs/bI/brick), the namespace NS with an interface holding ADDR, glusterd in
#          it (state, run and log directories under WORK/glusterd), the volume over ADDR:bricks,
#          started, and mounted with the glusterfs client at WORK/mnt.
# status   the volume's status and heal info, and `qzfs stats` of every brick.
# stop     unmounts the client, stops the volume, unmounts the qzfs bricks (data and glusterd
#          stay: `qzfs check WORK/backing/bI` can run now).
# start    mounts the bricks' qzfs that are not mounted, starts the volume, mounts the client.
# gluster ARGS...   the gluster CLI, in the namespace, talking to this cluster's glusterd.
# recover  BRICK [--resync] (1..N or bI): after the brick's qzfs daemon died: stop the brick
#          process, lazy unmount, remount, `volume start VOL force`, heal, wait until nothing is
#          left to heal. --resync instead empties the brick (reset-brick) and heals it in full from
#          the others: needed when writes that were not fsynced may have been in flight
#          (docs/CLUSTER.md "When a brick's qzfs daemon dies").
# bench    up (if not up), then a second volume of the same type over plain directories on the
#          same file system as the backing directories; the same SAM text written to each and
#          read back cold: MB/s, CPU-s per GiB (whole machine, /proc/stat), bytes stored (du).
# down     unmounts and deletes exactly what up (and bench) made, from the state file WORK/state.
#
# Network: nothing leaves the namespace. glusterd, the bricks, the self-heal daemon and the
# client all run in it (`nsenter --net`, which unlike `ip netns exec` keeps the host's mount
# namespace, so the client mount is visible to the host and brick processes see qzfs remounts).
set -euo pipefail

nbricks=2 vtype=replica2 build=$(dirname "$0")/../build work=/tmp/qzfs-cluster ns=qzfs-cluster addr=10.213.0.1
vol=qzvol qopts=compression=gzip bench_mib=256
while getopts "n:t:b:w:s:a:V:o:m:h" opt; do
  case $opt in
    n) nbricks=$OPTARG ;; t) vtype=$OPTARG ;; b) build=$OPTARG ;; w) work=$OPTARG ;;
    s) ns=$OPTARG ;; a) addr=$OPTARG ;; V) vol=$OPTARG ;; o) qopts=$OPTARG ;; m) bench_mib=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "cluster: see $0 -h" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
cmd=${1:-}
# A cluster that is up keeps its settings: status, recover, bench and down read them back.
if [ -f "$work/state" ]; then
  read -r _ saved < <(grep '^opts ' "$work/state")
  for kv in $saved; do
    case ${kv%%=*} in
      nbricks) nbricks=${kv#*=} ;; vtype) vtype=${kv#*=} ;; ns) ns=${kv#*=} ;;
      addr) addr=${kv#*=} ;; vol) vol=${kv#*=} ;; qopts) qopts=${kv#*=} ;;
    esac
  done
fi
[ -n "$cmd" ] || { echo "cluster: up|down|status|stop|start|bench|recover BRICK|gluster ARGS (see -h)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "cluster: needs root (network namespace, glusterd, trusted.* xattrs)" >&2; exit 2; }

work=$(realpath -m "$work")
qzfs=$(realpath -m "$build/qzfs")
gd=$work/glusterd
state=$work/state
sock=$gd/run/glusterd.socket

say() { echo "cluster: $*"; }
# Prints a command, then runs it.
step() { echo "+ $*"; "$@"; }
innet() { nsenter --net="/run/netns/$ns" "$@"; }
gl() { innet gluster --mode=script --glusterd-sock="$sock" --log-file="$gd/log/cli.log" "$@"; }
# `gluster volume heal VOL info` does not pass --glusterd-sock on to glfsheal (10.3): call it.
glfsheal() {
  local g
  for g in /usr/lib/x86_64-linux-gnu/glusterfs/glfsheal /usr/libexec/glusterfs/glfsheal /usr/lib/glusterfs/glfsheal; do
    [ -x "$g" ] && { innet "$g" "$@" glusterd-sock "$sock"; return; }
  done
  echo "cluster: glfsheal not found" >&2; return 1
}
record() { echo "$*" >> "$state"; }

case $vtype in
  distribute) layout=() ;;
  replica2) layout=(replica 2) ;;
  replica3) layout=(replica 3) ;;
  disperse) layout=(disperse "$nbricks" redundancy 1) ;;
  *) echo "cluster: unknown volume type $vtype" >&2; exit 2 ;;
esac

need_tools() {
  local t missing=()
  for t in glusterd gluster mount.glusterfs ip nsenter fusermount3; do
    command -v "$t" >/dev/null || missing+=("$t")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "cluster: missing ${missing[*]} (scripts/setup.sh installs glusterfs-server glusterfs-client iproute2)" >&2
    exit 3
  fi
  [ -x "$qzfs" ] || { echo "cluster: no qzfs binary at $qzfs (-b BUILD_DIR)" >&2; exit 3; }
}

qzfs_mounted() { findmnt -n -t fuse.qzfs --mountpoint "$1" >/dev/null 2>&1; }
any_mounted() { findmnt -n --mountpoint "$1" >/dev/null 2>&1; }
brick_path() { echo "$work/qzfs/b$1/brick"; }
qzfs_mount() {  # I
  step "$qzfs" mount -o "allow_other,$qopts" "$work/backing/b$1" "$work/qzfs/b$1"
}
# The number of entries `heal info` lists, summed over bricks.
heal_pending() {
  glfsheal "$1" 2>/dev/null | awk '/^Number of entries:/ { n += $4 } /^Status: / && !/Connected/ { n += 1000000 } END { print n + 0 }'
}

start_netns() {
  if ip netns list | grep -qw "$ns"; then
    echo "cluster: network namespace $ns exists already (another cluster? -s NS)" >&2; exit 1
  fi
  step ip netns add "$ns"; record "netns $ns"
  step ip -n "$ns" link set lo up
  # A dummy interface; where the kernel has no dummy driver, a veth pair with both ends in NS.
  if ! step ip -n "$ns" link add qzfs0 type dummy 2>/dev/null; then
    step ip -n "$ns" link add qzfs0 type veth peer name qzfs1
    step ip -n "$ns" link set qzfs1 up
  fi
  step ip -n "$ns" addr add "$addr/24" dev qzfs0
  step ip -n "$ns" link set qzfs0 up
}

start_glusterd() {
  mkdir -p "$gd/lib" "$gd/run" "$gd/log"
  cat > "$gd/glusterd.vol" <<EOF
volume management
    type mgmt/glusterd
    option working-directory $gd/lib
    option run-directory $gd/run
    option glusterd-sockfile $sock
    option transport-type socket
    option transport.socket.listen-port 24007
    option transport.socket.keepalive-time 10
    option transport.socket.keepalive-interval 2
    option transport.socket.read-fail-log off
    option ping-timeout 0
    option event-threads 1
    option max-port 60999
end-volume
EOF
  # glusterd's children put logs and sockets in fixed places whatever the volfile says: note what
  # is there now, so that down removes only what this cluster added.
  find /var/log/glusterfs /var/run/gluster -mindepth 1 2>/dev/null | sort > "$gd/preexisting" || true
  record "sysfiles $gd/preexisting"
  say "glusterd in $ns, state in $gd (private volfile, working and run directories, log)"
  step innet glusterd -f "$gd/glusterd.vol" -p "$gd/glusterd.pid" -l "$gd/log/glusterd.log" \
    --xlator-option "*.logdir=$gd/log"
  record "glusterd $gd/glusterd.pid"
  local i
  for i in $(seq 100); do gl pool list >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "cluster: glusterd did not answer within 10 s; see $gd/log/glusterd.log" >&2; exit 1
}

# VOL PATH...: creates and starts VOL over ADDR:PATH..., with the layout chosen by -t.
make_volume() {
  local v=$1 p bricks=(); shift
  for p in "$@"; do bricks+=("$addr:$p"); done
  # force: bricks on the root file system (plain bench bricks) need it; qzfs bricks do not.
  step gl volume create "$v" "${layout[@]}" transport tcp "${bricks[@]}" force
  record "volume $v"
  # A brick whose file system died must stop soon (posix health check; default 30 s).
  step gl volume set "$v" storage.health-check-interval 5
  step gl volume start "$v"
}

client_mount() {  # VOL MNT
  mkdir -p "$2"
  step innet mount -t glusterfs -o "log-file=$gd/log/client-$1.log" "$addr:/$1" "$2"
  record "client $2"
  any_mounted "$2" || { echo "cluster: the client mount $2 is not visible to the host" >&2; exit 1; }
}

cmd_up() {
  need_tools
  [ ! -e "$state" ] || { echo "cluster: $state exists: already up (down first)" >&2; exit 1; }
  if [ "$vtype" = disperse ] && [ "$nbricks" -lt 3 ]; then echo "cluster: disperse needs -n 3 or more" >&2; exit 2; fi
  mkdir -p "$work"
  : > "$state"
  record "opts nbricks=$nbricks vtype=$vtype ns=$ns addr=$addr vol=$vol qopts=$qopts"
  local i paths=()
  for i in $(seq "$nbricks"); do
    mkdir -p "$work/backing/b$i" "$work/qzfs/b$i"
    say "brick $i: qzfs mount of $work/backing/b$i"
    qzfs_mount "$i"; record "qzfs $work/qzfs/b$i"
    step mkdir -p "$(brick_path "$i")"
    paths+=("$(brick_path "$i")")
  done
  start_netns
  start_glusterd
  make_volume "$vol" "${paths[@]}"
  client_mount "$vol" "$work/mnt"
  say "up: volume $vol ($vtype, $nbricks qzfs bricks) mounted at $work/mnt"
}

cmd_status() {
  [ -e "$state" ] || { echo "cluster: not up ($state missing)" >&2; exit 1; }
  step gl volume status "$vol" || true
  if [ "$vtype" != distribute ]; then echo "+ glfsheal $vol info-summary"; glfsheal "$vol" info-summary || true; fi
  local m
  for m in "$work"/qzfs/b*; do
    if qzfs_mounted "$m"; then step "$qzfs" stats "$m" || true; else say "$m: qzfs NOT mounted"; fi
  done
}

# The pid of the brick process serving PATH, from `volume status` (N/A when down).
brick_pid() {
  gl volume status "$vol" "$addr:$1" --xml 2>/dev/null | sed -n 's:.*<pid>\([0-9]*\)</pid>.*:\1:p' | head -1
}

cmd_recover() {
  local b=${1:-} resync=0
  if [ "${2:-}" = --resync ]; then resync=1; fi
  if [ "$resync" = 1 ] && [ "$vtype" = distribute ]; then
    echo "cluster: --resync needs replicas or redundancy to heal from" >&2; exit 2
  fi
  b=${b#b}
  # (no stat of the mount point: a dead FUSE mount answers ENOTCONN)
  if ! [[ $b =~ ^[0-9]+$ ]] || [ "$b" -lt 1 ] || [ "$b" -gt "$nbricks" ]; then
    echo "cluster: recover BRICK [--resync] (BRICK: 1..N or bI)" >&2; exit 2
  fi
  local m=$work/qzfs/b$b pid
  pid=$(brick_pid "$(brick_path "$b")")
  if [ -n "$pid" ] && [ "$pid" != -1 ] && kill -0 "$pid" 2>/dev/null; then
    say "brick $b: its process $pid still holds the dead mount: stopping it"
    step kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  if any_mounted "$m"; then step fusermount3 -u -z "$m"; fi
  qzfs_mount "$b"
  [ -d "$(brick_path "$b")" ] || { echo "cluster: $(brick_path "$b") missing after the remount" >&2; exit 1; }
  if [ "$resync" = 0 ]; then step gl volume start "$vol" force; fi
  if [ "$vtype" = distribute ]; then say "recovered brick $b"; return 0; fi
  local i n heal=()
  if [ "$resync" = 1 ]; then
    # Writes the dead daemon acknowledged but had not committed are gone from this brick and no
    # AFR mark says so: empty the brick and let the other bricks fill it again (a full heal).
    local bp
    bp=$addr:$(brick_path "$b")
    say "brick $b: resync: emptying it, the other bricks heal it in full"
    step gl volume reset-brick "$vol" "$bp" start
    step rm -rf "$(brick_path "$b")"
    step mkdir "$(brick_path "$b")"
    step gl volume reset-brick "$vol" "$bp" "$bp" commit force
    heal=(full)
  fi
  # The self-heal daemon takes a moment to connect to the restarted brick.
  for i in $(seq 30); do
    step gl volume heal "$vol" "${heal[@]}" && break
    [ "$i" -lt 30 ] || { echo "cluster: heal could not be launched" >&2; exit 1; }
    sleep 1
  done
  # A full heal's crawl may not have listed anything yet: ask for three empty answers in a row.
  local zeros=0 want=1
  [ "$resync" = 0 ] || want=3
  for i in $(seq 120); do
    n=$(heal_pending "$vol")
    if [ "$n" -eq 0 ]; then zeros=$((zeros + 1)); else zeros=0; fi
    [ "$zeros" -ge "$want" ] && { say "recovered brick $b: nothing left to heal"; return 0; }
    [ $((i % 10)) -eq 1 ] && say "heal: $n entries pending"
    sleep 1
  done
  echo "cluster: $n entries still pending heal after 120 s (gluster volume heal $vol info)" >&2
  exit 1
}

cmd_down() {
  [ -e "$state" ] || { say "nothing to do ($state missing)"; return 0; }
  local kind what lines=() i
  mapfile -t lines < "$state"
  # Undo in reverse order.
  for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
    read -r kind what <<< "${lines[i]}"
    case $kind in
      client)
        if any_mounted "$what"; then step umount "$what" || step umount -l "$what"; fi ;;
      volume)
        if gl volume info "$what" >/dev/null 2>&1; then
          step gl volume stop "$what" || true
          step gl volume delete "$what" || true
        fi ;;
      glusterd)
        if [ -e "$what" ]; then
          local pid; pid=$(cat "$what")
          if kill -0 "$pid" 2>/dev/null; then step kill "$pid"; fi
          for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        # Brick and self-heal processes that outlived the volume stop: only those with our paths.
        local p
        for p in $(pgrep -f "glusterfs.*$gd/" || true); do step kill "$p" || true; done ;;
      netns)
        if ip netns list | grep -qw "$what"; then step ip netns del "$what"; fi ;;
      qzfs)
        if any_mounted "$what"; then
          step "$qzfs" umount "$what" || step fusermount3 -u -z "$what"
        fi ;;
      sysfiles)
        [ -f "$what" ] || continue
        local f
        find /var/log/glusterfs /var/run/gluster -mindepth 1 2>/dev/null | sort | comm -13 "$what" - | sort -r |
          while read -r f; do echo "+ rm -rf $f"; rm -rf "$f"; done ;;
      plain|opts) ;;
    esac
  done
  step rm -rf "$work/mnt" "$work/mnt-plain" "$work/plain" "$work/backing" "$work/qzfs" "$gd" "$work/data"
  rm -f "$state"
  rmdir "$work" 2>/dev/null || true
  say "down"
}

# bench ------------------------------------------------------------------------------------------

busy() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }  # user nice system irq softirq
hz=$(getconf CLK_TCK)
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# SAM-like text: the repository's corpus/sam/reads.sam when present, else generated reads.
make_sam() {  # FILE MIB
  local src
  src=$(cd "$(dirname "$0")/.." && pwd)/corpus/sam/reads.sam
  if [ -f "$src" ]; then
    say "bench data: $2 MiB from $src"
    while [ "$(stat -c %s "$1" 2>/dev/null || echo 0)" -lt $(($2 << 20)) ]; do cat "$src" >> "$1"; done
    truncate -s "$(($2 << 20))" "$1"
    return
  fi
  say "bench data: $2 MiB of generated SAM text (no corpus/sam/ in the repository)"
  python3 - "$1" "$2" <<'EOF'
import random, sys
random.seed(7)
out, total = open(sys.argv[1], "w"), int(sys.argv[2]) << 20
ref = "".join(random.choice("ACGT") for _ in range(48502))
out.write("@HD\tVN:1.6\tSO:unsorted\n@SQ\tSN:gi|9626243|ref|NC_001416.1|\tLN:48502\n")
n, written = 0, 0
while written < total:
    pos = random.randrange(0, 48502 - 150)
    seq = list(ref[pos:pos + 150])
    for _ in range(random.randrange(0, 4)):
        seq[random.randrange(150)] = random.choice("ACGT")
    qual = "".join(chr(33 + max(2, min(41, int(random.gauss(34, 5))))) for _ in range(150))
    line = "r%d\t%d\tgi|9626243|ref|NC_001416.1|\t%d\t60\t150M\t=\t%d\t%d\t%s\t%s\tNM:i:%d\tMD:Z:150\n" % (
        n, random.choice((99, 147, 83, 163)), pos + 1, pos + 200, 350, "".join(seq), qual, random.randrange(4))
    out.write(line); written += len(line); n += 1
EOF
  truncate -s "$(($2 << 20))" "$1"
}

# MNT SRC BACKING...: writes SRC (fsync at the end) and reads it back cold (caches dropped, the
# whole machine's); sets row to: bytes write-seconds write-busy-ticks read-seconds read-busy-ticks stored.
bench_one() {
  local mnt=$1 src=$2; shift 2
  local bytes b0 b1 s e wr_s wr_b rd_s rd_b stored
  bytes=$(stat -c %s "$src")
  drop
  b0=$(busy); s=$(date +%s.%N)
  dd if="$src" of="$mnt/reads.sam" bs=1M conv=fsync status=none
  e=$(date +%s.%N); b1=$(busy)
  wr_s=$(awk -v a="$s" -v b="$e" 'BEGIN { print b - a }'); wr_b=$((b1 - b0))
  stored=$(du -s -B1 "$@" | awk '{ t += $1 } END { print t }')
  drop
  b0=$(busy); s=$(date +%s.%N)
  cmp "$src" "$mnt/reads.sam"
  e=$(date +%s.%N); b1=$(busy)
  rd_s=$(awk -v a="$s" -v b="$e" 'BEGIN { print b - a }'); rd_b=$((b1 - b0))
  row="$bytes $wr_s $wr_b $rd_s $rd_b $stored"
}

cmd_bench() {
  need_tools
  [ -e "$state" ] || cmd_up
  local i paths=()
  for i in $(seq "$nbricks"); do
    step mkdir -p "$work/plain/b$i/brick"; paths+=("$work/plain/b$i/brick")
  done
  record "plain $work/plain"
  make_volume "$vol-plain" "${paths[@]}"
  client_mount "$vol-plain" "$work/mnt-plain"
  mkdir -p "$work/data"
  make_sam "$work/data/reads.sam" "$bench_mib"
  say "bench: $bench_mib MiB, $vtype over $nbricks bricks, on $(findmnt -n -o FSTYPE,SOURCE --target "$work/backing" | tr -s ' ')"
  local q=() p=() plain qz
  for i in $(seq "$nbricks"); do q+=("$work/backing/b$i"); p+=("$work/plain/b$i"); done
  say "writing and reading through $work/mnt-plain (plain-directory bricks)"
  bench_one "$work/mnt-plain" "$work/data/reads.sam" "${p[@]}"; plain=$row
  say "writing and reading through $work/mnt (qzfs bricks, $qopts)"
  bench_one "$work/mnt" "$work/data/reads.sam" "${q[@]}"; qz=$row
  awk -v p="$plain" -v q="$qz" -v hz="$hz" -v opts="$qopts" 'BEGIN {
    split(p, a, " "); split(q, b, " ")
    printf "%-32s %10s %10s %10s %10s %14s\n", "bricks", "write MB/s", "CPU-s/GiB", "read MB/s", "CPU-s/GiB", "stored bytes"
    row("plain directories", a); row("qzfs (" opts ")", b)
    printf "%-32s %10.2f %10.2f %10.2f %10.2f %14.3f\n", "qzfs / plain", \
      (b[1] / b[2]) / (a[1] / a[2]), (b[3] / b[1]) / (a[3] / a[1]), (b[1] / b[4]) / (a[1] / a[4]), (b[5] / b[1]) / (a[5] / a[1]), b[6] / a[6]
  }
  function row(l, r,   g) {
    g = r[1] / 2^30
    printf "%-32s %10.0f %10.2f %10.0f %10.2f %14d\n", l, r[1] / r[2] / 1e6, r[3] / hz / g, r[1] / r[4] / 1e6, r[5] / hz / g, r[6]
  }'
  say "(MB/s and CPU-s per GiB of data written to the volume; CPU: the whole machine's busy time; stored: du of all bricks' backing directories, every replica)"
}

cmd_stop() {
  [ -e "$state" ] || { echo "cluster: not up ($state missing)" >&2; exit 1; }
  local m
  if any_mounted "$work/mnt"; then step umount "$work/mnt"; fi
  step gl volume stop "$vol" || true
  for m in "$work"/qzfs/b*; do
    if any_mounted "$m"; then step "$qzfs" umount "$m"; fi
  done
  say "stopped: volume $vol, bricks unmounted; glusterd still runs (start, or down)"
}

cmd_start() {
  [ -e "$state" ] || { echo "cluster: not up ($state missing)" >&2; exit 1; }
  local i
  for i in $(seq "$nbricks"); do
    qzfs_mounted "$work/qzfs/b$i" || qzfs_mount "$i"
  done
  step gl volume start "$vol" force
  if ! any_mounted "$work/mnt"; then client_mount "$vol" "$work/mnt"; fi
  say "started: volume $vol mounted at $work/mnt"
}

case $cmd in
  up) cmd_up ;;
  stop) cmd_stop ;;
  start) cmd_start ;;
  gluster) shift; [ -e "$state" ] || { echo "cluster: not up" >&2; exit 1; }; gl "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  recover) shift; cmd_recover "${1:-}" "${2:-}" ;;
  bench) cmd_bench ;;
  *) echo "cluster: unknown command $cmd" >&2; exit 2 ;;
esac
