#pragma once
// engine/: the compression service engine. For each record: skip what does not pay (zeros ->
// hole; the sampling checker says incompressible -> raw), choose codec and level by policy, send
// the work to the offload scheduler, and apply the result cap (a record that does not save
// `min_saving` is stored raw). Learns per file: after a run of records that passed the checker
// but did not fit, the expensive codec is preceded by an lz4 probe (which gives up at memory
// speed), so a file of incompressible records costs little, and a file whose records start to
// compress again is back at full strength on the first record that fits. It never gives up on a
// file for good.
//
// Output: the payload of each record in the caller's buffer, plus what was decided. Building
// the on-disk frame around it is the store's job (format/).
//
// Thread-safety: compress() may be called from many threads at once; file_learning is atomic.

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qzfs/engine/checker.h"
#include "qzfs/offload/job.h"

namespace qzfs::offload {
class scheduler;  // offload/scheduler.h: engine.h shows no threads or devices
}

namespace qzfs::engine {

enum class policy_kind : std::uint8_t { off, lz4, gzip, zstd, automatic };

struct policy {
  policy_kind kind = policy_kind::automatic;
  int level = 0;  // gzip and zstd; 0 = that codec's default
  friend bool operator==(const policy&, const policy&) = default;
};
/// "off", "lz4", "gzip", "gzip-N" (1-12), "zstd", "zstd-N" (1-19), "zstd-fast-N", "auto". The
/// codec names mean what they mean everywhere (the codec table): gzip is gzip-1, zstd is zstd-3.
[[nodiscard]] std::optional<policy> parse_policy(std::string_view text) noexcept;
[[nodiscard]] std::string to_string(const policy& p);
/// The codec a fixed policy compresses with (none for off and auto).
[[nodiscard]] codec::spec spec_of(const policy& p) noexcept;
/// The policy and the codec and level it means: "gzip, which is gzip-1", "zstd-5", "auto".
[[nodiscard]] std::string describe(const policy& p);
/// One line for --help and messages: the policies and what gzip and zstd alone mean.
[[nodiscard]] std::string policy_help();
/// zstd levels above this need up to 1 GiB per context and worker: not offered as a policy.
inline constexpr int max_policy_zstd_level = 19;

/// `auto`'s estimates of its four candidates (lz4, gzip-1, zstd-1, zstd-3) on some records: a
/// class of the mount's records, or one file's (docs/ENGINE.md "auto"). Guarded by its owner.
struct auto_table {
  struct slot {
    double ns_per_byte = 0, stored_per_byte = 0;  // moving averages
    std::uint64_t samples = 0, last = 0;          // last: `seq` when it was last chosen
  };
  std::array<slot, 4> est{};
  std::uint64_t seq = 0;  // records chosen
  /// The candidate (index) for the next record, counting it: one not measured yet, every 16th
  /// record the one chosen least recently, else the cheapest; 4 when none is measured and none
  /// is left to try (every candidate's first record in flight).
  [[nodiscard]] std::size_t pick(double stored_weight) noexcept;
  /// One record's measurement of candidate k.
  void fold(std::size_t k, double ns_per_byte, double stored_per_byte) noexcept;
};

/// Per-file counters and the learned state (visible in statistics).
struct file_learning {
  std::atomic<std::uint64_t> records{0}, holes{0}, compressed{0}, raw_checker{0}, raw_cap{0}, raw_probe{0},
      raw_policy{0}, probes{0};
  std::atomic<std::uint32_t> streak{0};  // records in a row that passed the checker but did not fit
  static constexpr std::uint32_t probe_after = 8;
  // auto: from the file's 9th record on, its own estimates (a large file is one kind of data;
  // the mount's mix of small files is not), under auto_m.
  std::mutex auto_m;
  auto_table auto_est;
  static constexpr std::uint64_t own_after = 8;
};

enum class outcome : std::uint8_t {
  hole,        // all zeros: nothing stored
  raw,         // stored as it is (policy off, checker, probe, or did not save enough)
  compressed,  // payload holds the compressed record
};

struct record;

/// Where a record's final outcome goes. record_done() runs once per record, on whichever thread
/// made the outcome final: the submitter for holes and raw records, a backend's worker for
/// compressed ones (so what it does, e.g. the store's frame write, runs in parallel with the
/// other records), before compress() or wait() returns. It must not throw, must not touch other
/// records, and should not block for long (it holds a worker).
class record_sink {
 public:
  virtual void record_done(record& r) noexcept = 0;

