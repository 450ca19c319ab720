#pragma once
// offload/: one unit of work for a backend, and the countdown a submitter waits on.
//
// A job names its input as a scatter-gather list of the submitter's buffers and its output as
// a caller-owned buffer with a hard capacity. A job compresses a record (`in`: its bytes; `out`:
// room for the payload, the result cap) or decompresses one (`in`: its payload, one buffer;
// `out`: exactly the record's logical size; ok only when the payload decodes to exactly that
// many bytes). Decoded bytes are checked by the submitter against the record's checksum before
// anyone sees them (store/): a backend's answer is never trusted on its own.
// The submitter keeps every buffer alive and untouched until the job's completion fires; a
// backend never touches them after that (an accelerator works on private copies, so a device
// that hangs or answers late cannot write into a buffer that was handed back).
//
// Thread-safety: a job is written by its submitter before submit and by exactly one backend
// thread until completion; completion is thread-safe.

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "qzfs/codec/codec.h"

namespace qzfs::offload {

/// Counts the unfinished jobs of a batch; wait() returns when all have completed.
class completion {
 public:
  void expect(std::size_t n) { pending_.fetch_add(static_cast<std::uint32_t>(n), std::memory_order_relaxed); }
  void done_one() {
    // The last one wakes the waiter (a futex on the counter: with a mutex and a condition
    // variable, the waiter woke only to block on the mutex still held by the notifier). The
    // waiter may return and free this object as soon as the count is 0; the wake-up after it
    // only names the address (libstdc++ reads nothing there), and a stray wake-up of whatever
    // lives there later is harmless to a futex waiter.
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_all();
  }
  void wait() {
    for (auto v = pending_.load(std::memory_order_acquire); v != 0; v = pending_.load(std::memory_order_acquire)) {
      pending_.wait(v, std::memory_order_acquire);
    }
  }

 private:
  std::atomic<std::uint32_t> pending_{0};
};

enum class direction : std::uint8_t { compress, decompress };

struct job {
  // --- set by the submitter
  codec::spec spec{};  // codec and level (decompress: spec.format alone matters)
  direction dir = direction::compress;
  bool timed = false;  // the submitter wants `ns` (two clock reads a job; auto learns from them)
  std::span<const iovec> in;
  std::span<std::byte> out;
  completion* done = nullptr;

  // --- set by whoever finished it
  codec::status st = codec::status::error;
  std::size_t out_size = 0;
  codec::producer_id producer = codec::producer_id::none;  // which implementation made the payload
  const char* ran_on = "";  // backend that produced the result
  std::uint64_t ns = 0;     // when timed: a CPU worker's CPU time on it (the codec call); else 0, and 0
                            // from an accelerator
  bool redone = false;      // an accelerator failed or timed out and the CPU redid it

  // --- the submitter's hook: runs on the finishing thread once the result is final, just
  // before `done` is told (the engine finishes its records there, in parallel)
  void (*then)(job&, void*) = nullptr;
  void* then_ctx = nullptr;

  // --- internal: the scheduler's hook, run before `done` (see scheduler.h)
  void (*on_finish)(job&, void*) = nullptr;
  void* on_finish_ctx = nullptr;

  /// Called by the backend that finished the job, exactly once.
  void finish() {
    if (on_finish != nullptr) {
      auto f = on_finish;
      on_finish = nullptr;
      f(*this, on_finish_ctx);
      return;
    }
    complete();
  }
  /// The result is final: the submitter's hook, then its completion.
  void complete() {
    if (then != nullptr) then(*this, then_ctx);
    if (done != nullptr) done->done_one();
  }
};

}  // namespace qzfs::offload
