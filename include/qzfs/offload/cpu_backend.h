#pragma once
// offload/: the CPU backend, a fixed pool of workers over the codec layer. Each worker owns its
// codec contexts (a codec::workspace); the queue is bounded, and submit() blocks while it is
// full (backpressure on the writer) until the workers have taken half of it. It never fails a
// job: a codec error is a result (error), not a lost job.
//
// Thread-safety: all members may be called from any thread.

#include <condition_variable>
#include <deque>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "qzfs/codec/workspace.h"
#include "qzfs/offload/backend.h"

namespace qzfs::offload {

class cpu_backend final : public backend {
 public:
  struct options {
    unsigned workers = 0;            // 0: one per core
    std::size_t queue_capacity = 0;  // 0: 4 per worker
    std::size_t max_record = codec::default_max_input;
  };
  explicit cpu_backend(options o);
  ~cpu_backend() override;  // finishes every queued job, then joins
  cpu_backend(const cpu_backend&) = delete;
  cpu_backend& operator=(const cpu_backend&) = delete;

  std::string_view name() const noexcept override { return "cpu"; }
  bool try_submit(job& j) noexcept override;
  /// Takes the job, waiting while the queue is full.
  void submit(job& j);
  /// Takes every job, in order, under as few locks and wake-ups as the queue's room allows.
  void submit_all(std::span<job* const> js);
  std::size_t queue_depth() const noexcept override;
  [[nodiscard]] unsigned workers() const noexcept { return static_cast<unsigned>(threads_.size()); }
  [[nodiscard]] std::size_t capacity() const noexcept { return o_.queue_capacity; }
  /// The most jobs ever queued at once (never above capacity()).
  [[nodiscard]] std::size_t peak_depth() const noexcept;

  /// Runs one job on the calling thread with `ws` (shared by the workers and by callers that
  /// want to do small jobs inline).
  static void run(job& j, codec::workspace& ws) noexcept;

 private:
  void work();

  options o_;
  mutable std::mutex m_;  // lock order: leaf (never held while running a job)
  std::condition_variable not_empty_, not_full_;
  std::size_t low_water() const noexcept { return o_.queue_capacity / 2; }

  std::deque<job*> q_;
  std::size_t blocked_ = 0;     // submitters waiting for room
  std::size_t peak_depth_ = 0;
  bool stop_ = false;
  std::vector<std::jthread> threads_;
};

}  // namespace qzfs::offload
