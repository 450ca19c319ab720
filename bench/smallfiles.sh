#!/usr/bin/env bash
# Small files, metadata and small synchronous writes, on every target in the same run
# (docs/BENCHMARKS.md "Small files and metadata"):
#   bench/smallfiles.sh BUILD_DIR [ROW...]
# Rows (default all): untar create ls rm rsync append sqlite venv pgbench
# Targets: ext4 (a directory of the root file system), fuse (a plain FUSE passthrough over such a
# directory: the cost of FUSE alone; set PASSTHROUGH to libfuse's passthrough_ll binary (it is
# given -o source=), which this repository does not ship; the column is left out without
# it), fuse_hp (libfuse's passthrough_hp, the multi-threaded C++ example, mounted as
# `passthrough_hp -o allow_other SRC MNT` with its defaults; set PASSTHROUGH_HP to the binary, and
# PASSTHROUGH_HP_ARGS to add options such as --nocache, --num-threads N, --direct-io; left out
# without it), qzfs-off (compression=off) and qzfs-gzip. Every mount allows other users
# (PostgreSQL runs as postgres). Each cell is one run; the ratios at the end compare qzfs-gzip with
# fuse_hp (or fuse, when fuse_hp did not run) and with qzfs-off in the same run.
# Environment: TARBALL (default /usr/src/linux-source-6.1.tar.xz, Debian's linux-source-6.1;
# any .tar/.tar.xz/.tar.gz), FILES (create/ls/rm, default 100000), APPEND_SECONDS (default 20),
# PGBENCH_SECONDS (default 30), SQLITE_RUNS (default 5, the median is shown), QZFS_BENCH_DIR (default
# /var/tmp). Needs root.
set -euo pipefail
build=${1:?usage: smallfiles.sh BUILD_DIR [ROW...]}
shift
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(untar create ls rm rsync append sqlite venv pgbench)
q=$(realpath "$build/qzfs")
tarball=${TARBALL:-/usr/src/linux-source-6.1.tar.xz}
files=${FILES:-100000}
append_s=${APPEND_SECONDS:-20}
pg_s=${PGBENCH_SECONDS:-30}
pgbin=/usr/lib/postgresql/15/bin
py=/usr/bin/python3
work=$(mktemp -d "${QZFS_BENCH_DIR:-/var/tmp}/qzfs-smallfiles.XXXXXX")
chmod 755 "$work"
targets=(ext4)
[ -n "${PASSTHROUGH:-}" ] && targets+=(fuse)
[ -n "${PASSTHROUGH_HP:-}" ] && targets+=(fuse_hp)
read -ra hp_args <<< "${PASSTHROUGH_HP_ARGS:-}"
# The FUSE baseline of the ratios: fuse_hp if it runs, else fuse, else none.
fusebase=
[ -n "${PASSTHROUGH:-}" ] && fusebase=fuse
[ -n "${PASSTHROUGH_HP:-}" ] && fusebase=fuse_hp
targets+=(qzfs-off qzfs-gzip)
declare -A cell

cleanup() {
  for t in "${targets[@]}"; do
    [ -d "$work/$t/pg" ] && su postgres -s /bin/sh -c "$pgbin/pg_ctl -D '$work/$t/pg' -m immediate stop" > /dev/null 2>&1 || true
    mountpoint -q "$work/$t" && { fusermount3 -u "$work/$t" 2>/dev/null || umount -l "$work/$t"; }
  done
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { awk "BEGIN { printf \"%.2f\", $2 - $1 }"; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# up T: mount (or make) target T at $work/T; its files live under $work/T.b for the mounts.
up() {
  local t=$1 m=$work/$1
  mkdir -p "$m" "$m.b"
  chmod 755 "$m" "$m.b"
  case $t in
    ext4) ;;
    # (at the hard descriptor limit: libfuse's passthrough_ll keeps a descriptor per inode and
    # does not raise the limit itself, so 1024 would end its untar and 100k-files rows early)
    # (ulimit in braces, not a nested subshell, so that it applies to the exec'd daemon)
    fuse) ( { ulimit -n 1048576 2> /dev/null || ulimit -n "$(ulimit -Hn)"; } && exec "$PASSTHROUGH" -o source="$m.b",allow_other "$m") ;;
    # (passthrough_hp raises its soft limit to the hard one itself; the same 1048576 attempt as
    # for fuse keeps the two columns alike. It always adds default_permissions and daemonizes
    # once mounted, like passthrough_ll. Its pgbench row runs on an instance of its own, run as
    # postgres: row_pgbench says why.)
    fuse_hp) ( { ulimit -n 1048576 2> /dev/null || true; } && exec "$PASSTHROUGH_HP" "${hp_args[@]}" -o allow_other "$m.b" "$m") ;;
    qzfs-off) "$q" mount -o compression=off,allow_other "$m.b" "$m" ;;
    qzfs-gzip) "$q" mount -o compression=gzip,allow_other "$m.b" "$m" ;;
  esac
}
down() {
  local t=$1
  [ "$t" = ext4 ] && return 0
  case $t in
    qzfs-*) "$q" umount "$work/$t" ;;
    *) fusermount3 -u "$work/$t" ;;
  esac
}

