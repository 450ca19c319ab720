#pragma once
// offload/: an accelerator as a backend: a few device sessions, each driven by its own thread,
// a bounded set of in-flight jobs ("tickets") and a line of jobs waiting for one (no copy made
// until a ticket is theirs; one that waits longer than the timeout goes back to the CPU without
// a teardown: the device is busy, not broken), output
// verification, a watchdog, and a health
// state machine: up -> (error, timeout or bad output) -> down: sessions torn down, queued jobs
// and the line handed back at once, re-probed with exponential backoff -> up again. A device that cannot work
// here (no library, no hardware) is `unavailable` and never probed again.
//
// No job is lost and none is written wrong: a ticket holds private copies of the input and the
// output; a result reaches the job only if the device answered in time, with ok or
// does_not_fit, and (when ok) the member decodes to exactly the input (verify_mode::full) or its
// CRC-32 and ISIZE match the input (verify_mode::crc). A decompression's result reaches the job
// only when it is exactly the record's size and its CRC-32 is the one the member's footer holds
// (either mode); its submitter checks the record's own checksum as well. Any other outcome finishes the job with
// status::error, which the scheduler turns into a redo on the CPU.
//
// Thread-safety: all members may be called from any thread.

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "qzfs/codec/workspace.h"
#include "qzfs/offload/backend.h"
#include "qzfs/offload/device.h"

namespace qzfs::offload {

class accel_backend final : public backend {
 public:
  enum class verify_mode : std::uint8_t { full, crc };
  struct options {
    unsigned sessions = 1;           // device sessions, one thread each
    std::size_t queue_capacity = 0;  // jobs in flight at most (0: 4 per session)
    std::size_t min_record = 4096;   // smaller records never go to the device
    std::size_t max_record = 128 * 1024;
    std::chrono::milliseconds timeout{2000};
    std::chrono::milliseconds backoff_initial{100}, backoff_max{30000};
    verify_mode verify = verify_mode::full;
    // Tests only: a worker calls this right after it has taken a ticket off the queue and
    // dropped the lock, before it starts the ticket (to hold it there while the watchdog looks).
    std::function<void()> after_pop;
  };
  accel_backend(std::unique_ptr<device> dev, options o);
  ~accel_backend() override;
  accel_backend(const accel_backend&) = delete;
  accel_backend& operator=(const accel_backend&) = delete;

  std::string_view name() const noexcept override { return name_; }
  /// True for the jobs this backend can do at all: gzip compression of a record in the window,
  /// and (when its device decompresses) gzip decompression of one member into such a record.
  [[nodiscard]] bool accepts(const job& j) const noexcept;
  [[nodiscard]] bool decompresses() const noexcept { return decompresses_; }
  /// Records of this many bytes are inside its size window.
  [[nodiscard]] bool decodes_records_of(std::size_t bytes) const noexcept {
    return bytes >= o_.min_record && bytes <= o_.max_record;
  }
  /// Takes the job into a free ticket, or refuses it (backend contract).
  bool try_submit(job& j) noexcept override;
  /// Takes the job while fewer than `max_depth` jobs are in its tickets or in line: into a free
  /// ticket, else in line for the next ticket that comes free (no copy until then; after the
  /// timeout in line it is failed back, to be redone on the CPU; in a ticket the device has the
  /// timeout again). False, untouched, when that many are there or it is not serving.
  /// `*lined` (when given) tells whether it went in line.
  bool submit(job& j, std::size_t max_depth, bool* lined = nullptr) noexcept;
  /// submit() once fewer than `max_depth` jobs are in its tickets or in line, waiting for that
  /// until `until`; false when no place came free in time or it stopped serving (untouched).
  bool submit_by(job& j, std::chrono::steady_clock::time_point until, std::size_t max_depth,
                 bool* lined = nullptr) noexcept;
  std::size_t queue_depth() const noexcept override;
  std::uint64_t device_cpu_ns() const noexcept override { return dev_->cpu_ns(); }
  [[nodiscard]] std::size_t capacity() const noexcept { return tickets_.size(); }
  [[nodiscard]] unsigned sessions() const noexcept { return o_.sessions; }
  /// A modelled card: the recent time per job this machine took beyond the modelled time
  /// (moving average, as service times); 0 for a real device. A place in its queue comes free
  /// that much later than the card itself would free it.
  [[nodiscard]] std::uint64_t emulation_excess_ns() const noexcept { return excess_avg_.load(std::memory_order_relaxed); }
  /// Jobs that waited in line for a ticket.
  [[nodiscard]] std::uint64_t lined() const noexcept { return waited_.load(std::memory_order_relaxed); }
  /// Re-probe now if down (tests; the watchdog does it by itself with backoff).
  void probe_now();

 private:
  struct ticket;
  void work(unsigned idx);
  void watchdog();
  void probe();
  void mark_down(const std::string& why);
  void fail(job& j);  // the job ends with status::error (the scheduler redoes it on the CPU)
  void release(ticket& t);  // frees the ticket, or starts the next job in line in it
  void start(ticket& t, job& j) noexcept;  // copies the job in, queues the ticket
  void cancel_queued();
  bool verify(const ticket& t, std::size_t size, codec::workspace& ws, std::byte* scratch) const noexcept;

  std::unique_ptr<device> dev_;
  options o_;
  std::string name_;
  bool decompresses_ = false;  // the device decodes members too
  std::vector<std::unique_ptr<ticket>> tickets_;

  mutable std::mutex m_;  // lock order: m_ before sessions_m_; never held while a job finishes
  std::condition_variable work_cv_, dog_cv_, free_cv_;  // free_cv_: a ticket came free (submit_by)
  unsigned free_waiters_ = 0;  // guarded by m_: callers in submit_by
  std::deque<ticket*> q_;
  using clock_type_rep = std::chrono::steady_clock::rep;
  std::deque<std::pair<job*, clock_type_rep>> backlog_;  // in line for a ticket, with deadlines
  std::vector<ticket*> free_;
  bool stop_ = false;
  bool dog_idle_ = false;                 // the watchdog sleeps with nothing in flight
  std::uint64_t gen_ = 1;                 // bumped at every teardown; sessions of older gens are closed
  std::chrono::steady_clock::time_point next_probe_{};
  std::chrono::milliseconds backoff_;
  std::uint64_t ok_streak_ = 0;
  std::atomic<std::uint64_t> excess_avg_{0};
  std::atomic<std::uint64_t> waited_{0};  // jobs that went in line

  std::mutex sessions_m_;  // lock order: after m_
  std::vector<device_session*> sessions_;  // each worker's live session, for abort()

  std::vector<std::jthread> threads_;
};

/// Throws std::invalid_argument, naming `option`, unless `spec` is one make_accel() takes.
void check_accel_spec(const std::string& spec, std::string_view option);

/// The accelerator a user names: "cpu" (none: null), "qat" or "auto" (QAT through QATzip,
/// `qatzip_lib` or the default library), "fault:SPEC" (the software device with faults injected,
/// see parse_fault_spec), "fault-qat:SPEC" (faults in front of QAT), "model" or "model:SPEC" (a
/// modelled QAT card, see parse_model_spec; fault keys in SPEC wrap it in a fault_device; one
/// session per instance). `verify` is "full" or "crc".
/// Throws std::invalid_argument for a bad spec.
[[nodiscard]] std::unique_ptr<accel_backend> make_accel(const std::string& spec, const std::string& qatzip_lib,
                                                        std::size_t max_record, const std::string& verify);

}  // namespace qzfs::offload
