#include "qzfs/offload/cpu_backend.h"

#include <pthread.h>

#include <time.h>

#include <algorithm>
#include <chrono>

#include "qzfs/codec/workspace.h"

namespace qzfs::offload {
namespace {
std::uint64_t thread_cpu_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}
}  // namespace

cpu_backend::cpu_backend(options o) : o_(o) {
  if (o_.workers == 0) o_.workers = std::max(1u, std::thread::hardware_concurrency());
  if (o_.queue_capacity == 0) o_.queue_capacity = 4 * o_.workers;
  for (unsigned i = 0; i < o_.workers; ++i) threads_.emplace_back([this] { work(); });
  set_health(health::up, "");
}

cpu_backend::~cpu_backend() {
  {
    std::lock_guard lk(m_);
    stop_ = true;
  }
  not_empty_.notify_all();
  threads_.clear();  // joins; workers drain the queue first
}

bool cpu_backend::try_submit(job& j) noexcept {
  {
    std::lock_guard lk(m_);
    if (stop_ || q_.size() >= o_.queue_capacity) return false;
    q_.push_back(&j);
    peak_depth_ = std::max(peak_depth_, q_.size());
  }
  submitted_.fetch_add(1, std::memory_order_relaxed);
  not_empty_.notify_one();
  return true;
}

void cpu_backend::submit(job& j) {
  job* one = &j;
  submit_all(std::span(&one, 1));
}

void cpu_backend::submit_all(std::span<job* const> js) {
  // One lock and one wake-up per batch, not per job: a FUSE request brings eight records, and
  // the workers popping meanwhile made every extra acquisition a likely futex wake-up.
  std::size_t i = 0;
  while (i < js.size()) {
    std::size_t pushed = 0;
    bool pass_on;
    {
      std::unique_lock lk(m_);
      if (q_.size() >= o_.queue_capacity) {
        // Full: wait until the workers have taken half of it, then fill it again. Woken at every
        // free slot instead, a writer with a batch of records (and the worker that woke it) would
        // switch once per record.
        ++blocked_;
        not_full_.wait(lk, [&] { return q_.size() <= low_water(); });
        --blocked_;
      }
      for (; i < js.size() && q_.size() < o_.queue_capacity; ++i, ++pushed) q_.push_back(js[i]);
      peak_depth_ = std::max(peak_depth_, q_.size());
      // Room left and writers still asleep (this one may have had a single job): wake the next.
      pass_on = blocked_ > 0 && q_.size() <= low_water();
    }
    submitted_.fetch_add(pushed, std::memory_order_relaxed);
    if (pass_on) not_full_.notify_one();
    if (pushed >= threads_.size()) {
      not_empty_.notify_all();
    } else {
      for (std::size_t k = 0; k < pushed; ++k) not_empty_.notify_one();
    }
  }
}

std::size_t cpu_backend::peak_depth() const noexcept {
  std::lock_guard lk(m_);
  return peak_depth_;
}

std::size_t cpu_backend::queue_depth() const noexcept {
  std::lock_guard lk(m_);
  return q_.size();
}


void cpu_backend::run(job& j, codec::workspace& ws) noexcept {
  j.ran_on = "cpu";
  j.ns = 0;
  j.out_size = 0;
  try {
    if (j.dir == direction::decompress) {
      // One payload in one buffer (a frame read whole); exactly the record's size out.
      j.producer = codec::producer_id::none;
      if (j.in.size() != 1) {
        j.st = codec::status::error;
        return;
      }
      j.st = ws.decompress(j.spec.format, {static_cast<const std::byte*>(j.in[0].iov_base), j.in[0].iov_len}, j.out);
      j.out_size = j.st == codec::status::ok ? j.out.size() : 0;
      return;
    }
    auto r = ws.compress(j.spec, j.in, j.out);
    j.st = r.st;
    j.out_size = r.st == codec::status::ok ? r.size : 0;
    j.producer = j.spec.producer;
  } catch (...) {  // a context could not be made (bad spec, out of memory)
    j.st = codec::status::error;
  }
}

void cpu_backend::work() {
  pthread_setname_np(pthread_self(), "qzfs-cpu");  // top -H, /proc/PID/task/*/comm
  codec::workspace ws(o_.max_record);
  for (;;) {
    job* j;
    bool wake;
    {
      std::unique_lock lk(m_);
      not_empty_.wait(lk, [&] { return stop_ || !q_.empty(); });
      if (q_.empty()) return;  // stop_ and drained
      j = q_.front();
      q_.pop_front();
      wake = blocked_ > 0 && q_.size() == low_water();
    }
    if (wake) not_full_.notify_one();
    auto t0 = std::chrono::steady_clock::now();
    const std::uint64_t cpu0 = j->timed ? thread_cpu_ns() : 0;
    run(*j, ws);
    const auto ns = static_cast<std::uint64_t>((std::chrono::steady_clock::now() - t0).count());
    // The job's own CPU time, not its wall time: a worker preempted by the request threads on a
    // busy machine would make its codec look slower than it is (auto learns from this).
    if (j->timed) j->ns = std::max<std::uint64_t>(1, thread_cpu_ns() - cpu0);
    busy_ns_.fetch_add(ns, std::memory_order_relaxed);
    note_service(ns);
    completed_.fetch_add(1, std::memory_order_relaxed);
    if (j->dir == direction::decompress) {
      if (j->st == codec::status::ok) {
        decompressed_.fetch_add(1, std::memory_order_relaxed);
        decompressed_bytes_.fetch_add(j->out_size, std::memory_order_relaxed);
      }
    } else {
      bytes_in_.fetch_add(codec::total_size(j->in), std::memory_order_relaxed);
      bytes_out_.fetch_add(j->out_size, std::memory_order_relaxed);
    }
    j->finish();
  }
}

}  // namespace qzfs::offload