# The inputs, on the root file system, made once.
prepare() {
  case $tarball in
    *.xz) xz -dc "$tarball" > "$work/src.tar" ;;
    *.gz) gzip -dc "$tarball" > "$work/src.tar" ;;
    *) cp "$tarball" "$work/src.tar" ;;
  esac
  # rsync's source: a tree of a few thousand entries (the kernel's Documentation), extracted once.
  mkdir -p "$work/rsrc"
  tar -xf "$work/src.tar" -C "$work/rsrc" --wildcards '*/Documentation/*' 2> /dev/null ||
    tar -xf "$work/src.tar" -C "$work/rsrc"  # another tarball: all of it
  echo "inputs: $(tar -tf "$work/src.tar" | wc -l) tar entries ($(du -sh "$work/src.tar" | cut -f1)), rsync tree $(find "$work/rsrc" | wc -l) entries"
}

row_untar() {
  local d=$1/untar t0
  mkdir "$d"
  t0=$(now)
  tar -xf "$work/src.tar" -C "$d"
  sync -f "$d"
  echo "$(secs "$t0" "$(now)") s"
  rm -rf "$d"
}
row_create() {
  local d=$1/many t0
  mkdir "$d"
  t0=$(now)
  (cd "$d" && seq "$files" | xargs touch)
  local s
  s=$(secs "$t0" "$(now)")
  echo "$(awk "BEGIN { printf \"%.0f\", $files / $s }")/s"
}
row_ls() {
  local d=$1/many t0
  drop
  t0=$(now)
  ls -l "$d" > /dev/null
  echo "$(secs "$t0" "$(now)") s"
}
row_rm() {
  local d=$1/many t0
  t0=$(now)
  rm -rf "$d"
  echo "$(secs "$t0" "$(now)") s"
}
row_rsync() {
  local d=$1/rsync t0
  t0=$(now)
  rsync -aHAX "$work/rsrc/" "$d/"
  echo "$(secs "$t0" "$(now)") s"
  rm -rf "$d"
}
# 4 processes append whole lines with O_APPEND for APPEND_SECONDS; every line must be there, whole.
row_append() {
  local f=$1/append.log
  : > "$f"
  "$py" - "$f" "$append_s" << 'EOF'
import os, sys, time, multiprocessing
path, secs = sys.argv[1], float(sys.argv[2])
def writer(i, q):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    line = (b"writer %d line %%09d\n" % i)
    n, end = 0, time.monotonic() + secs
    while True:
        for _ in range(256):
            os.write(fd, line % n)
            n += 1
        if time.monotonic() >= end:
            break
    os.close(fd)
    q.put(n)
q = multiprocessing.Queue()
ps = [multiprocessing.Process(target=writer, args=(i, q)) for i in range(4)]
for p in ps: p.start()
total = sum(q.get() for _ in ps)
for p in ps: p.join()
with open(path, "rb") as f:
    lines = f.read().split(b"\n")
bad = sum(1 for l in lines[:-1] if len(l) != len(b"writer 0 line 000000000"))
if len(lines) - 1 != total or bad or lines[-1] != b"":
    sys.exit(f"append: {total} lines written, {len(lines) - 1} read, {bad} broken")
print(f"{total / 1e6:.2f}M lines")
EOF
  rm -f "$f"
}
# SQLite in WAL mode: 300 transactions of 500 rows, each commit synced (synchronous=FULL).
# SQLite's run is short (about half a second) and noisy: the median of SQLITE_RUNS (default 5).
row_sqlite() {
  local runs=() i
  for ((i = 0; i < ${SQLITE_RUNS:-5}; i++)); do runs+=("$(sqlite_once "$1")"); done
  printf '%s\n' "${runs[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "%.2f s\n", a[int((NR + 1) / 2)] }'
}
sqlite_once() {
  local t0 s
  t0=$(now)
  "$py" - "$1/bench.db" << 'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("pragma journal_mode=wal")
db.execute("pragma synchronous=full")
db.execute("create table t (id integer primary key, name text, value real)")
for c in range(300):
    db.execute("begin")
    db.executemany("insert into t (name, value) values (?, ?)", ((f"row {c} {i}", i * 0.5) for i in range(500)))
    db.execute("commit")
n = db.execute("select count(*) from t").fetchone()[0]
assert n == 150000, n
db.close()
EOF
  s=$(secs "$t0" "$(now)")
  rm -f "$1"/bench.db*
  echo "$s"
}
row_venv() {
  local t0
  t0=$(now)
  "$py" -m venv "$1/venv"
  echo "$(secs "$t0" "$(now)") s"
  rm -rf "$1/venv"
}
# PostgreSQL 15: a cluster on the target, pgbench scale 5, 2 clients for PGBENCH_SECONDS.
row_pgbench() {
  local pg=$1/pg sock=$work/sock-$2 out
  [ -x "$pgbin/pgbench" ] || { echo "n/a (postgresql-15 missing)"; return; }
  if [ "$2" = fuse_hp ]; then
    # passthrough_hp serves every request with its own credentials and forces
    # default_permissions: as root, what postgres creates is root's and postgres is then kept out.
    # So this row gets an instance of its own run as postgres (/dev/fuse opened to it for the
    # mount, as Debian ships it, and closed again).
    local b=$work/hp-pg.b m=$work/hp-pg mode r
    mkdir -p "$b" "$m"
    chown postgres: "$b" "$m"
    mode=$(stat -c %a /dev/fuse)
    chmod 666 /dev/fuse
    su postgres -s /bin/sh -c "'$PASSTHROUGH_HP' ${hp_args[*]} '$b' '$m'"
    chmod "$mode" /dev/fuse
    r=$(row_pgbench "$m" fuse_hp_pg)
    fusermount3 -u "$m" 2> /dev/null || umount -l "$m"
    rm -rf "$b" "$m"
    echo "$r"
    return
  fi
  mkdir -p "$sock"
  chown postgres: "$sock"
  # As postgres: root has no access to the mount passthrough_hp made as postgres (fuse_hp_pg).
  su postgres -s /bin/sh -c "mkdir -p '$pg'" 2> /dev/null || { mkdir -p "$pg" && chown postgres: "$pg"; }
  su postgres -s /bin/sh -c "$pgbin/initdb -D '$pg' -A trust > /dev/null" &&
    su postgres -s /bin/sh -c "$pgbin/pg_ctl -D '$pg' -w -l '$sock/log' -o \"-k $sock -c listen_addresses=''\" start > /dev/null" &&
    su postgres -s /bin/sh -c "$pgbin/pgbench -h '$sock' -i -s 5 -q postgres > /dev/null 2>&1" &&
    out=$(su postgres -s /bin/sh -c "$pgbin/pgbench -h '$sock' -c 2 -T $pg_s postgres 2>&1") || { echo "failed"; return; }
  su postgres -s /bin/sh -c "$pgbin/pg_ctl -D '$pg' -m fast stop > /dev/null"
  echo "$(echo "$out" | awk '/^tps/ { printf "%.0f tps", $3 }')"
  su postgres -s /bin/sh -c "rm -rf '$pg'" 2> /dev/null || rm -rf "$pg"
}