 protected:
  ~record_sink() = default;
};

struct record {
  // --- in
  std::span<const iovec> in;
  std::span<std::byte> payload;  // at least the record's size; the codec gets `cap` of it
  // --- out
  outcome result = outcome::raw;
  std::size_t payload_size = 0;     // compressed: bytes in payload
  codec::spec spec{};               // compressed: what made it
  codec::producer_id producer = codec::producer_id::none;
  const char* ran_on = "";          // backend
  enum class why : std::uint8_t { none, zeros, policy_off, checker, probe, cap, error } reason = why::none;
  // --- optional: told once the outcome is final (see record_sink)
  record_sink* sink = nullptr;
};

struct engine_options {
  policy pol;
  double min_saving = 0.10;  // the paper's result buffer: save at least 10% or store raw
  bool checker = true;       // false: every record goes to its codec (benchmarks: what the checker saves)
};

/// What `auto` knows of a candidate codec for one checker class: its recent records' CPU time
/// per byte (a worker's time on the codec call) and bytes stored per byte (1 for a record that
/// did not save enough), moving averages over about the last 8 records it compressed.
struct auto_estimate {
  codec::spec spec;
  double ns_per_byte = 0, stored_per_byte = 0;
  std::uint64_t samples = 0;
  double stored_weight = 0;  // ns of CPU a stored byte was worth when the estimates were read
  /// What auto minimizes: the CPU time of a byte plus what storing its output is worth in CPU
  /// time (docs/ENGINE.md "auto").
  [[nodiscard]] double cost() const noexcept { return ns_per_byte + stored_weight * stored_per_byte; }
};

struct engine_stats {
  std::uint64_t records = 0, holes = 0, raw = 0, compressed = 0, checker_skips = 0, probe_skips = 0,
                cap_misses = 0, errors = 0, bytes_in = 0, bytes_out = 0;
  std::array<std::uint64_t, codec::payload_format_count> per_format{};  // compressed records by payload format
  std::array<std::uint64_t, codec::producer_count> per_producer{};        // ... by the implementation that made them
};

/// What is decided with no engine at all (a store opened without one: tools and tests): zeros
/// become a hole, anything else is stored raw; each record's sink is told on the calling thread.
void decide_without_codec(std::span<record> batch) noexcept;

class engine {
 public:
  engine(offload::scheduler& sched, engine_options o);
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;
  /// Decides and compresses every record of the batch; returns when all are done. The records
  /// that need a codec are submitted together once all are checked.
  void compress(std::span<record> batch, file_learning* learning = nullptr);

  /// A batch in flight (submit() ... wait()); holds what the workers refer to. Keep it, and the
  /// batch's records and buffers, alive and in place until wait() returns.
  struct pending {
    struct finisher {
      engine* e;
      record* r;
      file_learning* fl;
      std::int8_t cls;  // auto: the checker class it was measured for (-1: not measured)
      bool by_file;     // auto: the file's own estimates chose it
    };
    std::vector<offload::job> jobs;
    std::vector<offload::job*> ready;  // the jobs that go to a backend
    std::vector<finisher> fin;
    offload::completion done;
  };
  /// compress() in two halves: submit() decides and submits every record (sinks may be told
  /// before it returns), wait() returns when all are done.
  void submit(std::span<record> batch, file_learning* learning, pending& p);
  void wait(pending& p) { p.done.wait(); }
  /// A decompression job (offload/job.h: spec.format, the payload in one buffer, exactly the
  /// record's size out) to the accelerator or a CPU worker, by the scheduler's rules; `c` counts
  /// it. The caller checks the decoded record against its checksum (store/ reads several
  /// records of a read at once this way).
  void submit_decode(offload::job& j, offload::completion& c);
  /// An accelerator that decodes gzip records of `record_size` bytes is serving: reads hand
  /// their gzip records to the scheduler. (QZFS_DECODE_JOBS=1 in the environment: always, to the
  /// CPU workers too; =0: never.) Reads decode every record themselves otherwise.
  [[nodiscard]] bool decodes_offloaded(std::size_t record_size) const noexcept;
  /// The codec `auto` picks now for a record the checker judged `c` (exposed for tests). For
  /// auto, each call counts: every 16th record of a class tries the candidate chosen least
  /// recently.
  /// `*by_file` (when given) tells whether the file's own estimates chose (its measurement then
  /// goes to them: note_cost with the file).
  [[nodiscard]] codec::spec choose(compressibility c, file_learning* fl = nullptr, bool* by_file = nullptr) noexcept;
  /// auto's estimates for records of class `c`, one per candidate (lz4, gzip-1, zstd-1, zstd-3).
  [[nodiscard]] std::vector<auto_estimate> auto_estimates(compressibility c) const;
  /// What auto counts a stored byte as, in ns of CPU: 20 while the CPU workers are busy, up to
  /// 5x that while they are mostly idle (the writer waits on something else: CPU spent on a
  /// denser codec costs it nothing). Read from the workers' busy time every 100 ms.
  [[nodiscard]] double stored_weight() noexcept;
  /// Feeds auto a measurement (the engine does this for every job a CPU worker finished): to the
  /// file's estimates when `fl` is given, else to the mount's.
  void note_cost(compressibility c, const codec::spec& s, std::size_t in, std::size_t stored, std::uint64_t ns,
                 file_learning* fl = nullptr) noexcept;
  [[nodiscard]] engine_stats stats() const noexcept;
  [[nodiscard]] const engine_options& options() const noexcept { return o_; }
  /// CPU workers behind this engine (callers size their batches by it).
  [[nodiscard]] unsigned workers() const noexcept;
  /// The CPU workers leave a core free: a thread that submitted a batch may do the batch's
  /// follow-up work (the store's frames) itself while it waits, instead of a worker doing it.
  [[nodiscard]] bool spare_core() const noexcept;

 private:
  void finish_record(record& r, const offload::job& j, file_learning* fl, std::int8_t cls, bool by_file) noexcept;

  struct auto_state;  // engine.cc: auto's estimates, under their own lock
  std::unique_ptr<auto_state> auto_;
  offload::scheduler& sched_;
  engine_options o_;
  codec::spec fixed_{};  // the spec of a non-auto policy
  std::atomic<std::uint64_t> records_{0}, holes_{0}, raw_{0}, compressed_{0}, checker_{0}, probe_{0}, cap_{0},
      errors_{0}, bytes_in_{0}, bytes_out_{0};
  std::array<std::atomic<std::uint64_t>, codec::payload_format_count> per_format_{};
  std::array<std::atomic<std::uint64_t>, codec::producer_count> per_producer_{};
};

}  // namespace qzfs::engine
