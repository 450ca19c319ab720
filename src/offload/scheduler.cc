#include "qzfs/offload/scheduler.h"

#include <algorithm>
#include <vector>

namespace qzfs::offload {

scheduler::scheduler(cpu_backend& cpu, accel_backend* accel, options o)
    : cpu_(cpu), accel_(accel), overflow_depth_(o.overflow_depth), accel_bias_(o.accel_bias) {
  if (accel_ != nullptr && overflow_depth_ == 0) overflow_depth_ = 4 * accel_->capacity();
}

double scheduler::accel_wait_ns(std::size_t cpu_ahead) const noexcept {
  const auto a = accel_->stats();
  const auto c = cpu_.stats();
  // Untried (first use, or just back up): one job at a time until its speed is known.
  if (a.service_ns == 0) return a.queue_depth == 0 ? 0 : -1;
  if (c.service_ns == 0) return 0;
  // A modelled card's queue is longer than the card's would be, by what this machine takes to
  // stand in for it (its recent excess per job, 0 for a real device): judged as the card's.
  const double excess = static_cast<double>(accel_->emulation_excess_ns());
  const double service = static_cast<double>(a.service_ns);
  const double depth = static_cast<double>(a.queue_depth) * service / (service + excess);
  const double accel_finish = (depth + 1) * service / accel_->sessions();
  // The CPU's queue plus the jobs of this batch already given to it: a batch reaches the CPU queue
  // only once it is all routed, and judged against the queue alone, the accelerator was refused
  // after its first few jobs while the CPU's share piled up behind them.
  const double cpu_finish =
      static_cast<double>(c.queue_depth + cpu_ahead + 1) * static_cast<double>(c.service_ns) / cpu_.workers();
  if (accel_finish > accel_bias_ * cpu_finish) return -1;
  // A modelled card frees its places later than the card would, by what this machine takes to
  // stand in for it: waited for as the card would be, plus that (0 for a real device).
  const double emulation = static_cast<double>(a.queue_depth + 1) * excess / accel_->sessions();
  return std::min(accel_bias_ * cpu_finish, 1e9) + emulation;
}

void scheduler::after_accel(job& j, void* self) {
  auto& s = *static_cast<scheduler*>(self);
  if (j.st == codec::status::error) {
    // The device failed this job: the CPU redoes it from the submitter's untouched input.
    (j.dir == direction::decompress ? s.decode_redone_ : s.redone_).fetch_add(1, std::memory_order_relaxed);
    j.redone = true;
    s.cpu_.submit(j);
    return;
  }
  j.complete();
}

scheduler::route_to scheduler::route(job& j, completion& c, std::size_t cpu_ahead, clock_type::time_point& wait_until) {
  j.done = &c;
  j.redone = false;
  j.on_finish = nullptr;
  if (j.dir == direction::decompress) return route_decode(j, cpu_ahead, wait_until);
  const bool for_accel = accel_ != nullptr && j.spec.format == codec::payload_format::gzip;
  if (for_accel && !accel_->serving()) {
    not_serving_.fetch_add(1, std::memory_order_relaxed);
  } else if (for_accel) {
    if (!accel_->accepts(j)) {
      small_.fetch_add(1, std::memory_order_relaxed);
    } else if (const auto r = offer(j, cpu_ahead, wait_until); r != route_to::cpu) {
      if (r == route_to::accel) to_accel_.fetch_add(1, std::memory_order_relaxed);
      return r;
    } else {
      overflow_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  to_cpu_.fetch_add(1, std::memory_order_relaxed);
  return route_to::cpu;
}

scheduler::route_to scheduler::offer(job& j, std::size_t cpu_ahead, clock_type::time_point& wait_until) {
  j.on_finish = &scheduler::after_accel;
  j.on_finish_ctx = this;
  if (const double wait = accel_wait_ns(cpu_ahead); wait >= 0) {
    if (accel_->submit(j, overflow_depth_)) return route_to::accel;
    // Full, yet expected to finish this job in time even behind its whole queue: worth waiting
    // for a place, as long as the rule allows (bias x the CPU's expected finish). A fast card is
    // never short of places for long; a saturated one keeps them past the wait, and the job
    // overflows to the CPU.
    if (wait > 0) {
      wait_until = clock_type::now() + std::chrono::nanoseconds(static_cast<std::int64_t>(std::min(wait, 2e9)));
      return route_to::wait;
    }
  }
  j.on_finish = nullptr;
  return route_to::cpu;
}

scheduler::route_to scheduler::route_decode(job& j, std::size_t cpu_ahead, clock_type::time_point& wait_until) {
  // The same rule as for compression, for the members the device can decode.
  if (accel_ != nullptr && accel_->serving() && accel_->accepts(j)) {
    if (const auto r = offer(j, cpu_ahead, wait_until); r != route_to::cpu) {
      if (r == route_to::accel) decode_accel_.fetch_add(1, std::memory_order_relaxed);
      return r;
    }
  }
  decode_cpu_.fetch_add(1, std::memory_order_relaxed);
  return route_to::cpu;
}

bool scheduler::wait_for_accel(job& j, clock_type::time_point until) {
  const bool decode = j.dir == direction::decompress;
  bool lined = false;
  if (accel_->submit_by(j, until, overflow_depth_, &lined)) {
    if (!lined) waited_.fetch_add(1, std::memory_order_relaxed);  // a job in line is counted there
    (decode ? decode_accel_ : to_accel_).fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  j.on_finish = nullptr;
  if (decode) {
    decode_cpu_.fetch_add(1, std::memory_order_relaxed);
  } else {
    overflow_.fetch_add(1, std::memory_order_relaxed);
    to_cpu_.fetch_add(1, std::memory_order_relaxed);
  }
  return false;
}

void scheduler::submit(job& j, completion& c) {
  c.expect(1);
  clock_type::time_point until;
  auto r = route(j, c, 0, until);
  if (r == route_to::wait && wait_for_accel(j, until)) return;
  if (r != route_to::accel) cpu_.submit(j);
}

void scheduler::submit(std::span<job*> js, completion& c) {
  c.expect(js.size());
  // The accelerator takes its share job by job; the CPU's, moved to the front, goes in a queueful
  // at a time. Routed all at once, a batch larger than the accelerator's queue sent everything
  // past its first queueful to the CPU; handing the CPU each queueful as it fills (which blocks,
  // as submit does, while the CPU queue is full) lets the accelerator finish jobs meanwhile and
  // take more of the batch. Before waiting for a place at the accelerator, the CPU gets what it
  // has been given so far, so it works meanwhile.
  std::size_t n = 0, queued = 0;  // js[0, n): the CPU's; js[0, queued): already in its queue
  const std::size_t chunk = std::max<std::size_t>(1, cpu_.capacity());
  for (std::size_t i = 0; i < js.size(); ++i) {
    job* j = js[i];
    clock_type::time_point until;
    auto r = route(*j, c, n - queued, until);
    if (r == route_to::wait) {
      cpu_.submit_all(js.subspan(queued, n - queued));
      queued = n;
      r = wait_for_accel(*j, until) ? route_to::accel : route_to::cpu;
    }
    if (r == route_to::cpu) js[n++] = j;
    if (n - queued >= chunk) {
      cpu_.submit_all(js.subspan(queued, n - queued));
      queued = n;
    }
  }
  cpu_.submit_all(js.subspan(queued, n - queued));
}

void scheduler::run(std::span<job> batch) {
  completion c;
  std::vector<job*> js;
  js.reserve(batch.size());
  for (auto& j : batch) js.push_back(&j);
  submit(js, c);
  c.wait();
}

scheduler_stats scheduler::stats() const noexcept {
  return {to_accel_.load(), to_cpu_.load(), small_.load(), overflow_.load(), not_serving_.load(), redone_.load(),
          waited_.load() + (accel_ != nullptr ? accel_->lined() : 0), decode_accel_.load(), decode_cpu_.load(),
          decode_redone_.load()};
}

}  // namespace qzfs::offload