prepare
for t in "${targets[@]}"; do
  up "$t"
  for r in "${rows[@]}"; do
    cell[$r,$t]=$(row_$r "$work/$t" "$t")
    echo "$t $r: ${cell[$r,$t]}" >&2
  done
  down "$t"
done

# The table, then qzfs-gzip's ratios (time ratio: gzip / baseline; rate rows: baseline / gzip,
# so above 1 is always slower than the baseline; "-" when either cell has no figure, e.g.
# "failed").
val() { echo "$1" | awk '{ v = $1; sub(/[^0-9.].*$/, "", v); print v + 0 }'; }
ratio() {  # ROW BASELINE
  local g b
  g=$(val "${cell[$1,qzfs-gzip]}")
  b=$(val "${cell[$1,$2]}")
  case ${cell[$1,qzfs-gzip]} in
    *" s") awk "BEGIN { if ($g > 0 && $b > 0) printf \"%.2fx\", $g / $b; else print \"-\" }" ;;
    *) awk "BEGIN { if ($g > 0 && $b > 0) printf \"%.2fx\", $b / $g; else print \"-\" }" ;;
  esac
}
hdr="| row |"
sep="|---|"
for t in "${targets[@]}"; do hdr+=" $t |"; sep+="---|"; done
[ -n "$fusebase" ] && { hdr+=" gzip vs $fusebase |"; sep+="---|"; }
hdr+=" gzip vs off |"
sep+="---|"
echo "$hdr"
echo "$sep"
for r in "${rows[@]}"; do
  line="| $r |"
  for t in "${targets[@]}"; do line+=" ${cell[$r,$t]} |"; done
  [ -n "$fusebase" ] && line+=" $(ratio "$r" "$fusebase") |"
  line+=" $(ratio "$r" qzfs-off) |"
  echo "$line"
done
