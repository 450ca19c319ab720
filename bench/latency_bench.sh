#!/usr/bin/env bash
# Latency of one user's everyday calls while another user works 2^50-byte sparse ranges
# (acceptance: "While one user runs SEEK_DATA, punch and fallocate over 2^50-byte sparse ranges,
# another user's stat, read and write of other files keep a p99 latency under 50 ms").
#   bench/latency_bench.sh [DURATION]        (run as root; DURATION seconds, default 20)
# Environment: QZFS_BIN (default build/qzfs of this repository), QZFS_BENCH_DIR (where the
# backing directory and mount point go, default /tmp), LOAD_UID (default 1000), PROBE_UID
# (default 2000), LIMIT_MS (default 50), PROBE_GAP_MS (pause between probe rounds, default 5),
# QZFS_OPTS (extra mount options).
#
# One mount with allow_other. LOAD_UID makes a sparse file with 4 KiB of data at a few offsets
# up to 2^50 and then, for DURATION seconds, loops: rewrite that data (and fsync), walk the file with
# SEEK_DATA/SEEK_HOLE and seek from random offsets, fallocate PUNCH_HOLE|KEEP_SIZE over
# 2^50-byte ranges and fallocate mode 0 (KEEP_SIZE) over 1 GiB..1 PiB ranges (ENOSPC for the
# ones the backing file system could not hold raw is expected and counted).
# PROBE_UID, on its own files, times each call separately:
#   stat   statx(AT_STATX_FORCE_SYNC): always a GETATTR to the daemon, never the kernel's cache
#   read   4 KiB pread, O_DIRECT (no FUSE page cache: every read reaches the daemon)
#   write  4 KiB pwrite through the page cache (no fsync)
#   fsync  fsync right after that write (reported, not gated)
# It runs twice in the same run: DURATION seconds with LOAD_UID idle (baseline), then DURATION
# seconds with the load running. Prints p50/p99/max per call and phase and loaded/baseline p99.
# Exits 1 when a loaded p99 of stat, read or write exceeds LIMIT_MS, 2 on a setup error or an
# unexpected failure of a probe call.
set -euo pipefail
duration=${1:-${DURATION:-20}}
repo=$(cd "$(dirname "$0")/.." && pwd)
q=${QZFS_BIN:-$repo/build/qzfs}
load_uid=${LOAD_UID:-1000}
probe_uid=${PROBE_UID:-2000}
limit_ms=${LIMIT_MS:-50}
[ "$(id -u)" -eq 0 ] || { echo "latency_bench: run as root" >&2; exit 2; }
[ -x "$q" ] || { echo "latency_bench: no qzfs binary at $q (set QZFS_BIN)" >&2; exit 2; }
command -v setpriv > /dev/null || { echo "latency_bench: needs setpriv (util-linux)" >&2; exit 2; }
q=$(realpath "$q")
work=$(mktemp -d "${QZFS_BENCH_DIR:-/tmp}/qzfs-latency.XXXXXX")
chmod 755 "$work"
mnt=$work/mnt
mounted=0
cleanup() {
  [ -n "${load_pid:-}" ] && kill "$load_pid" 2> /dev/null || true
  if [ "$mounted" = 1 ]; then fusermount3 -u "$mnt" 2> /dev/null || "$q" umount "$mnt" 2> /dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/back" "$mnt" "$work/out"
chown "$probe_uid" "$work/out"  # where the probe writes its figures
chmod 755 "$work/back" "$mnt"
"$q" mount -o "allow_other${QZFS_OPTS:+,$QZFS_OPTS}" "$work/back" "$mnt"
mounted=1
daemon=$(pgrep -f "[q]zfs mount -o allow_other${QZFS_OPTS:+,$QZFS_OPTS} $work/back" | head -1 || true)
mkdir "$mnt/load" "$mnt/probe"
chown "$load_uid:$load_uid" "$mnt/load"
chown "$probe_uid:$probe_uid" "$mnt/probe"
as() {  # UID CMD...
  local u=$1; shift
  setpriv --reuid="$u" --regid="$u" --clear-groups -- "$@"
}

cat > "$work/bench.py" << 'EOF'
import ctypes, ctypes.util, errno, mmap, os, random, sys, time
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
libc.statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
AT_FDCWD, AT_STATX_FORCE_SYNC, STATX_BASIC_STATS = -100, 0x2000, 0x7FF
P50 = 1 << 50
OFFSETS = [0, 1 << 20, 1 << 30, 1 << 40, 1 << 45, P50 - 4096]

def fallocate(fd, mode, off, length):
    if libc.fallocate(fd, mode, off, length) != 0:
        return ctypes.get_errno()
    return 0

def make_sparse(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    for off in OFFSETS:
        os.pwrite(fd, os.urandom(4096), off)
    os.fsync(fd)
    size = os.fstat(fd).st_size
    os.close(fd)
    print("load: %s size %d (2^%.1f), data at %d offsets" % (path, size, size.bit_length() - 1, len(OFFSETS)), flush=True)

def load(path, seconds):
    fd = os.open(path, os.O_RDWR)
    rnd = random.Random(1)
    counts = {}
    def count(what, err):
        key = what + ("" if err == 0 else " " + errno.errorcode.get(err, str(err)))
        counts[key] = counts.get(key, 0) + 1
    end = time.monotonic() + seconds
    block = os.urandom(4096)
    while time.monotonic() < end:
        for off in OFFSETS:                      # data back for SEEK_DATA to find; fsync, as
            os.pwrite(fd, block, off)            # FUSE's lseek does not flush the kernel's
        os.fsync(fd)                             # dirty pages to the daemon first
        off = 0                                  # walk data and holes over the 2^50 bytes
        while True:
            try:
                d = os.lseek(fd, off, os.SEEK_DATA)
                count("seek_data", 0)
            except OSError as e:
                count("seek_data", e.errno)
                break
            off = os.lseek(fd, d, os.SEEK_HOLE)
            count("seek_hole", 0)
        for _ in range(16):                      # from random offsets
            o = rnd.randrange(P50)
            try:
                os.lseek(fd, o, os.SEEK_DATA); count("seek_data", 0)
            except OSError as e:
                count("seek_data", e.errno)
            os.lseek(fd, o, os.SEEK_HOLE); count("seek_hole", 0)
        # punch 2^50-byte ranges: from a random start to past the end, then the whole file
        count("punch", fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, rnd.randrange(1 << 20) * 4096, P50))
        count("punch", fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, P50))
        # fallocate mode 0 (KEEP_SIZE) over large ranges: 1 GiB .. 2^50 bytes
        for shift in (30, 36, 40, 50):
            count("falloc_2^%d" % shift, fallocate(fd, FALLOC_FL_KEEP_SIZE, rnd.randrange(1 << 30) * 4096, 1 << shift))
    os.close(fd)
    print("load ops: " + ", ".join("%s %d" % kv for kv in sorted(counts.items())), flush=True)

