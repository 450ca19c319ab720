#!/usr/bin/env python3
"""Engine and offload measurements (docs/BENCHMARKS.md, "Engine"), each table from one run:

    bench/engine_bench.py BUILD_DIR [CORPUS_DIR] [--max-bytes 32M]

1. every policy with 1 and 2 CPU workers on SAM + kernel text + libraries;
2. CPU seconds per GiB of incompressible data (linux-source's .tar.xz): auto and gzip-6 with
   their skips, against gzip-6 compressing every record in full (--no-skip, what zfs-fuse does);
3. overflow: gzip through a healthy, a slowed and a very slow accelerator (fault device over
   software) with 2 CPU workers, against the CPU alone;
4. the cost of verifying accelerator output: full decode vs CRC-32, against no accelerator.
"""
import argparse, json, subprocess, sys

ap = argparse.ArgumentParser()
ap.add_argument("build")
ap.add_argument("corpus", nargs="?", default="corpus")
ap.add_argument("--max-bytes", default="32M")
a = ap.parse_args()
Q = f"{a.build}/qzfs"
C = a.corpus
GIB = 1 << 30

def run(*args):
    out = subprocess.run([Q, "bench", "--json", "--max-bytes", a.max_bytes, *args] if "--max-bytes" not in args
                         else [Q, "bench", "--json", *args], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)

def mbs(j): return j["logical_bytes"] / 2**20 / j["wall_s"] if j["wall_s"] > 0 else 0
def cpu_gib(j): return j["process_cpu_s"] / (j["logical_bytes"] / GIB)
def ratio(j): return j["logical_bytes"] / j["stored_bytes"]

print("## 1. Policies, 1 and 2 CPU workers (SAM + kernel text + libraries)")
print(f"{'policy':<8} {'workers':>7} {'MB/s':>8} {'x gzip-6':>9} {'CPU s/GiB':>10} {'ratio':>7}")
data = [f"{C}/sam/reads.sam", f"{C}/text", f"{C}/bin"]
for t in ("1", "2"):
    rows = {p: run("--policy", p, "--threads", t, *data) for p in ("gzip-6", "off", "lz4", "gzip", "zstd", "auto")}
    base = mbs(rows["gzip-6"])
    for p, j in rows.items():
        print(f"{p:<8} {t:>7} {mbs(j):8.1f} {mbs(j) / base:9.2f} {cpu_gib(j):10.2f} {ratio(j):7.3f}")

print("\n## 2. Incompressible data (linux-source-6.1.tar.xz): CPU seconds per GiB")
xz = "/usr/src/linux-source-6.1.tar.xz"
full = run("--policy", "gzip-6", "--no-skip", xz)
print(f"{'policy':<22} {'CPU s/GiB':>10} {'x full gzip-6':>14} {'MB/s':>8}")
for name, j in (("gzip-6, no skips", full), ("gzip-6", run("--policy", "gzip-6", xz)), ("auto", run("--policy", "auto", xz))):
    print(f"{name:<22} {cpu_gib(j):10.3f} {cpu_gib(j) / cpu_gib(full):14.3f} {mbs(j):8.1f}")

print("\n## 3. Overflow: gzip with 2 CPU workers and an accelerator (fault device over software)")
print(f"{'accelerator':<34} {'MB/s':>8} {'x CPU alone':>12} {'to accel':>9} {'overflow':>9} {'redone':>7}")
sam = ["--max-bytes", "1G", f"{C}/sam"]  # all of it: a slow device's first answers must not dominate
cpu_only = run("--policy", "gzip", "--threads", "2", "--accel", "cpu", *sam)
for name, acc in (("none (CPU alone)", "cpu"), ("healthy", "fault:slow=0"), ("slowed: +5 ms a record", "fault:slow=1,delay=5ms"),
                  ("very slow: +50 ms a record", "fault:slow=1,delay=50ms")):
    j = cpu_only if acc == "cpu" else run("--policy", "gzip", "--threads", "2", "--accel", acc, *sam)
    r = j["routing"]
    print(f"{name:<34} {mbs(j):8.1f} {mbs(j) / mbs(cpu_only):12.2f} {r['to_accel']:>9} {r['overflow']:>9} {r['redone']:>7}")

print("\n## 4. Verifying accelerator output (1 CPU worker, healthy software device)")
print(f"{'verification':<14} {'accel busy s/GiB':>17} {'process CPU s/GiB':>18} {'x no accel':>11}")
sam = [f"{C}/sam/reads.sam"]
none = run("--policy", "gzip", "--threads", "1", "--accel", "cpu", *sam)
print(f"{'(no accel)':<14} {'-':>17} {cpu_gib(none):18.3f} {1.0:11.2f}")
for mode in ("crc", "full"):
    j = run("--policy", "gzip", "--threads", "1", "--accel", "fault:slow=0", "--accel-verify", mode, *sam)
    acc = [b for b in j["backends"] if b["name"] != "cpu"][0]
    done = acc["completed"]
    per_gib = acc["busy_s"] / (j["logical_bytes"] * (done / max(1, sum(c["records"] for c in j["classes"]))) / GIB) if done else 0
    print(f"{mode:<14} {per_gib:17.3f} {cpu_gib(j):18.3f} {cpu_gib(j) / cpu_gib(none):11.2f}")
