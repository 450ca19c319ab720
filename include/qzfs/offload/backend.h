#pragma once
// offload/: a place where jobs run. Backends: `cpu` (a worker pool over the codec layer, the one
// that never fails), and accelerators (accel_backend over a device: QAT through QATzip, or the
// fault-injecting device for tests and rehearsals).
//
// Contract: try_submit() either takes the job (it will call job.finish() exactly once, from one
// of its threads, with a result: ok, does_not_fit, corrupt or error) or refuses it at once
// (queue full, backend not up) and leaves it untouched. close() finishes every job it took.
//
// Thread-safety: every member is safe to call from any thread.

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "qzfs/offload/job.h"

namespace qzfs::offload {

enum class health : std::uint8_t {
  up,           // takes jobs
  degraded,     // takes jobs; back from a failure, until it has done 100 jobs in a row well
  down,         // failed; torn down; re-probed later
  unavailable,  // cannot work here (no library, no device); not re-probed
};
[[nodiscard]] inline std::string_view to_string(health h) noexcept {
  switch (h) {
    case health::up: return "up";
    case health::degraded: return "degraded";
    case health::down: return "down";
    case health::unavailable: return "unavailable";
  }
  return "unknown";
}

struct backend_stats {
  std::uint64_t submitted = 0;  // jobs taken
  std::uint64_t completed = 0;  // jobs finished with a result from this backend (ok or does_not_fit)
  std::uint64_t failed = 0;     // jobs it failed (error, timeout, bad output) or handed back unstarted
                                // when it went down: all redone elsewhere
  std::uint64_t bytes_in = 0, bytes_out = 0;  // of compression jobs
  std::uint64_t busy_ns = 0;    // time its threads spent working
  std::uint64_t service_ns = 0; // recent time per finished job (moving average; 0: none yet)
  std::uint64_t queue_depth = 0;
  std::uint64_t probes = 0, teardowns = 0;
  std::uint64_t device_cpu_ns = 0;  // CPU time of a modelled device's own threads (not the host's)
  std::uint64_t device_ns = 0;      // the device's own time on the jobs it finished (a modelled card:
                                    // its modelled time; without this machine's overruns)
  std::uint64_t emulation_ns = 0;   // a modelled card: time its jobs took beyond the modelled time
                                    // because this machine computed them slower (overruns)
  std::uint64_t decompressed = 0;   // of completed: decompression jobs that decoded their record
  std::uint64_t decompressed_bytes = 0;  // ... and the bytes they decoded
};

class backend {
 public:
  virtual ~backend() = default;
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;
  /// Takes the job, or returns false at once without touching it.
  [[nodiscard]] virtual bool try_submit(job& j) noexcept = 0;
  [[nodiscard]] virtual std::size_t queue_depth() const noexcept = 0;
  [[nodiscard]] backend_stats stats() const noexcept {
    auto ld = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
    return {ld(submitted_), ld(completed_), ld(failed_), ld(bytes_in_), ld(bytes_out_), ld(busy_ns_),
            ld(service_ns_), queue_depth(), ld(probes_), ld(teardowns_), device_cpu_ns(), ld(device_ns_),
            ld(emulation_ns_), ld(decompressed_), ld(decompressed_bytes_)};
  }
  /// CPU time spent on this machine by threads that stand for a device's hardware (a modelled
  /// card): counted apart from the host's. 0 for the CPU pool and for real devices.
  [[nodiscard]] virtual std::uint64_t device_cpu_ns() const noexcept { return 0; }
  [[nodiscard]] health state() const noexcept { return health_.load(std::memory_order_acquire); }
  /// Time its threads have spent working (one counter; stats() reads them all).
  [[nodiscard]] std::uint64_t busy_ns() const noexcept { return busy_ns_.load(std::memory_order_relaxed); }
  /// Up or degraded: it takes jobs.
  [[nodiscard]] bool serving() const noexcept {
    auto h = state();
    return h == health::up || h == health::degraded;
  }
  [[nodiscard]] std::string reason() const {
    std::lock_guard lk(reason_m_);
    return reason_;
  }

 protected:
  void set_health(health h, std::string why) {
    {
      std::lock_guard lk(reason_m_);
      reason_ = std::move(why);
    }
    health_.store(h, std::memory_order_release);
  }

 protected:
  /// Folds one job's service time into the moving average (1/8 weight: the last ~8 jobs).
  void note_service(std::uint64_t ns) noexcept {
    auto old = service_ns_.load(std::memory_order_relaxed);
    const auto v = old == 0 ? ns : old - old / 8 + ns / 8;
    service_ns_.store(v, std::memory_order_relaxed);  // a lost update among racing workers is harmless
  }
  void forget_service() noexcept { service_ns_.store(0, std::memory_order_relaxed); }
  // The counters of backend_stats, kept by the backends.
  std::atomic<std::uint64_t> submitted_{0}, completed_{0}, failed_{0}, bytes_in_{0}, bytes_out_{0}, busy_ns_{0},
      service_ns_{0}, probes_{0}, teardowns_{0}, device_ns_{0}, emulation_ns_{0}, decompressed_{0},
      decompressed_bytes_{0};

 private:
  std::atomic<health> health_{health::down};
  mutable std::mutex reason_m_;  // lock order: leaf
  std::string reason_;
};

}  // namespace qzfs::offload
