#pragma once
// fs/: the live statistics of a mount, as one typed value shared by the daemon and `qzfs stats`.
//
// The daemon fills a `stats` (space counters, open files, the engine's and the backends' counts
// since the mount) and serves it as JSON in the root's "user.qzfs.stats" attribute; `qzfs stats`
// reads the attribute back into a `stats`. to_json() and stats_from_json() are the only places
// that know the JSON keys (scripts and tests read `qzfs stats --json`: keys stay as they are).
//
// Thread-safety: plain values; the functions are pure.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace qzfs::fs {

struct stats {
  std::string backing, compression;
  std::uint64_t recordsize = 0;
  // What the backing directory holds (counters kept by the scan at mount start and every change).
  std::uint64_t files = 0, containers = 0, plain_files = 0, logical_bytes = 0, allocated_bytes = 0;
  double ratio = 1.0;  // logical / allocated (1 when nothing is stored)
  std::uint64_t open_files = 0;
  bool scan_done = false;  // "scan": "done" or "running"
  std::uint64_t dirty_records = 0;

  /// What `auto` has measured of one candidate codec for one checker class (docs/ENGINE.md).
  struct auto_cost {
    std::string cls, codec;  // "compressible" or "weak"; "zstd-1", ...
    double ns_per_byte = 0, stored_per_byte = 0;
    std::uint64_t samples = 0;
    double cost = 0;  // what auto minimizes (the lowest is chosen)
  };

  struct engine_counts {  // records since the mount
    std::uint64_t records = 0, holes = 0, raw = 0, compressed = 0, checker_skips = 0, probe_skips = 0,
                  cap_misses = 0, errors = 0, bytes_in = 0, bytes_out = 0;
    std::map<std::string, std::uint64_t> per_format, per_producer;  // non-zero counts by name
    std::vector<auto_cost> auto_costs;  // the auto engine's estimates (empty when nothing uses auto)
  } engine;

  struct cache_counts {
    std::uint64_t limit_bytes = 0, used_bytes = 0, peak_bytes = 0, reliefs = 0;
  } cache;

  struct accel_counts {
    std::string spec;            // the accel= option
    std::string state = "none";  // "none": no accelerator backend (the fields below are absent)
    bool present = false;
    std::string name, reason;
    std::uint64_t jobs = 0, failed = 0, probes = 0, teardowns = 0, bytes_in = 0, bytes_out = 0;
    std::uint64_t device_cpu_ns = 0;  // a modelled card's own threads: CPU a real card would spend
    std::uint64_t device_ns = 0;      // the device's time on the jobs it finished (modelled for a model)
    std::uint64_t emulation_ns = 0;   // a model's overruns: its jobs' time beyond the modelled one
    std::uint64_t decompressed = 0, decompressed_bytes = 0;  // of jobs: records it decoded, their bytes
  } accel;

  struct process_counts {  // the daemon's CPU since it started (getrusage)
    double cpu_s = 0;         // all its threads
    double device_cpu_s = 0;  // of which a modelled card's threads (what a card would spend)
    [[nodiscard]] double host_cpu_s() const noexcept { return cpu_s - device_cpu_s; }
  } process;

  struct routing_counts {
    std::uint64_t to_accel = 0, to_cpu = 0, small = 0, overflow = 0, not_serving = 0, redone = 0;
    std::uint64_t waited = 0;  // of to_accel: waited for a place in its full queue
    // Decompression jobs of reads (apart from the compression jobs above): where they went, and
    // how many the accelerator failed and the CPU redid.
    std::uint64_t decode_to_accel = 0, decode_to_cpu = 0, decode_redone = 0;
  } routing;

  struct sync_counts {  // since the mount (docs/STORE.md "Sync log")
    std::uint64_t fsyncs = 0, logged = 0, recovered = 0;  // fsyncs; through a sync log; log batches recovered at open
  } sync;

  struct cpu_counts {
    std::uint64_t workers = 0, jobs = 0, failed = 0, bytes_in = 0, bytes_out = 0;
    double busy_s = 0;
    std::uint64_t decompressed = 0, decompressed_bytes = 0;  // of jobs: records decoded, their bytes
  } cpu;
};

/// What one file holds, as `qzfs du` reads it (a regular file's "user.qzfs.du" attribute
/// through the mount; anyone who may read the file may read it).
struct file_usage {
  bool container = false;             // a compressed container (else a plain file)
  std::uint64_t logical_bytes = 0;    // its size
  std::uint64_t allocated_bytes = 0;  // what its backing file occupies (st_blocks x 512)
  std::uint64_t records = 0, holes = 0, raw = 0, dirty_records = 0;  // raw: stored uncompressed
  std::map<std::string, std::uint64_t> per_format;  // compressed records by payload format
};
[[nodiscard]] std::string to_json(const file_usage& u);
/// Throws std::invalid_argument for text that is not a JSON object.
[[nodiscard]] file_usage file_usage_from_json(std::string_view text);

/// The JSON text of `s` (nlohmann's dump: keys sorted; `indent` < 0: one line). A string that is
/// not UTF-8 (a backing path) has its bad bytes replaced, so the statistics can always be served.
[[nodiscard]] std::string to_json(const stats& s, int indent = -1);

/// `s` from the JSON to_json() makes. Keys that are missing keep their defaults (an older daemon);
/// text that is not a JSON object throws std::invalid_argument.
[[nodiscard]] stats stats_from_json(std::string_view text);

}  // namespace qzfs::fs
