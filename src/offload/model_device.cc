// A modelled QAT card: its service time and parallel instances, with real gzip output whose
// CPU time is counted apart from the host's, as the card's (docs/QAT.md).
#include <time.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "qzfs/codec/workspace.h"
#include "qzfs/offload/device.h"

namespace qzfs::offload {

namespace {
using clock_type = std::chrono::steady_clock;

std::uint64_t thread_cpu_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

// A job in a session: waiting (FIFO) for a free instance, then in service.
struct request {
  bool aborted = false;        // guarded by shared::m
  std::condition_variable cv;  // its session waits here: for its turn, for its modelled time
};
}  // namespace

// The card's instances are places a job holds for its service time; the compression itself runs
// on the thread that called the session (as a card computes while its caller waits), and that
// thread's CPU time over it is counted as the card's. (An instance thread of its own per job
// cost this machine two more thread switches per record, host CPU a card would not cost.)
struct model_device::shared {
  model_spec spec;
  std::size_t max_record = 0;
  std::mutex m;                            // lock order: leaf
  std::deque<request*> q;                  // waiting for a free instance, in order
  std::vector<request*> in_service;        // holding an instance (the close wakes them)
  bool closing = false;
  unsigned busy = 0, peak_busy = 0;        // guarded by m
  std::atomic<std::uint64_t> cpu_ns{0}, jobs{0}, overruns{0};

  std::chrono::nanoseconds service_time(std::size_t bytes) const noexcept {
    // One instance serves gbps / instances: all of them busy make the card's throughput.
    const double ns = static_cast<double>(bytes) * 8.0 * spec.instances / spec.gbps;
    return std::chrono::duration_cast<std::chrono::nanoseconds>(spec.latency) +
           std::chrono::nanoseconds(static_cast<std::int64_t>(ns));
  }
};

namespace {

class model_session final : public device_session {
 public:
  model_session(std::shared_ptr<model_device::shared> st) : st_(std::move(st)), ws_(st_->max_record) {}

  codec::compress_result compress(int level, std::span<const std::byte> in, std::span<std::byte> out) noexcept override {
    if (level != spec_.level) spec_ = codec::spec::gzip(level);
    if (!codec::is_valid(spec_)) return {codec::status::error, 0};
    return serve(in.size(), [&] {
      iovec v{const_cast<std::byte*>(in.data()), in.size()};
      return ws_.compress(spec_, {&v, 1}, out);
    });
  }

  // A card decompresses at the same throughput, counted on the bytes it produces (the record).
  codec::compress_result decompress(std::span<const std::byte> in, std::span<std::byte> out) noexcept override {
    return serve(out.size(), [&] {
      const auto st = ws_.decompress(codec::payload_format::gzip, in, out);
      return codec::compress_result{st, st == codec::status::ok ? out.size() : 0};
    });
  }

 private:
  // One job of `bytes` on the card: waits for a free instance, runs `work` on this thread (the
  // card's result, computed here), and answers when the modelled service time is up.
  template <class Work>
  codec::compress_result serve(std::size_t bytes, Work&& work) noexcept {
    request rq;
    excess_ = {};
    const auto t0 = clock_type::now();
    std::unique_lock lk(st_->m);
    if (st_->closing) return {codec::status::error, 0};
    // A free instance, first come first served. Each job waits on its own condition: a shared
    // one woke every session at every job's end.
    st_->q.push_back(&rq);
    cur_ = &rq;
    rq.cv.wait(lk, [&] {
      return rq.aborted || st_->closing || (st_->q.front() == &rq && st_->busy < st_->spec.instances);
    });
    st_->q.erase(std::find(st_->q.begin(), st_->q.end(), &rq));
    if (rq.aborted || st_->closing) {
      cur_ = nullptr;
      if (!st_->q.empty()) st_->q.front()->cv.notify_one();  // the next in line is at the front now
      return {codec::status::error, 0};
    }
    st_->peak_busy = std::max(st_->peak_busy, ++st_->busy);
    st_->in_service.push_back(&rq);
    if (!st_->q.empty()) st_->q.front()->cv.notify_one();  // another instance may be free
    lk.unlock();

    const auto start = clock_type::now();
    codec::compress_result r{codec::status::error, 0};
    {
      const auto cpu0 = thread_cpu_ns();
      try {
        r = work();
      } catch (...) {
        r = {codec::status::error, 0};
      }
      st_->cpu_ns.fetch_add(thread_cpu_ns() - cpu0, std::memory_order_relaxed);
    }
    const auto due = start + st_->service_time(bytes);
    lk.lock();
    if (clock_type::now() > due) st_->overruns.fetch_add(1, std::memory_order_relaxed);
    // The modelled service time; an abort (teardown) or the close answers at once.
    rq.cv.wait_until(lk, due, [&] { return rq.aborted || st_->closing; });
    if (rq.aborted || st_->closing) r = {codec::status::error, 0};
    --st_->busy;
    std::erase(st_->in_service, &rq);
    cur_ = nullptr;
    st_->jobs.fetch_add(1, std::memory_order_relaxed);
    if (!st_->q.empty()) st_->q.front()->cv.notify_one();  // an instance is free
    lk.unlock();
    // Sessions are as many as instances (make_accel), so a card would start this job at once:
    // whatever it took beyond the modelled service time was this machine's doing.
    excess_ = std::max(std::chrono::nanoseconds{}, clock_type::now() - t0 - st_->service_time(bytes));
    return r;
  }