def pct(v, p):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100.0 * len(v)))]

def probe(dirpath, seconds, gap_ms, out):
    nfiles, fsize = 8, 8 << 20
    names = [os.path.join(dirpath, "f%d" % i) for i in range(nfiles)]
    if not os.path.exists(names[0]):
        chunk = (b"qzfs latency probe record " * 160)[:4096]
        for n in names:
            fd = os.open(n, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            for i in range(fsize // 4096):
                os.write(fd, chunk[:4000] + os.urandom(96))
            os.fsync(fd)
            os.close(fd)
    rfds = [os.open(n, os.O_RDONLY | os.O_DIRECT) for n in names]
    wfds = [os.open(n, os.O_WRONLY) for n in names]
    buf = mmap.mmap(-1, 4096)
    sbuf = ctypes.create_string_buffer(256)
    wdata = os.urandom(4096)
    rnd = random.Random(2)
    lat = {"stat": [], "read": [], "write": [], "fsync": []}
    errors = 0
    t = time.perf_counter
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        i = rnd.randrange(nfiles)
        p = names[i].encode()
        s = t(); r = libc.statx(AT_FDCWD, p, AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, sbuf); e = t()
        if r != 0: errors += 1
        lat["stat"].append(e - s)
        off = rnd.randrange(fsize // 4096) * 4096
        s = t(); n = os.preadv(rfds[i], [buf], off); e = t()
        if n != 4096: errors += 1
        lat["read"].append(e - s)
        off = rnd.randrange(fsize // 4096) * 4096
        s = t(); n = os.pwrite(wfds[i], wdata, off); e = t()
        if n != 4096: errors += 1
        lat["write"].append(e - s)
        s = t(); os.fsync(wfds[i]); e = t()
        lat["fsync"].append(e - s)
        if gap_ms > 0:
            time.sleep(gap_ms / 1000.0)
    with open(out, "w") as f:
        for k in ("stat", "read", "write", "fsync"):
            v = lat[k]
            f.write("%s %d %.3f %.3f %.3f\n" % (k, len(v), pct(v, 50) * 1e3, pct(v, 99) * 1e3, max(v) * 1e3 if v else float("nan")))
        f.write("errors %d\n" % errors)

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make_sparse":
        make_sparse(sys.argv[2])
    elif cmd == "load":
        load(sys.argv[2], float(sys.argv[3]))
    elif cmd == "probe":
        probe(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
EOF
chmod 755 "$work/bench.py"
# a python3 the other users can run (not one under /root, as pyenv's is)
py=${PYTHON:-/usr/bin/python3}
[ -x "$py" ] || py=$(command -v python3)
gap=${PROBE_GAP_MS:-5}
cores=$(nproc)
echo "latency_bench: qzfs $q, $cores cores, load average $(cut -d' ' -f1-3 /proc/loadavg), ${duration} s per phase, mount $mnt"
as "$load_uid" "$py" "$work/bench.py" make_sparse "$mnt/load/sparse"
# the probe's files are made (and committed) before either phase is timed
as "$probe_uid" "$py" "$work/bench.py" probe "$mnt/probe" 0 0 /dev/null
# phase 1: baseline, LOAD_UID idle
as "$probe_uid" "$py" "$work/bench.py" probe "$mnt/probe" "$duration" "$gap" "$work/out/idle.txt"
# phase 2: LOAD_UID's loop, with the probe started once the load runs
as "$load_uid" "$py" "$work/bench.py" load "$mnt/load/sparse" "$((duration + 2))" &
load_pid=$!
sleep 1
as "$probe_uid" "$py" "$work/bench.py" probe "$mnt/probe" "$duration" "$gap" "$work/out/loaded.txt"
wait "$load_pid"
load_pid=
[ -n "$daemon" ] && echo "daemon $daemon: $(grep -E 'VmHWM' /proc/"$daemon"/status | tr -s ' \t' ' '), threads $(ls /proc/"$daemon"/task | wc -l)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$py" - "$work/out/idle.txt" "$work/out/loaded.txt" "$limit_ms" << 'EOF'
import sys
def rd(p):
    d = {}
    for line in open(p):
        f = line.split()
        d[f[0]] = f[1:]
    return d
idle, loaded, limit = rd(sys.argv[1]), rd(sys.argv[2]), float(sys.argv[3])
print("%-6s %-8s %7s %9s %9s %9s" % ("call", "phase", "samples", "p50 ms", "p99 ms", "max ms"))
fail = []
for k in ("stat", "read", "write", "fsync"):
    for name, d in (("idle", idle), ("loaded", loaded)):
        n, p50, p99, mx = d[k]
        print("%-6s %-8s %7s %9s %9s %9s" % (k, name, n, p50, p99, mx))
    r = float(loaded[k][2]) / float(idle[k][2]) if float(idle[k][2]) > 0 else float("inf")
    gated = k != "fsync"
    ok = float(loaded[k][2]) <= limit
    print("%-6s %-8s p99 loaded/idle %.2fx%s" % (k, "ratio", r, ("" if not gated else ("  (limit %g ms: %s)" % (limit, "ok" if ok else "EXCEEDED")))))
    if gated and not ok:
        fail.append(k)
errs = int(idle["errors"][0]) + int(loaded["errors"][0])
if errs:
    print("probe errors: %d" % errs)
    sys.exit(2)
if fail:
    print("FAIL: loaded p99 over %g ms for %s" % (limit, ", ".join(fail)))
    sys.exit(1)
print("PASS: loaded p99 of stat, read and write within %g ms" % limit)
EOF
