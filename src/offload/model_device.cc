// A modelled QAT card: its service time and parallel instances, with real gzip output computed
// on threads of its own whose CPU time is counted apart from the host's (docs/QAT.md).
#include <pthread.h>
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
#include <thread>
#include <vector>

#include "qzfs/codec/workspace.h"
#include "qzfs/offload/device.h"

namespace qzfs::offload {

namespace {
using clock_type = std::chrono::steady_clock;

// One job handed to the card. Lives on the stack of the session's compress(), which waits until
// the instance is done with it (or until it is taken back unstarted), so an instance never
// touches a buffer that was handed back.
struct request {
  int level = 1;
  std::span<const std::byte> in;
  std::span<std::byte> out;
  bool started = false, done = false, aborted = false;  // guarded by shared::m
  codec::compress_result r{codec::status::error, 0};
  std::condition_variable cv;  // the session waits here for done
};

std::uint64_t thread_cpu_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u + static_cast<std::uint64_t>(ts.tv_nsec);
}
}  // namespace

struct model_device::shared {
  model_spec spec;
  std::size_t max_record = 0;
  std::mutex m;                            // lock order: leaf
  std::condition_variable work_cv, wake;   // a job queued; an abort or the close
  std::deque<request*> q;                  // waiting for a free instance
  bool closing = false;
  unsigned busy = 0, peak_busy = 0;        // guarded by m
  std::atomic<std::uint64_t> cpu_ns{0}, jobs{0}, overruns{0};
  std::vector<std::jthread> instances;

  std::chrono::nanoseconds service_time(std::size_t bytes) const noexcept {
    // One instance serves gbps / instances: all of them busy make the card's throughput.
    const double ns = static_cast<double>(bytes) * 8.0 * spec.instances / spec.gbps;
    return std::chrono::duration_cast<std::chrono::nanoseconds>(spec.latency) +
           std::chrono::nanoseconds(static_cast<std::int64_t>(ns));
  }

  void instance(unsigned idx) {
    char name[16];
    std::snprintf(name, sizeof name, "qzfs-qatmodel%u", idx % 10);  // bench/model_fio.sh reads these
    pthread_setname_np(pthread_self(), name);
    codec::workspace ws(max_record);
    codec::spec spec{};  // level 0: none looked up yet
    std::uint64_t cpu_seen = thread_cpu_ns();
    auto count_cpu = [&] {
      const auto now = thread_cpu_ns();
      cpu_ns.fetch_add(now - cpu_seen, std::memory_order_relaxed);
      cpu_seen = now;
    };
    std::unique_lock lk(m);
    for (;;) {
      work_cv.wait(lk, [&] { return closing || !q.empty(); });
      if (closing) break;
      request* rq = q.front();
      q.pop_front();
      rq->started = true;
      peak_busy = std::max(peak_busy, ++busy);
      lk.unlock();
      const auto t0 = clock_type::now();
      codec::compress_result r{codec::status::error, 0};
      if (rq->level != spec.level) spec = codec::spec::gzip(rq->level);
      if (codec::is_valid(spec)) {
        iovec v{const_cast<std::byte*>(rq->in.data()), rq->in.size()};
        try {
          r = ws.compress(spec, {&v, 1}, rq->out);
        } catch (...) {
          r = {codec::status::error, 0};
        }
      }
      count_cpu();
      const auto due = t0 + service_time(rq->in.size());
      lk.lock();
      if (clock_type::now() > due) overruns.fetch_add(1, std::memory_order_relaxed);
      // The modelled service time; an abort (teardown) or the close answers at once.
      wake.wait_until(lk, due, [&] { return rq->aborted || closing; });
      rq->r = rq->aborted || closing ? codec::compress_result{codec::status::error, 0} : r;
      rq->done = true;
      --busy;
      jobs.fetch_add(1, std::memory_order_relaxed);
      rq->cv.notify_all();  // under the lock: the request is gone once the session sees done
    }
    lk.unlock();
    count_cpu();
  }
};

namespace {

class model_session final : public device_session {
 public:
  explicit model_session(std::shared_ptr<model_device::shared> st) : st_(std::move(st)) {}

  codec::compress_result compress(int level, std::span<const std::byte> in, std::span<std::byte> out) noexcept override {
    request rq;
    rq.level = level;
    rq.in = in;
    rq.out = out;
    std::unique_lock lk(st_->m);
    if (st_->closing) return {codec::status::error, 0};
    st_->q.push_back(&rq);
    cur_ = &rq;
    st_->work_cv.notify_one();
    rq.cv.wait(lk, [&] { return rq.done || ((rq.aborted || st_->closing) && !rq.started); });
    cur_ = nullptr;
    if (!rq.done) {  // taken back before an instance started it
      std::erase(st_->q, &rq);
      return {codec::status::error, 0};
    }
    return rq.r;
  }

  void abort() noexcept override {
    std::lock_guard lk(st_->m);
    if (cur_ == nullptr) return;
    cur_->aborted = true;
    cur_->cv.notify_all();
    st_->wake.notify_all();
  }

 private:
  std::shared_ptr<model_device::shared> st_;
  request* cur_ = nullptr;  // guarded by st_->m: the job in compress(), for abort()
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
  shared* st = st_.get();
  for (unsigned i = 0; i < spec_.instances; ++i) st_->instances.emplace_back([st, i] { st->instance(i); });
}

model_device::~model_device() {
  {
    std::lock_guard lk(st_->m);
    st_->closing = true;
    // Jobs still waiting for an instance: their sessions give them back as errors.
    for (auto* rq : st_->q) rq->cv.notify_all();
  }
  st_->work_cv.notify_all();
  st_->wake.notify_all();
  st_->instances.clear();  // joins
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
