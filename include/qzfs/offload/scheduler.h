#pragma once
// offload/: sends each job to the best backend that can take it, and makes sure it finishes.
//
// Routing (the paper's offload module):
// - decompression jobs (store/'s reads of several records) go to the accelerator when its device
//   decodes gzip, it is up, the record is inside its size window and the rule below holds;
//   otherwise to the CPU pool. A decode the device fails is redone on the CPU like any job; no
//   record ever needs the accelerator to be read;
// - gzip compression goes to the accelerator when it is up, the record is inside its size
//   window (small records never go there), fewer than `overflow_depth` jobs are there (in its
//   tickets or in line for one), and it would finish the job no later than `accel_bias` times
//   when the CPU pool would (expected finish = (jobs there + 1) x mean service time / parallel
//   sessions, from each backend's own counters; the CPU's depth includes the jobs of the batch
//   being routed that went to it); otherwise, or when it refuses, the CPU takes the job. When
//   `overflow_depth` jobs are there but the rule still holds, the job waits for a place, at most
//   `accel_bias` times the CPU's expected finish (at most 1 s; after the CPU has been given its
//   share of the batch so far): a card much faster than the cores is never short of places for
//   long and takes nearly everything, as it should, while a saturated one keeps its places past
//   the wait and the job overflows. So the CPU shares the load when the device is saturated,
//   and a device that has become slow gets only what the CPU cannot absorb instead of holding
//   every batch back. A modelled card is judged as the card it stands for: its queue and its
//   waits leave out the time this machine takes to compute for it (docs/QAT.md, "Routing");
// - a job the accelerator fails (error, timeout, output that does not verify) is redone on the
//   CPU, counted, and finishes normally: the submitter sees only ok or does_not_fit (or the CPU
//   codec's own error, which never comes from a valid spec).
//
// Thread-safety: submit() and run() may be called from any thread.

#include <atomic>
#include <chrono>
#include <span>

#include "qzfs/offload/accel_backend.h"
#include "qzfs/offload/cpu_backend.h"

namespace qzfs::offload {

struct scheduler_stats {
  std::uint64_t to_accel = 0;   // jobs the accelerator took
  std::uint64_t to_cpu = 0;     // jobs sent straight to the CPU
  std::uint64_t small = 0;      // ... of which: outside the accelerator's size window
  std::uint64_t overflow = 0;   // ... of which: accelerator saturated or refusing
  std::uint64_t not_serving = 0; // ... of which: accelerator down or unavailable
  std::uint64_t redone = 0;     // accelerator failures redone on the CPU
  std::uint64_t waited = 0;     // of to_accel: jobs that waited for a place in its full queue
  // Decompression jobs (counted apart from the compression jobs above)
  std::uint64_t decode_to_accel = 0, decode_to_cpu = 0, decode_redone = 0;
};

class scheduler {
 public:
  struct options {
    std::size_t overflow_depth = 0;  // jobs at the accelerator (in its tickets or in line for one) that send
                                     // new work to the CPU (0: 4 x its tickets)
    double accel_bias = 16.0;        // how much later than the CPU the accelerator may finish a job
  };
  scheduler(cpu_backend& cpu, accel_backend* accel, options o);
  scheduler(cpu_backend& cpu, accel_backend* accel) : scheduler(cpu, accel, options{}) {}

  /// Queues `j`; `c` counts it and is told when it is done. Blocks while the CPU queue is full.
  void submit(job& j, completion& c);
  /// Queues every job of `js` the same way (the CPU's share a CPU queueful at a time, each under
  /// one lock and wake-up). Reorders `js`: the CPU's share ends up in front.
  void submit(std::span<job*> js, completion& c);
  /// Runs a batch and returns when every job has finished.
  void run(std::span<job> batch);

  [[nodiscard]] scheduler_stats stats() const noexcept;
  [[nodiscard]] cpu_backend& cpu() noexcept { return cpu_; }
  [[nodiscard]] accel_backend* accel() noexcept { return accel_; }

 private:
  using clock_type = std::chrono::steady_clock;
  enum class route_to : std::uint8_t { accel, cpu, wait };
  static void after_accel(job& j, void* self);
  /// Sets `j` up for `c`: accel when the accelerator took it, cpu when it is the CPU's (counted
  /// either way), wait when it should wait for a place at the accelerator until `wait_until`
  /// (then wait_for_accel()). `cpu_ahead`: jobs of the same batch already given to the CPU but
  /// not queued there yet.
  route_to route(job& j, completion& c, std::size_t cpu_ahead, clock_type::time_point& wait_until);
  /// After route() said wait: true when the accelerator took `j` in time; else it is the CPU's.
  bool wait_for_accel(job& j, clock_type::time_point until);
  route_to route_decode(job& j, std::size_t cpu_ahead, clock_type::time_point& wait_until);
  /// A job the accelerator accepts, offered to it by the expected-finish rule: taken (accel),
  /// worth waiting for a place until `wait_until` (wait), or the CPU's (on_finish cleared).
  route_to offer(job& j, std::size_t cpu_ahead, clock_type::time_point& wait_until);

  cpu_backend& cpu_;
  accel_backend* accel_;
  std::size_t overflow_depth_;
  double accel_bias_;
  /// The accelerator's expected finish against the CPU's: -1 when the CPU should take the job;
  /// else how long (ns) it is worth waiting for a place at the accelerator (0: do not wait).
  [[nodiscard]] double accel_wait_ns(std::size_t cpu_ahead) const noexcept;
  std::atomic<std::uint64_t> to_accel_{0}, to_cpu_{0}, small_{0}, overflow_{0}, not_serving_{0}, redone_{0}, waited_{0};
  std::atomic<std::uint64_t> decode_accel_{0}, decode_cpu_{0}, decode_redone_{0};
};

}  // namespace qzfs::offload
