#!/usr/bin/env bash
# kill -9 of the daemon in the middle of mixed writes, truncates and fsyncs, over and over:
# scripts/crash-loop.sh [CYCLES] [QZFS_BINARY]   (default 100, build/qzfs)
#
# Each cycle mounts a fresh daemon on the same backing directory, runs QZFS_CRASH_WORKERS (2)
# python3 workers, each on its own 4 files (writes of text, random and zero data at random
# offsets, appends and sparse writes, truncates up and down, open(O_TRUNC), punch holes and zero
# ranges through fallocate(2), renames within its files, closes and reopens, live read-backs,
# fsync and fdatasync), kill -9s the daemon 0.2-2 s later, lazily unmounts, runs `qzfs check`
# (no damaged record), mounts again and verifies:
#   - every file in the mount reads to its end without an error, as many bytes as stat says;
#   - a file not changed since its last completed fsync is exactly the fsynced content;
#   - a file changed since then still holds every fsynced byte no later call touched (and zeros
#     where no call wrote beyond the fsynced size); its size is the fsynced one unless a later
#     call could have changed it.
# The workers keep their model outside the mount: a journal (one JSON line per change of the
# model, fsynced; a call is entered as "may have happened" before it is made, a completed fsync
# after) and a copy of each file's content as of its last completed fsync. The content found
# after a remount is the next cycle's starting point (it is what the backing directory holds).
# Errors other than the ones the kill causes (the worker sees them before the kill marker
# exists), and a live read-back that differs from the model, fail the cycle too.
#
# Environment: QZFS_CRASH_SEED (base seed; random by default, printed; it repeats a run's
# choices, not its timing), QZFS_CRASH_OPTS (mount options, default commit=1),
# QZFS_CRASH_WORKERS (default 2), QZFS_CRASH_DIR (parent of the work directory, default $TMPDIR
# or /tmp). The binary is copied into the work directory first (a rebuild during the run changes
# nothing). The work directory is removed when every cycle passed and kept (with a copy of the
# backing directory as the kill left it, the journals and fsynced copies, per failed cycle)
# otherwise, and always with QZFS_CRASH_KEEP=1.
set -uo pipefail

cycles=${1:-100}
here=$(cd "$(dirname "$0")/.." && pwd)
qzfs=${2:-$here/build/qzfs}
opts=${QZFS_CRASH_OPTS:-commit=1}
nworkers=${QZFS_CRASH_WORKERS:-2}
base_seed=${QZFS_CRASH_SEED:-$(( (RANDOM << 15 | RANDOM) % 1000000 ))}

[[ $cycles =~ ^[0-9]+$ ]] || { echo "crash-loop: CYCLES must be a number"; exit 2; }
[ -x "$qzfs" ] || { echo "crash-loop: no qzfs binary at $qzfs"; exit 2; }
qzfs=$(cd "$(dirname "$qzfs")" && pwd)/$(basename "$qzfs")
for t in python3 fusermount3 timeout; do
  command -v "$t" >/dev/null || { echo "crash-loop: $t is missing"; exit 2; }
done
[ -e /dev/fuse ] || { echo "crash-loop: no /dev/fuse"; exit 2; }

work=$(mktemp -d "${QZFS_CRASH_DIR:-${TMPDIR:-/tmp}}/qzfs-crash-XXXXXX")
B=$work/backing
M=$work/mnt
mkdir -p "$B" "$M" "$work/snaps"
py=$work/crash.py
# A copy of the binary: a rebuild during the run must not change (or remove) what is tested.
cp "$qzfs" "$work/qzfs" || { echo "crash-loop: cannot copy $qzfs"; rm -rf "$work"; exit 2; }
qzfs_given=$qzfs
qzfs=$work/qzfs

daemon=""        # the running daemon's pid
worker_pids=()   # the running workers' pids
failed=0
passed=0

