#pragma once
// `qzfs bench`: every codec over the records of a real corpus, the way the file system sees
// data: ratio (frame headers and raw fallbacks included), compress and decompress speed per
// thread and in total, and the share of records that did not fit under the saving rule.

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "corpus.h"
#include "qzfs/codec/codec.h"
#include "qzfs/offload/scheduler.h"

namespace qzfs::cli {

struct bench_options {
  std::size_t record_size = 128 * 1024;
  unsigned threads = 1;
  std::vector<std::string> codecs;
  std::string baseline = "zlib-6";
  double min_saving = 0.10;     // a record must save this share, else it is stored raw
  unsigned scatter = 1;         // iovecs per record (>1: many small, unaligned pieces)
  double min_time = 1.0;        // seconds each phase runs at least (repeating passes)
  bool verify = true;           // compare every decoded record with its input
  bool scaling = false;         // also compress on one thread: the speed-up of --threads, same run
  std::string accel;            // "": codec contexts called directly; else through the offload
                                // scheduler: cpu | qat | auto | fault:SPEC (fault wraps a software device)
  std::string accel_verify = "full";  // full | crc: how accelerator output is verified
  bool no_checker = false;      // --policy --no-skip: no checker, no learning: every record to its codec
  std::string qatzip_lib;       // library for qat/auto ("" = $QZFS_QATZIP_LIB or libqatzip.so.3)
};

/// A backend's health and counters at the end of a run.
struct backend_report {
  std::string name, health, reason;
  std::uint64_t submitted = 0, completed = 0, failed = 0, probes = 0, teardowns = 0;
  double busy_s = 0;
  double device_s = 0;      // the device's own time on its jobs (a modelled card: as modelled)
  double device_cpu_s = 0;  // CPU of a modelled card's threads: a card's, not the host's
};
backend_report report_of(const offload::backend& b);

struct codec_result {
  std::string name;
  codec::spec spec;
  bool gathers = false;
  std::size_t records = 0, not_fit = 0;
  std::size_t logical_bytes = 0, stored_bytes = 0;  // one pass; stored = frames as written
  double ratio = 0;
  double compress_mbs_thread = 0, compress_mbs_total = 0;
  double decompress_mbs_thread = 0, decompress_mbs_total = 0;  // over records that were compressed
  double compress_cpu_s_per_gib = 0;
  double compress_mbs_one_thread = 0;  // with bench_options::scaling: total MB/s on one thread
  unsigned compress_passes = 0, decompress_passes = 0;
  bool verified = false;
  // With bench_options::accel: where the records went, and each backend's state and counters.
  std::vector<backend_report> backends;
  offload::scheduler_stats routing{};
  double process_cpu_s = 0;  // CPU seconds of the whole process over the compress phase
};

/// A phase starts: what it is (codec and phase), how many phases are done and how many there are.
using progress_fn = std::function<void(const std::string& what, std::size_t done, std::size_t phases)>;

/// Runs the benchmark. Throws std::invalid_argument for an unknown codec, std::runtime_error
/// when a decoded record differs from its input (a codec bug: never reported as a figure).
std::vector<codec_result> run_bench(const corpus& c, const bench_options& o, const progress_fn& progress);

/// CPU seconds of the whole process so far (all threads).
double process_cpu_seconds();

/// The default codec list: every family at its useful levels, against the baseline.
std::vector<codec::spec> default_bench_codecs();

}  // namespace qzfs::cli
