#pragma once
// store/: one memory budget for the record buffers of every open file (docs/STORE.md "Memory").
//
// What counts: dirty records (written, not yet compressed), clean records kept for reads
// (partial reads and read-ahead), frame buffers of batches in flight, and the free buffers a file
// keeps for reuse. Every such buffer is a `buffer`, charged to its file's `account` (and through
// it to the budget) from allocation to release, so `used()` is what those buffers hold.
//
// Enforcement: a file over the budget writes back its own dirty records at once and keeps no
// clean ones; a writer that finds the budget exceeded before it starts asks the other files,
// largest first, to shed (drop clean records and spare buffers, write back dirty ones) until the
// budget is met. So the total stays within the limit plus what the writers in progress hold
// (one batch each).
//
// Thread-safety: all members may be called from any thread. relieve() must be called without
// any lock of a file held (it calls into other files).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace qzfs::store {

class file;

class memory_budget {
 public:
  explicit memory_budget(std::uint64_t limit) : limit_(limit) {}
  memory_budget(const memory_budget&) = delete;
  memory_budget& operator=(const memory_budget&) = delete;

  [[nodiscard]] std::uint64_t limit() const noexcept { return limit_; }
  [[nodiscard]] std::uint64_t used() const noexcept { return used_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t peak() const noexcept { return peak_.load(std::memory_order_relaxed); }
  [[nodiscard]] bool over() const noexcept { return used() > limit_; }
  /// Times relieve() made other files shed.
  [[nodiscard]] std::uint64_t reliefs() const noexcept { return reliefs_.load(std::memory_order_relaxed); }

  void charge(std::uint64_t n) noexcept;
  void release(std::uint64_t n) noexcept { used_.fetch_sub(n, std::memory_order_relaxed); }

  /// Files that can be asked to shed. A file enrolls when it opens and withdraws before it is
  /// destroyed (withdraw waits for a relief in progress).
  void enroll(file* f);
  void withdraw(file* f);
  /// Asks the enrolled files other than `self`, largest first, to shed until the budget is met.
  void relieve(const file* self);

 private:
  const std::uint64_t limit_;
  std::atomic<std::uint64_t> used_{0}, peak_{0}, reliefs_{0};
  std::mutex m_;  // the registry; held while files shed
  std::vector<file*> files_;
};

/// One file's share of a budget (or of none: `budget` null counts only locally).
struct account {
  memory_budget* budget = nullptr;
  std::atomic<std::uint64_t> used{0};
  void charge(std::uint64_t n) noexcept {
    used.fetch_add(n, std::memory_order_relaxed);
    if (budget != nullptr) budget->charge(n);
  }
  void release(std::uint64_t n) noexcept {
    used.fetch_sub(n, std::memory_order_relaxed);
    if (budget != nullptr) budget->release(n);
  }
  [[nodiscard]] bool over() const noexcept { return budget != nullptr && budget->over(); }
};

/// Frees a charged buffer and gives its bytes back.
struct charged_delete {
  account* to = nullptr;
  std::size_t n = 0;
  void operator()(std::byte* p) const noexcept {
    delete[] p;
    if (to != nullptr) to->release(n);
  }
};
using buffer = std::unique_ptr<std::byte[], charged_delete>;

/// `n` uninitialised bytes charged to `a`.
[[nodiscard]] inline buffer charged_buffer(account& a, std::size_t n) {
  buffer b(new std::byte[n], charged_delete{&a, n});
  a.charge(n);
  return b;
}

}  // namespace qzfs::store