is_mounted() { grep -F " $M " /proc/self/mountinfo 2>/dev/null | grep -q " fuse.qzfs "; }

# The pid of the daemon serving $M: argv is "<qzfs> mount -o <opts> <B> <M>".
find_daemon() {
  local p args
  for p in $(pgrep -f -- "$M" 2>/dev/null); do
    [ -r "/proc/$p/cmdline" ] || continue
    mapfile -d '' -t args < "/proc/$p/cmdline" 2>/dev/null || continue
    if [ "${#args[@]}" -ge 3 ] && [ "${args[1]}" = mount ] && [ "${args[-1]}" = "$M" ] && [ "${args[-2]}" = "$B" ]; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# Waits up to $2 tenths of a second for pid $1 to be gone.
wait_gone() {
  local i
  for ((i = 0; i < $2; i++)); do alive "$1" || return 0; sleep 0.1; done
  ! alive "$1"
}

stop_workers() {
  local p
  for p in "${worker_pids[@]}"; do
    wait_gone "$p" "${1:-0}" || kill -9 "$p" 2>/dev/null
  done
  for p in "${worker_pids[@]}"; do wait_gone "$p" 50; wait "$p" 2>/dev/null; done
  worker_pids=()
}

mount_it() {
  local out i
  out=$(timeout 30 "$qzfs" mount -o "$opts" "$B" "$M" 2>&1) || { echo "mount failed: $out"; return 1; }
  for ((i = 0; i < 50; i++)); do is_mounted && break; sleep 0.1; done
  is_mounted || { echo "mount returned but $M is not mounted: $out"; return 1; }
  daemon=$(find_daemon) || { echo "no daemon process found for $M"; return 1; }
}

cleanup() {
  local i
  stop_workers 0
  if is_mounted; then
    for ((i = 0; i < 20; i++)); do
      timeout 30 "$qzfs" umount "$M" >/dev/null 2>&1 && ! is_mounted && break
      sleep 0.2
    done
    is_mounted && timeout 10 fusermount3 -u -z "$M" >/dev/null 2>&1
  fi
  if alive "$daemon"; then wait_gone "$daemon" 100 || kill -9 "$daemon" 2>/dev/null; fi
  if [ "$failed" -eq 0 ] && [ "${QZFS_CRASH_KEEP:-0}" = 0 ]; then
    rm -rf "$work"
  else
    echo "crash-loop: work directory kept: $work"
  fi
}
trap cleanup EXIT
trap 'echo "crash-loop: interrupted"; failed=$((failed + 1)); exit 130' INT TERM

cat > "$py" <<'PYTHON'
import ctypes, errno, hashlib, json, os, random, sys, time

INF = 1 << 62
MB = 1 << 20
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x10
FILES_PER_WORKER = 4

def add_range(iv, a, b):
    """Adds [a, b) to a sorted list of disjoint [x, y) ranges, merging."""
    if b <= a:
        return iv
    out = []
    for x, y in iv:
        if y < a or x > b:
            out.append([x, y])
        else:
            a, b = min(a, x), max(b, y)
    out.append([a, b])
    out.sort()
    return out

def untouched(iv, lo, hi):
    """The parts of [lo, hi) outside the ranges of iv."""
    out, at = [], lo
    for x, y in iv:
        if y <= at:
            continue
        if x >= hi:
            break
        if x > at:
            out.append((at, min(x, hi)))
        at = max(at, y)
        if at >= hi:
            break
    if at < hi:
        out.append((at, hi))
    return out

def read_all(path):
    """(bytes, None) or (None, 'reason'); also compares with st_size."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        return None, "open: %s" % os.strerror(e.errno)
    try:
        chunks = []
        while True:
            c = os.read(fd, MB)
            if not c:
                break
            chunks.append(c)
        data = b"".join(chunks)
        st = os.fstat(fd)
        if st.st_size != len(data):
            return None, "read %d bytes but st_size is %d" % (len(data), st.st_size)
        return data, None
    except OSError as e:
        return None, "read: %s" % os.strerror(e.errno)
    finally:
        os.close(fd)

def sha(b):
    return hashlib.sha256(b).hexdigest()

def hexat(b, at, n=16):
    return b[at:at + n].hex() if b is not None else "-"

# ---------------------------------------------------------------------------------------------
# Worker: random operations on this worker's files; the journal says what must survive.

class Killed(Exception):
    pass

class Worker:
    def __init__(self, mnt, work, k, seed, cycle):
        self.mnt, self.work, self.k, self.cycle = mnt, work, k, cycle
        self.rng = random.Random(seed)
        self.names = ["w%d_f%d" % (k, i) for i in range(FILES_PER_WORKER)]
        self.snapdir = os.path.join(work, "snaps", "w%d" % k)
        self.marker = os.path.join(work, "killed")
        self.log = open(os.path.join(work, "worker%d.log" % k), "a")
        self.files = {}  # name -> dict(fd, obj, shadow, dsha, dsize, touched)
        self.next_obj = 0
        self.seq = 0
        self.nops = self.nfsync = 0
        self.jfd = os.open(os.path.join(work, "journal%d" % k), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self.libc = ctypes.CDLL(None, use_errno=True)
        fa = getattr(self.libc, "fallocate64", None) or self.libc.fallocate
        fa.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        fa.restype = ctypes.c_int
        self.fallocate_fn = fa
        self.text = self.make_text()

    def make_text(self):
        parts = []
        for d in ("/usr/share/common-licenses",):
            try:
                for n in sorted(os.listdir(d)):
                    p = os.path.join(d, n)
                    if os.path.isfile(p) and not os.path.islink(p):
                        with open(p, "rb") as f:
                            parts.append(f.read())
            except OSError:
                pass
        text = b"".join(parts)
        if len(text) < 2 * MB:  # words of our own, to have 2 MiB of compressible text
            r = random.Random(7)
            words = [bytes(r.choice(b"etaoinshrdlucmfwyp") for _ in range(r.randint(1, 9))) for _ in range(800)]
            out = bytearray(text)
            while len(out) < 2 * MB:
                out += b" ".join(r.choice(words) for _ in range(12)) + b".\n"
            text = bytes(out)
        return text

    def say(self, msg):
        self.log.write("cycle %d: %s\n" % (self.cycle, msg))
        self.log.flush()

    # The journal: the whole model of this worker's files, one line per change.
    def record(self, pending=None):
        self.seq += 1
        files = {}
        for n, f in self.files.items():
            files[n] = {"obj": f["obj"], "dsha": f["dsha"], "dsize": f["dsize"], "touched": f["touched"]}
        line = json.dumps({"seq": self.seq, "cycle": self.cycle, "files": files, "pending": pending,
                           "ops": self.nops, "fsyncs": self.nfsync}, separators=(",", ":")) + "\n"
        os.write(self.jfd, line.encode())
        os.fsync(self.jfd)

    def snapshot(self, data):
        h = sha(data)
        p = os.path.join(self.snapdir, h)
        if not os.path.exists(p):
            tmp = p + ".tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                v = memoryview(data)
                while v:
                    v = v[os.write(fd, v):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, p)
        return h

    def path(self, n):
        return os.path.join(self.mnt, n)

    # Any failing call: the kill's doing if the marker exists (it is made before the kill).
    def failed(self, what, e):
        if os.path.exists(self.marker):
            self.say("stopped by the kill during %s: %s" % (what, os.strerror(e.errno) if e.errno else e))
            raise Killed()
        msg = "LIVE ERROR before the kill: %s: %s" % (what, os.strerror(e.errno) if e.errno else e)
        self.say(msg)
        print(msg, file=sys.stderr)
        sys.exit(3)

    def call(self, what, fn, *a):
        try:
            return fn(*a)
        except OSError as e:
            self.failed(what, e)

    def start(self):
        os.makedirs(self.snapdir, exist_ok=True)
        for n in os.listdir(self.snapdir):  # the previous cycle's copies: the mount is the truth now
            os.unlink(os.path.join(self.snapdir, n))
        for n in self.names:
            p = self.path(n)
            if not os.path.exists(p):
                continue
            data, err = read_all(p)
            if err is not None:
                self.failed("baseline read of %s" % n, OSError(errno.EIO, err))
            fd = self.call("open %s" % n, os.open, p, os.O_RDWR)
            # What the backing directory holds after the remount is durable until changed.
            self.files[n] = {"fd": fd, "obj": self.new_obj(), "shadow": bytearray(data), "dsha": self.snapshot(data),
                             "dsize": len(data), "touched": []}
        self.record()

    def new_obj(self):
        self.next_obj += 1
        return "c%d.w%d.o%d" % (self.cycle, self.k, self.next_obj)

    def data(self, n):
        r = self.rng.random()
        if r < 0.5:
            at = self.rng.randrange(0, len(self.text) - n) if len(self.text) > n else 0
            d = self.text[at:at + n]
            while len(d) < n:
                d += self.text[:n - len(d)]
            return d
        if r < 0.8:
            return self.rng.randbytes(n)
        if r < 0.9:
            return bytes(n)
        return bytes([self.rng.randrange(256)]) * n

    def length(self):
        r = self.rng.random()
        if r < 0.3:
            return self.rng.randint(1, 512)
        if r < 0.6:
            return self.rng.randint(513, 16384)
        if r < 0.9:
            return self.rng.randint(16385, 262144)
        return self.rng.randint(262145, MB + 4096)

    # pwrite of `d` at `off` into file `n`, journalled first, the shadow copy following it.
    def write_at(self, n, f, off, d):
        size, ln = len(f["shadow"]), len(d)
        f["touched"] = add_range(f["touched"], off, off + ln)
        self.record()
        w = self.call("pwrite %s %d+%d" % (n, off, ln), os.pwrite, f["fd"], d, off)
        if w != ln:
            self.failed("short pwrite %s: %d of %d" % (n, w, ln), OSError(errno.EIO, "short write"))
        if off > size:
            f["shadow"] += bytes(off - size)
        f["shadow"][off:off + ln] = d

    # fsync or fdatasync of file `n`: from now on its content must survive.
    def synced(self, n, f, data_only):
        self.call("%s %s" % ("fdatasync" if data_only else "fsync", n), os.fdatasync if data_only else os.fsync, f["fd"])
        data = bytes(f["shadow"])
        f["dsha"], f["dsize"], f["touched"] = self.snapshot(data), len(data), []
        self.nfsync += 1
        self.record()

    # One random operation.
    def step(self):
        self.nops += 1
        have = sorted(self.files)
        missing = [n for n in self.names if n not in self.files]
        if missing and (not have or self.rng.random() < 0.3):
            return self.create(self.rng.choice(missing))
        n = self.rng.choice(have)
        f = self.files[n]
        size = len(f["shadow"])
        r = self.rng.random() * 100
        if size > 8 * MB and r < 50:
            r = 50  # keep the files within reach: a big one is cut down more often
        if r < 4 and size > 0:
            # A database's commits: small writes in place, each fsynced, in quick succession
            # (what gives a file its sync log, docs/STORE.md "Sync log"; the kill may land in it).
            for _ in range(self.rng.randint(10, 30)):
                ln = min(self.rng.randint(1, 4096), size)
                self.write_at(n, f, self.rng.randint(0, size - ln), self.data(ln))
                self.synced(n, f, True)
        elif r < 45:  # write
            ln = self.length()
            q = self.rng.random()
            if q < 0.6:
                off = self.rng.randint(0, max(size, 1))
            elif q < 0.85:
                off = size
            elif q < 0.99:
                off = size + self.rng.randint(1, MB)
            else:
                off = self.rng.randint(0, 12 * MB)
            self.write_at(n, f, off, self.data(ln))
        elif r < 55:  # truncate up or down
            ns = self.rng.choice([0, self.rng.randint(0, size), self.rng.randint(0, size), size + self.rng.randint(1, 2 * MB)])
            if ns < size:
                f["touched"] = add_range(f["touched"], ns, INF)
            elif ns > size:
                f["touched"] = add_range(f["touched"], size, ns)
            self.record()
            self.call("ftruncate %s %d" % (n, ns), os.ftruncate, f["fd"], ns)
            if ns < size:
                del f["shadow"][ns:]
            else:
                f["shadow"] += bytes(ns - size)
        elif r < 63:  # punch a hole or zero a range, keeping the size
            punch = r < 59
            off = self.rng.randint(0, max(size, 1))
            ln = self.rng.randint(1, 3 * 131072)
            f["touched"] = add_range(f["touched"], off, off + ln)
            self.record()
            mode = FALLOC_FL_KEEP_SIZE | (FALLOC_FL_PUNCH_HOLE if punch else FALLOC_FL_ZERO_RANGE)
            what = "fallocate(%s) %s %d+%d" % ("punch" if punch else "zero", n, off, ln)
            if self.fallocate_fn(f["fd"], mode, off, ln) != 0:
                e = ctypes.get_errno()
                if e == errno.EOPNOTSUPP:
                    self.say("%s: not supported" % what)
                else:
                    self.failed(what, OSError(e, os.strerror(e)))
            else:
                end = min(off + ln, size)
                if end > off:
                    f["shadow"][off:end] = bytes(end - off)
        elif r < 83:  # fsync or fdatasync: from now on this content must survive
            self.synced(n, f, r >= 78)
        elif r < 88:  # rename onto another of this worker's names (replacing it if it exists)
            dst = self.rng.choice([x for x in self.names if x != n])
            self.record(pending={"op": "rename", "src": n, "dst": dst})
            self.call("rename %s %s" % (n, dst), os.rename, self.path(n), self.path(dst))
            if dst in self.files:
                try:
                    os.close(self.files[dst]["fd"])
                except OSError as e:
                    self.failed("close of the replaced %s" % dst, e)
            self.files[dst] = self.files.pop(n)
            self.record()
        elif r < 93:  # close and open again, a quarter of them with O_TRUNC
            trunc = self.rng.random() < 0.25
            self.call("close %s" % n, os.close, f["fd"])
            f["fd"] = -1
            if trunc:
                f["touched"] = add_range(f["touched"], 0, INF)
                self.record()
            f["fd"] = self.call("open %s" % n, os.open, self.path(n), os.O_RDWR | (os.O_TRUNC if trunc else 0))
            if trunc:
                del f["shadow"][:]
        else:  # read the file back while it is live
            want = bytes(f["shadow"])
            try:
                got = os.pread(f["fd"], len(want) + 4096, 0)
                st = os.fstat(f["fd"])
            except OSError as e:
                return self.failed("live read of %s" % n, e)
            if got != want or st.st_size != len(want):
                at = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
                msg = ("LIVE MISMATCH: %s (%s) read %d bytes, st_size %d, expected %d; first difference at %d: "
                       "expected %s got %s" % (n, f["obj"], len(got), st.st_size, len(want), at, hexat(want, at), hexat(got, at)))
                if os.path.exists(self.marker):
                    raise Killed()
                self.say(msg)
                print(msg, file=sys.stderr)
                sys.exit(3)

    def create(self, n):
        fd = self.call("create %s" % n, os.open, self.path(n), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        # Never fsynced: only "readable" is promised until the first fsync.
        self.files[n] = {"fd": fd, "obj": self.new_obj(), "shadow": bytearray(), "dsha": None, "dsize": None,
                         "touched": [[0, INF]]}
        self.record()

def worker_main(mnt, work, k, seed, cycle):
    w = Worker(mnt, work, int(k), int(seed), int(cycle))
    try:
        w.start()
        open(os.path.join(work, "ready%d" % w.k), "w").close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            w.step()
        w.say("time limit reached after %d operations" % w.nops)
    except Killed:
        pass
    w.say("%d operations, %d fsyncs" % (w.nops, w.nfsync))
    return 0

# ---------------------------------------------------------------------------------------------
# Verify: after the remount, every file reads, and what the journals promise is there.

def last_record(path):
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue  # a torn last line (the worker was killed while writing it)
    return None

def check_model(files, contents, snapdir):
    """Problems of one candidate name -> object map; (problems, counts)."""
    problems = []
    counts = {"exact": 0, "ranged": 0, "readable": 0, "bytes": 0}
    for n, f in sorted(files.items()):
        if n not in contents:
            problems.append("%s (%s): missing (the journal has it)" % (n, f["obj"]))
            continue
        data, err = contents[n]
        if err is not None:
            problems.append("%s: %s" % (n, err))  # as the listing reports it
            continue
        if f["dsha"] is None:
            counts["readable"] += 1
            continue
        D = f["dsize"]
        touched = f["touched"]
        if not touched:
            counts["exact"] += 1
            counts["bytes"] += D
            if len(data) == D and sha(data) == f["dsha"]:
                continue
        else:
            counts["ranged"] += 1
        try:
            with open(os.path.join(snapdir, f["dsha"]), "rb") as s:
                want = s.read()
        except OSError as e:
            problems.append("%s (%s): the fsynced copy %s is missing (%s)" % (n, f["obj"], f["dsha"], e))
            continue
        # The size: the fsynced one unless a later call reached beyond it.
        if max((y for _, y in touched), default=0) <= D and len(data) != D:
            problems.append("%s (%s): size %d, fsynced size %d, and no later call changed the size; touched %s"
                            % (n, f["obj"], len(data), D, touched))
            continue
        bad = None
        for a, b in untouched(touched, 0, max(D, len(data))):
            if a < D:
                e = min(b, D)
                if len(data) < e:
                    bad = "fsynced bytes %d..%d are gone: the file has %d bytes" % (max(a, len(data)), e, len(data))
                    break
                if data[a:e] != want[a:e]:
                    at = next(i for i in range(a, e) if data[i] != want[i])
                    bad = "byte %d differs from the fsynced content: expected %s got %s" % (at, hexat(want, at), hexat(data, at))
                    break
                a = e
            if a < b and a < len(data):
                e = min(b, len(data))
                if data[a:e].count(0) != e - a:
                    at = next(i for i in range(a, e) if data[i] != 0)
                    bad = "byte %d beyond the fsynced size %d was never written but is not zero: got %s" % (at, D, hexat(data, at))
                    break
        if bad is not None:
            problems.append("%s (%s): %s; size %d, fsynced size %d (sha %s), touched since %s"
                            % (n, f["obj"], bad, len(data), D, f["dsha"][:16], touched))
        elif touched:
            counts["bytes"] += sum(min(b, D) - a for a, b in untouched(touched, 0, D))
    return problems, counts

def verify_main(mnt, work, nworkers):
    nworkers = int(nworkers)
    contents = {}
    problems = []
    for n in sorted(os.listdir(mnt)):
        p = os.path.join(mnt, n)
        if os.path.isfile(p):
            contents[n] = read_all(p)
            if contents[n][1] is not None:
                problems.append("%s: %s" % (n, contents[n][1]))
    total = {"exact": 0, "ranged": 0, "readable": 0, "bytes": 0, "ops": 0, "fsyncs": 0}
    for k in range(nworkers):
        rec = last_record(os.path.join(work, "journal%d" % k))
        if rec is None:
            problems.append("worker %d: no journal record" % k)
            continue
        total["ops"] += rec["ops"]
        total["fsyncs"] += rec["fsyncs"]
        candidates = [rec["files"]]
        pend = rec.get("pending")
        if pend and pend["op"] == "rename":  # either before or after it
            after = dict(rec["files"])
            after[pend["dst"]] = after.pop(pend["src"])
            candidates.append(after)
        best = None
        for c in candidates:
            pr, counts = check_model(c, contents, os.path.join(work, "snaps", "w%d" % k))
            if best is None or not pr:
                best = (pr, counts)
            if not pr:
                break
        for p in best[0]:
            if p not in problems:  # an unreadable file is reported once, by the listing above
                problems.append("worker %d, journal seq %d%s: %s" % (k, rec["seq"], " (rename pending)" if pend else "", p))
        for key in ("exact", "ranged", "readable", "bytes"):
            total[key] += best[1][key]
    print("ops=%(ops)d fsyncs=%(fsyncs)d exact=%(exact)d ranged=%(ranged)d readable_only=%(readable)d fsynced_bytes_checked=%(bytes)d" % total)
    for p in problems:
        print("  PROBLEM: " + p)
    return 1 if problems else 0

if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "worker":
        sys.exit(worker_main(*sys.argv[2:]))
    if mode == "verify":
        sys.exit(verify_main(*sys.argv[2:]))
    sys.exit(2)
PYTHON

echo "crash-loop: $cycles cycles, seed $base_seed, $nworkers workers, -o $opts, $qzfs_given, in $work"
start=$(date +%s)
total_fsyncs=0
total_recovered=0
total_exact=0
total_ranged=0
mount_it || { failed=1; echo "crash-loop: the first mount failed"; exit 1; }

for ((c = 1; c <= cycles; c++)); do
  seed=$((base_seed + c))
  RANDOM=$seed
  delay_ms=$((200 + RANDOM % 1801))
  rm -f "$work"/killed "$work"/ready* "$work"/journal*
  problems=()

  # The workers.
  worker_pids=()
  for ((k = 0; k < nworkers; k++)); do
    python3 "$py" worker "$M" "$work" "$k" $((seed * 16 + k)) "$c" 2>>"$work/worker$k.err" &
    worker_pids+=($!)
  done
  ready=0
  for ((i = 0; i < 300; i++)); do
    ready=$(ls "$work"/ready* 2>/dev/null | wc -l)
    [ "$ready" -ge "$nworkers" ] && break
    for p in "${worker_pids[@]}"; do alive "$p" || break 2; done
    sleep 0.1
  done
  [ "$ready" -ge "$nworkers" ] || problems+=("only $ready of $nworkers workers started")
  sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"

  # The kill: the marker first, so that a worker tells the kill's errors from real ones.
  : > "$work/killed"
  if alive "$daemon"; then
    kill -9 "$daemon"
    wait_gone "$daemon" 100 || problems+=("the daemon $daemon did not die within 10 s of kill -9")
  else
    problems+=("the daemon was gone before the kill")
  fi
  stop_workers 30
  for ((k = 0; k < nworkers; k++)); do
    if grep -q "LIVE" "$work/worker$k.err" 2>/dev/null; then
      problems+=("worker $k: $(grep LIVE "$work/worker$k.err" | tail -1)")
    fi
    : > "$work/worker$k.err"
  done
  timeout 10 fusermount3 -u -z "$M" >/dev/null 2>&1
  for ((i = 0; i < 50; i++)); do is_mounted || break; sleep 0.1; done
  is_mounted && problems+=("$M still mounted after fusermount3 -u -z")

  # What the kill left, kept in case this cycle fails.
  rm -rf "$work/last-backing"
  cp -a "$B" "$work/last-backing"

  if ! out=$(timeout 300 "$qzfs" check "$B" 2>&1); then
    problems+=("qzfs check failed: $(echo "$out" | grep -v '^ *$' | head -20 | tr '\n' ';')")
  fi

  if ! out=$(mount_it); then
    problems+=("$out")
    echo "cycle $c/$cycles seed=$seed kill_after=${delay_ms}ms: FAIL (cannot mount again; stopping)"
    for p in "${problems[@]}"; do echo "  PROBLEM: $p"; done
    failed=$((failed + 1 + cycles - c))
    mkdir -p "$work/fail-cycle$c"
    mv "$work/last-backing" "$work/fail-cycle$c/backing"
    cp "$work"/journal* "$work"/worker*.log "$work/fail-cycle$c/" 2>/dev/null
    break
  fi
  daemon=$(find_daemon)
  vout=$(timeout 600 python3 "$py" verify "$M" "$work" "$nworkers" 2>&1)
  vrc=$?
  summary=$(echo "$vout" | head -1)
  [ "$vrc" -eq 0 ] || problems+=("verify exit $vrc")
  if [[ $summary =~ fsyncs=([0-9]+).*exact=([0-9]+).*ranged=([0-9]+) ]]; then
    total_fsyncs=$((total_fsyncs + BASH_REMATCH[1]))
    total_exact=$((total_exact + BASH_REMATCH[2]))
    total_ranged=$((total_ranged + BASH_REMATCH[3]))
  fi

  # fsyncs the remount recovered from sync logs (docs/STORE.md "Sync log"): the log is on the path.
  recovered=$("$qzfs" stats --json "$M" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("sync", {}).get("recovered", 0))' 2>/dev/null || echo 0)
  total_recovered=$((total_recovered + ${recovered:-0}))
  summary="$summary log_recovered=${recovered:-0}"

  if [ "${#problems[@]}" -eq 0 ]; then
    passed=$((passed + 1))
    echo "cycle $c/$cycles seed=$seed kill_after=${delay_ms}ms: ok $summary"
  else
    failed=$((failed + 1))
    echo "cycle $c/$cycles seed=$seed kill_after=${delay_ms}ms: FAIL $summary"
    for p in "${problems[@]}"; do echo "  PROBLEM: $p"; done
    echo "$vout" | tail -n +2
    mkdir -p "$work/fail-cycle$c"
    mv "$work/last-backing" "$work/fail-cycle$c/backing"
    cp "$work"/journal* "$work"/worker*.log "$work/fail-cycle$c/" 2>/dev/null
    cp -a "$work/snaps" "$work/fail-cycle$c/snaps"
    echo "  (the backing directory as the kill left it, the journals and the fsynced copies: $work/fail-cycle$c)"
  fi
done

# A clean unmount at the end, and the store checked once more.
if is_mounted; then
  for ((i = 0; i < 20; i++)); do
    timeout 60 "$qzfs" umount "$M" >/dev/null 2>&1 && ! is_mounted && break
    sleep 0.2
  done
  if is_mounted; then
    echo "crash-loop: $M does not unmount"
    failed=$((failed + 1))
  else
    wait_gone "$daemon" 100
    out=$(timeout 300 "$qzfs" check "$B" 2>&1) || { echo "crash-loop: qzfs check after the final unmount failed: $out"; failed=$((failed + 1)); }
  fi
fi
if [ "$total_fsyncs" -eq 0 ] || [ $((total_exact + total_ranged)) -eq 0 ]; then
  echo "crash-loop: nothing fsynced was ever checked: the loop tested nothing"
  failed=$((failed + 1))
fi
echo "crash-loop: $passed passed, $failed failed in $(( $(date +%s) - start )) s (seed $base_seed; $total_fsyncs fsyncs, $total_exact exact and $total_ranged partly rewritten fsynced files checked; $total_recovered fsyncs recovered from sync logs)"
[ "$failed" -eq 0 ]
