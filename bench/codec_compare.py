#!/usr/bin/env python3
"""Runs codec_bench and prints, per codec, the adapter's speed as a share of the library called
directly, and scattered (32 iovecs) input as a share of contiguous, all from one run.

    bench/codec_compare.py BUILD_DIR [DATA_FILE] [--repetitions N]
"""
import json, subprocess, sys, statistics, argparse

ap = argparse.ArgumentParser()
ap.add_argument("build")
ap.add_argument("data", nargs="?", default="corpus/sam/reads.sam")
ap.add_argument("--repetitions", type=int, default=9)
a = ap.parse_args()
out = subprocess.run([f"{a.build}/bench/codec_bench", f"--benchmark_repetitions={a.repetitions}",
                      "--benchmark_min_time=0.1", "--benchmark_enable_random_interleaving=true",
                      "--benchmark_format=json", a.data],
                     check=True, capture_output=True, text=True).stdout
rows = {}
for b in json.loads(out)["benchmarks"]:
    if b.get("run_type") != "iteration":
        continue
    rows.setdefault(b["run_name"], []).append(b["bytes_per_second"] / 2**20)
# Best of the repetitions: on a shared, noisy machine the fastest run is the one least disturbed
# by others; interleaving spreads the disturbance over all variants alike.
med = {k: max(v) for k, v in rows.items()}
print(f"data: {a.data}, 128 KiB records, best of {a.repetitions} interleaved repetitions, MiB/s on one thread")
print(f"{'op/codec':<20} {'direct':>9} {'adapter':>9} {'adapter/direct':>15} {'scatter32':>10} {'scatter/contig':>15}")
for key in sorted({k.rsplit('/', 1)[0] for k in med}):
    d, ad, sc = med.get(key + "/direct"), med.get(key + "/adapter"), med.get(key + "/scatter32")
    f = lambda x: f"{x:9.1f}" if x else f"{'-':>9}"
    r1 = f"{ad / d:15.3f}" if d and ad else f"{'-':>15}"
    r2 = f"{sc / ad:15.3f}" if sc and ad else f"{'-':>15}"
    print(f"{key:<20} {f(d)} {f(ad)} {r1} {f(sc) if sc else f'{chr(45):>10}'} {r2}")