 public:
  void abort() noexcept override {
    std::lock_guard lk(st_->m);
    if (cur_ == nullptr) return;
    cur_->aborted = true;
    cur_->cv.notify_all();
  }

  std::chrono::nanoseconds emulation_excess() const noexcept override { return excess_; }

 private:
  std::shared_ptr<model_device::shared> st_;
  codec::workspace ws_;
  codec::spec spec_{};                 // level 0: none looked up yet
  request* cur_ = nullptr;             // guarded by st_->m: the job in compress(), for abort()
  std::chrono::nanoseconds excess_{};  // the last compress()'s time beyond the modelled one
};

double parse_positive(std::string_view key, std::string_view v, double max) {
  double d = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
  if (ec != std::errc{} || p != v.data() + v.size() || !(d > 0) || d > max)
    throw std::invalid_argument("model spec: " + std::string(key) + " must be a number above 0 and at most " +
                                std::to_string(static_cast<long>(max)));
  return d;
}

std::chrono::microseconds parse_latency(std::string_view v) {
  std::uint64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc{} || p == v.data()) throw std::invalid_argument("model spec: bad number for latency");
  std::string_view unit(p, static_cast<std::size_t>(v.data() + v.size() - p));
  if (unit.empty() || unit == "us") return std::chrono::microseconds(n);
  if (unit == "ms") return std::chrono::microseconds(n * 1000);
  if (unit == "s") return std::chrono::microseconds(n * 1000000);
  throw std::invalid_argument("model spec: latency takes us, ms or s");
}

}  // namespace

model_accel_spec parse_model_spec(std::string_view text) {
  model_accel_spec s;
  std::string faults;
  while (!text.empty()) {
    const auto sep = text.find_first_of("+,");
    std::string_view item = text.substr(0, sep);
    text = sep == std::string_view::npos ? std::string_view{} : text.substr(sep + 1);
    if (item.empty()) continue;
    const auto eq = item.find('=');
    if (eq == std::string_view::npos)
      throw std::invalid_argument("model spec: expected key=value, got '" + std::string(item) + "'");
    const auto key = item.substr(0, eq), v = item.substr(eq + 1);
    if (key == "gbps") {
      s.model.gbps = parse_positive(key, v, 10000);
    } else if (key == "latency") {
      s.model.latency = parse_latency(v);
    } else if (key == "instances") {
      s.model.instances = static_cast<unsigned>(parse_positive(key, v, 64));
      if (static_cast<double>(s.model.instances) != parse_positive(key, v, 64))
        throw std::invalid_argument("model spec: instances must be a whole number");
    } else {
      // Anything else is a fault item; parse_fault_spec names it if it is not one either.
      if (!faults.empty()) faults += ',';
      faults += item;
      s.has_faults = true;
    }
  }
  if (s.has_faults) {
    try {
      s.faults = parse_fault_spec(faults);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string(e.what()) + "; model keys: gbps, latency, instances");
    }
  }
  return s;
}

model_device::model_device(model_spec spec, std::size_t max_record) : spec_(spec), st_(std::make_shared<shared>()) {
  if (spec_.instances == 0) spec_.instances = 1;
  if (!(spec_.gbps > 0)) throw std::invalid_argument("model device: gbps must be above 0");
  st_->spec = spec_;
  st_->max_record = max_record;
}

model_device::~model_device() {
  // Sessions still at work (their backend outlives the device only in tests) answer error.
  std::lock_guard lk(st_->m);
  st_->closing = true;
  for (auto* rq : st_->q) rq->cv.notify_all();
  for (auto* rq : st_->in_service) rq->cv.notify_all();
}

open_result model_device::open_session() noexcept {
  try {
    return {std::make_unique<model_session>(st_), "", false};
  } catch (...) {
    return {nullptr, "out of memory", false};
  }
}

std::uint64_t model_device::cpu_ns() const noexcept { return st_->cpu_ns.load(std::memory_order_relaxed); }
std::chrono::nanoseconds model_device::service_time(std::size_t bytes) const noexcept { return st_->service_time(bytes); }
std::uint64_t model_device::jobs() const noexcept { return st_->jobs.load(std::memory_order_relaxed); }
std::uint64_t model_device::overruns() const noexcept { return st_->overruns.load(std::memory_order_relaxed); }
unsigned model_device::peak_busy() const noexcept {
  std::lock_guard lk(st_->m);
  return st_->peak_busy;
}

}  // namespace qzfs::offload
