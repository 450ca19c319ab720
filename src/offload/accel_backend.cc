#include "qzfs/offload/accel_backend.h"

#include <pthread.h>

#include <isa-l/crc.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "qzfs/codec/table.h"

namespace qzfs::offload {

using clock_type = std::chrono::steady_clock;

// A ticket has one owner at a time, and only its owner releases it: the submitter until it is in
// q_; then whoever takes it out of q_ under m_ (a worker that pops it; the watchdog or
// cancel_queued() that cancels it there). A worker's ticket may still be cancelled by the
// watchdog once it runs (running -> cancelled): that takes only the job's completion, never the
// ticket, which the worker releases when the device is done with it.
struct accel_backend::ticket {
  enum : std::uint8_t { idle, queued, running, finished, cancelled };
  std::atomic<std::uint8_t> st{idle};
  bool in_q = false;  // guarded by m_: in q_ (a ticket 'queued' but not in q_ is being submitted or popped)
  // Read by the watchdog while a worker may be done with the ticket: both atomic. Whoever
  // moves `st` to cancelled or finished owns the job's completion.
  std::atomic<job*> owner{nullptr};
  std::atomic<clock_type::rep> deadline{0};
  int level = 1;
  direction dir = direction::compress;
  std::size_t in_len = 0, out_cap = 0;
  std::unique_ptr<std::byte[]> in, out;
};

namespace {
constexpr std::size_t out_slack = 1024;  // a member of an incompressible record is slightly larger

// (A macro for the location: clang 14 with libstdc++ 12, the CI compiler, has no
// std::source_location.)
[[noreturn]] void internal_error_at(const char* what, const char* file, int line) {
  std::fprintf(stderr, "qzfs: INTERNAL ERROR: %s (%s:%d)\n", what, file, line);
  std::abort();
}
#define internal_error(what) internal_error_at((what), __FILE__, __LINE__)
}  // namespace

accel_backend::accel_backend(std::unique_ptr<device> dev, options o)
    : dev_(std::move(dev)), o_(o), name_(dev_->name()), decompresses_(dev_->decompresses()), backoff_(o.backoff_initial) {
  if (o_.sessions == 0) o_.sessions = 1;
  if (o_.queue_capacity == 0) o_.queue_capacity = 4 * o_.sessions;
  for (std::size_t i = 0; i < o_.queue_capacity; ++i) {
    auto t = std::make_unique<ticket>();
    t->in.reset(new std::byte[o_.max_record]);
    t->out.reset(new std::byte[o_.max_record + out_slack]);
    free_.push_back(t.get());
    tickets_.push_back(std::move(t));
  }
  sessions_.assign(o_.sessions, nullptr);
  probe();
  for (unsigned i = 0; i < o_.sessions; ++i) threads_.emplace_back([this, i] { work(i); });
  threads_.emplace_back([this] { watchdog(); });
}

accel_backend::~accel_backend() {
  {
    std::lock_guard lk(m_);
    stop_ = true;
  }
  {
    std::lock_guard lk(sessions_m_);
    for (auto* s : sessions_)
      if (s != nullptr) s->abort();
  }
  work_cv_.notify_all();
  dog_cv_.notify_all();
  free_cv_.notify_all();
  threads_.clear();  // workers finish or fail every queued job before they exit
  // Jobs still in line for a ticket (released tickets are not refilled once stopping), and a
  // ticket the watchdog refilled from the line just before the stop and queued after the workers
  // had left: back to the scheduler, which redoes them on the CPU.
  std::deque<std::pair<job*, clock_type::rep>> line;
  std::deque<ticket*> queued;
  {
    std::lock_guard lk(m_);
    line.swap(backlog_);
    queued.swap(q_);
  }
  for (auto& [j, deadline] : line) fail(*j);
  for (ticket* t : queued) {
    t->in_q = false;
    fail(*t->owner.load(std::memory_order_acquire));
    release(*t);
  }
}

namespace {
// The gzip levels an accelerator takes: the codec table's row of its implementation (QATzip's
// 1-9), read once.
const codec::level_range accel_levels = codec::find(codec::producer_id::qat)->levels;
}  // namespace

bool accel_backend::accepts(const job& j) const noexcept {
  const std::size_t n = codec::total_size(j.in);
  if (j.spec.format != codec::payload_format::gzip) return false;
  if (j.dir == direction::decompress) {
    // A member in one buffer (as a frame holds it) whose record is inside the window.
    return decompresses_ && j.in.size() == 1 && n <= o_.max_record && j.out.size() >= o_.min_record &&
           j.out.size() <= o_.max_record;
  }
  return accel_levels.contains(j.spec.level) && n >= o_.min_record && n <= o_.max_record;
}

bool accel_backend::try_submit(job& j) noexcept { return submit(j, tickets_.size()); }

bool accel_backend::submit(job& j, std::size_t max_depth, bool* lined) noexcept {
  if (lined != nullptr) *lined = false;
  if (!serving() || !accepts(j)) return false;
  ticket* t = nullptr;
  {
    std::lock_guard lk(m_);
    if (stop_ || tickets_.size() - free_.size() + backlog_.size() >= max_depth) return false;
    if (free_.empty()) {
      // Every place taken: the job waits in line, untouched, for the next ticket that comes free
      // (release() starts it), with the same deadline as a job in a ticket.
      if (!serving()) return false;
      backlog_.push_back({&j, (clock_type::now() + o_.timeout).time_since_epoch().count()});
      waited_.fetch_add(1, std::memory_order_relaxed);
      submitted_.fetch_add(1, std::memory_order_relaxed);
      if (lined != nullptr) *lined = true;
      return true;
    }
    t = free_.back();
    free_.pop_back();
  }
  submitted_.fetch_add(1, std::memory_order_relaxed);
  start(*t, j);
  return true;
}

void accel_backend::start(ticket& t, job& j) noexcept {
  // The device works on a private copy: QATzip takes contiguous input, and a device that hangs
  // or answers late must never read or write the submitter's buffers after the job is handed back.
  std::byte* p = t.in.get();
  for (const auto& v : j.in) {
    if (v.iov_len != 0) std::memcpy(p, v.iov_base, v.iov_len);
    p += v.iov_len;
  }
  t.in_len = static_cast<std::size_t>(p - t.in.get());
  t.out_cap = std::min(j.out.size(), o_.max_record + out_slack);
  t.owner.store(&j, std::memory_order_relaxed);
  t.level = j.spec.level;
  t.dir = j.dir;
  t.deadline.store((clock_type::now() + o_.timeout).time_since_epoch().count(), std::memory_order_relaxed);
  t.st.store(ticket::queued, std::memory_order_release);
  bool wake_dog;
  {
    std::lock_guard lk(m_);
    q_.push_back(&t);
    t.in_q = true;
    wake_dog = dog_idle_;
    dog_idle_ = false;
  }
  work_cv_.notify_one();
  if (wake_dog) dog_cv_.notify_one();  // it was asleep with nothing to watch
}

bool accel_backend::submit_by(job& j, clock_type::time_point until, std::size_t max_depth, bool* lined) noexcept {
  if (lined != nullptr) *lined = false;
  if (!serving() || !accepts(j)) return false;
  {
    std::unique_lock lk(m_);
    ++free_waiters_;
    const bool room = free_cv_.wait_until(lk, until, [&] {
      return stop_ || !serving() || tickets_.size() - free_.size() + backlog_.size() < max_depth;
    });
    --free_waiters_;
    if (!room || stop_) return false;
  }
  return submit(j, max_depth, lined);  // another caller may have taken the place meanwhile: then false
}

std::size_t accel_backend::queue_depth() const noexcept {
  std::lock_guard lk(m_);
  return tickets_.size() - free_.size() + backlog_.size();
}


void accel_backend::release(ticket& t) {
  t.owner.store(nullptr, std::memory_order_relaxed);
  t.st.store(ticket::idle, std::memory_order_release);
  job* next = nullptr;
  {
    std::lock_guard lk(m_);
    // The next job in line takes the ticket; not while the device is down or stopping (then the
    // line is failed back: cancel_queued(), the destructor).
    if (!backlog_.empty() && !stop_ && serving()) {
      next = backlog_.front().first;
      backlog_.pop_front();
    } else {
      free_.push_back(&t);
    }
    if (free_waiters_ != 0) free_cv_.notify_one();  // a place in line came free either way
  }
  if (next != nullptr) start(t, *next);
}

void accel_backend::fail(job& j) {
  j.st = codec::status::error;
  j.out_size = 0;
  j.ran_on = name_.c_str();
  failed_.fetch_add(1, std::memory_order_relaxed);
  j.finish();
}

void accel_backend::cancel_queued() {
  std::vector<std::pair<ticket*, job*>> taken;
  std::vector<job*> line;  // the jobs waiting for a ticket
  {
    std::lock_guard lk(m_);
    // Only what is still in q_: a ticket a worker has popped is that worker's, even before it
    // marks it running (it sees the teardown and fails the job itself).
    for (auto* t : q_) {
      t->in_q = false;
      job* owner = t->owner.load(std::memory_order_acquire);
      std::uint8_t expect = ticket::queued;
      if (!t->st.compare_exchange_strong(expect, ticket::cancelled)) internal_error("a ticket in the queue is not queued");
      taken.emplace_back(t, owner);
    }
    q_.clear();
    for (auto& [j, deadline] : backlog_) line.push_back(j);
    backlog_.clear();
  }
  for (auto [t, owner] : taken) {
    fail(*owner);
    release(*t);
  }
  for (job* j : line) fail(*j);
}

void accel_backend::mark_down(const std::string& why) {
  {
    // Checked and set under m_: two failures at once tear it down once, and a worker that has
    // just seen its 100th good job cannot set it back up after this (it heals under m_ too).
    std::lock_guard lk(m_);
    if (!serving()) return;
    ++gen_;
    next_probe_ = clock_type::now() + backoff_;
    backoff_ = std::min(backoff_ * 2, o_.backoff_max);
    ok_streak_ = 0;
    set_health(health::down, why);
  }
  teardowns_.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard lk(sessions_m_);
    for (auto* s : sessions_)
      if (s != nullptr) s->abort();
  }
  cancel_queued();
  work_cv_.notify_all();  // workers drop their sessions of the old generation
  {
    std::lock_guard lk(m_);
    free_cv_.notify_all();  // callers waiting for a place go to the CPU
  }
}

void accel_backend::probe() {
  probes_.fetch_add(1, std::memory_order_relaxed);
  auto r = dev_->open_session();
  if (r.session) {
    forget_service();  // back: judge its speed afresh
    if (teardowns_.load(std::memory_order_relaxed) == 0) {
      set_health(health::up, "");
    } else {
      std::lock_guard lk(m_);
      ok_streak_ = 0;
      set_health(health::degraded, "recovering after: " + reason());
    }
    return;
  }
  if (r.permanent) {
    set_health(health::unavailable, r.reason);
    return;
  }
  {
    std::lock_guard lk(m_);
    next_probe_ = clock_type::now() + backoff_;
    backoff_ = std::min(backoff_ * 2, o_.backoff_max);
  }
  set_health(health::down, r.reason);
}

void accel_backend::probe_now() {
  if (state() == health::down) probe();
}

namespace {
std::uint32_t le32_at(std::span<const std::byte> b, std::size_t at) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= std::uint32_t(b[at + i]) << (8 * i);
  return v;
}
}  // namespace

bool accel_backend::verify(const ticket& t, std::size_t size, codec::workspace& ws, std::byte* scratch) const noexcept {
  if (t.dir == direction::decompress) {
    // The record must be exactly its size, and its CRC-32 and size those the member's footer
    // carries (the submitter checks the record's own checksum too before anyone sees it).
    std::span<const std::byte> member(t.in.get(), t.in_len);
    if (size != t.out_cap || t.in_len < 18) return false;
    const std::uint32_t crc = crc32_gzip_refl(0, reinterpret_cast<const unsigned char*>(t.out.get()), size);
    return le32_at(member, t.in_len - 8) == crc && le32_at(member, t.in_len - 4) == static_cast<std::uint32_t>(size);
  }
  std::span<const std::byte> member(t.out.get(), size);
  if (o_.verify == verify_mode::full) {
    // The only proof a record can be read back without the device: decode it here.
    if (ws.decompress(codec::payload_format::gzip, member, {scratch, t.in_len}) != codec::status::ok) return false;
    return std::memcmp(scratch, t.in.get(), t.in_len) == 0;
  }
  // crc: the footer must carry the CRC-32 and size of the input (a member whose deflate data is
  // wrong but whose footer is right passes this; verify_mode::full catches it).
  if (size < 18 || member[0] != std::byte{0x1f} || member[1] != std::byte{0x8b}) return false;
  auto le32 = [&](std::size_t at) {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= std::uint32_t(member[at + i]) << (8 * i);
    return v;
  };
  const std::uint32_t crc = crc32_gzip_refl(0, reinterpret_cast<const unsigned char*>(t.in.get()), t.in_len);
  return le32(size - 8) == crc && le32(size - 4) == static_cast<std::uint32_t>(t.in_len);
}

void accel_backend::work(unsigned idx) {
  pthread_setname_np(pthread_self(), "qzfs-accel");
  std::unique_ptr<device_session> sess;
  std::uint64_t sess_gen = 0;
  codec::workspace ws(o_.max_record);
  std::unique_ptr<std::byte[]> scratch(new std::byte[o_.max_record]);
  auto drop_session = [&] {
    std::lock_guard lk(sessions_m_);
    sessions_[idx] = nullptr;
    sess.reset();
  };
  for (;;) {
    ticket* t;
    std::uint64_t gen;
    {
      std::unique_lock lk(m_);
      work_cv_.wait(lk, [&] { return stop_ || !q_.empty() || (sess && sess_gen != gen_); });
      gen = gen_;
      if (sess && sess_gen != gen) {
        lk.unlock();
        drop_session();  // torn down: a new generation opens a fresh session
        continue;
      }
      if (q_.empty()) {
        if (stop_) break;
        continue;
      }
      t = q_.front();
      q_.pop_front();
      t->in_q = false;  // this worker's now: nobody else cancels or releases it until it runs
    }
    if (o_.after_pop) o_.after_pop();
    std::uint8_t expect = ticket::queued;
    if (!t->st.compare_exchange_strong(expect, ticket::running)) internal_error("a popped ticket changed hands");
    if (!sess && serving()) {
      auto r = dev_->open_session();
      if (r.session) {
        std::lock_guard lk(sessions_m_);
        sess = std::move(r.session);
        sess_gen = gen;
        sessions_[idx] = sess.get();
      } else {
        mark_down("session setup failed: " + r.reason);
      }
    }
    job* owner = t->owner.load(std::memory_order_acquire);
    if (!sess || !serving()) {
      expect = ticket::running;
      if (t->st.compare_exchange_strong(expect, ticket::cancelled)) fail(*owner);
      release(*t);
      continue;
    }
    auto t0 = clock_type::now();
    const bool decode = t->dir == direction::decompress;
    auto r = decode ? sess->decompress({t->in.get(), t->in_len}, {t->out.get(), t->out_cap})
                    : sess->compress(t->level, {t->in.get(), t->in_len}, {t->out.get(), t->out_cap});
    const auto t1 = clock_type::now();
    // A modelled card's overrun is this machine's, not the card's: routing and device time leave
    // it out (docs/QAT.md "The modelled card").
    const auto excess = static_cast<std::uint64_t>(std::clamp(sess->emulation_excess(), std::chrono::nanoseconds{}, t1 - t0).count());
    // A decompression either decodes the record or the device failed it (the payload's checksum
    // held before it was sent: a member the device calls corrupt is the device's fault).
    bool good = (!decode && r.st == codec::status::does_not_fit) ||
                (r.st == codec::status::ok && r.size <= t->out_cap && verify(*t, r.size, ws, scratch.get()));
    const auto ns = static_cast<std::uint64_t>((clock_type::now() - t0).count());
    busy_ns_.fetch_add(ns, std::memory_order_relaxed);
    expect = ticket::running;
    if (!t->st.compare_exchange_strong(expect, good ? ticket::finished : ticket::cancelled)) {
      release(*t);  // the watchdog gave up on it and the CPU has redone it: drop this late answer
      continue;
    }
    if (!good && decode && r.st == codec::status::corrupt) {
      // The device says the member is not one it can decode (real QATzip may refuse members
      // other producers made): the CPU decodes it; the device stays up, since it answered.
      fail(*owner);
      release(*t);
      continue;
    }
    if (!good) {
      // Down first, then the job back: the CPU redoes it (and its submitter may wake) only once
      // the device is out of the routing and its teardown is counted.
      mark_down(r.st == codec::status::error ? "device error"
                : decode ? "device decoded a member to bytes that do not match its footer's CRC-32 and size"
                         : "device returned a member that does not decode to its input");
      fail(*owner);
      release(*t);
      drop_session();
      continue;
    }
    note_service(ns - excess);  // only answers that were used: a hang or a failure says nothing of the speed
    device_ns_.fetch_add(static_cast<std::uint64_t>((t1 - t0).count()) - excess, std::memory_order_relaxed);
    emulation_ns_.fetch_add(excess, std::memory_order_relaxed);
    if (const auto old = excess_avg_.load(std::memory_order_relaxed); old != 0 || excess != 0)
      excess_avg_.store(old - old / 8 + excess / 8, std::memory_order_relaxed);  // racing workers: a lost update is harmless
    job& j = *owner;
    j.st = r.st;
    j.out_size = r.st == codec::status::ok ? r.size : 0;
    if (j.out_size != 0) std::memcpy(j.out.data(), t->out.get(), j.out_size);
    j.producer = dev_->producer();
    j.ran_on = name_.c_str();
    j.ns = 0;
    completed_.fetch_add(1, std::memory_order_relaxed);
    if (decode) {
      decompressed_.fetch_add(1, std::memory_order_relaxed);
      decompressed_bytes_.fetch_add(j.out_size, std::memory_order_relaxed);
    } else {
      bytes_in_.fetch_add(t->in_len, std::memory_order_relaxed);
      bytes_out_.fetch_add(j.out_size, std::memory_order_relaxed);
    }
    {
      std::lock_guard lk(m_);
      if (++ok_streak_ >= 100) {
        backoff_ = o_.backoff_initial;  // healthy again: forget past failures
        // Only from degraded, under m_: never over a teardown that came meanwhile.
        if (state() == health::degraded) set_health(health::up, "");
      }
    }
    release(*t);
    j.finish();
  }
  drop_session();
}

void accel_backend::watchdog() {
  pthread_setname_np(pthread_self(), "qzfs-watchdog");
  std::unique_lock lk(m_);
  while (!stop_) {
    if (free_.size() < tickets_.size()) {
      dog_cv_.wait_for(lk, std::chrono::milliseconds(5));  // jobs in flight: watch their deadlines
    } else {
      // Nothing in flight, so nothing can be late: sleep until a job goes in (try_submit wakes
      // this), a re-probe is due or a second has passed (not 200 wake-ups a second on an idle
      // mount, or with no device at all).
      auto until = clock_type::now() + std::chrono::seconds(1);
      if (state() == health::down) until = std::min(until, next_probe_);
      dog_idle_ = true;
      dog_cv_.wait_until(lk, until);
      dog_idle_ = false;
    }
    if (stop_) break;
    const auto now = clock_type::now().time_since_epoch().count();
    std::vector<job*> stuck;  // running past the deadline: the worker releases the ticket later
    std::vector<std::pair<ticket*, job*>> late;  // queued past the deadline (every session stuck)
    for (auto& tp : tickets_) {
      ticket& t = *tp;
      std::uint8_t s = t.st.load(std::memory_order_acquire);
      if ((s != ticket::running && s != ticket::queued) || t.deadline.load(std::memory_order_relaxed) > now) continue;
      // A 'queued' ticket not in q_ belongs to its submitter (not pushed yet) or to the worker
      // that popped it (not marked running yet): leave it; it is caught as running next time.
      // Cancelling it here released it twice.
      if (s == ticket::queued && !t.in_q) continue;
      job* owner = t.owner.load(std::memory_order_acquire);
      if (!t.st.compare_exchange_strong(s, ticket::cancelled)) continue;
      if (s == ticket::running) {
        stuck.push_back(owner);
      } else {
        late.emplace_back(&t, owner);
        std::erase(q_, &t);
        t.in_q = false;
      }
    }
    // Jobs in line past their deadline: the device is busy, not broken (a stuck session is
    // caught by its running ticket's deadline), so they alone go back to the CPU; no teardown.
    std::vector<job*> waited_too_long;
    while (!backlog_.empty() && backlog_.front().second <= now) {
      waited_too_long.push_back(backlog_.front().first);
      backlog_.pop_front();
    }
    if (!waited_too_long.empty() && free_waiters_ != 0) free_cv_.notify_all();
    const bool due = state() == health::down && now >= next_probe_.time_since_epoch().count();
    lk.unlock();
    for (job* j : waited_too_long) fail(*j);
    // Down first, then the jobs back (as for a device error).
    if (!stuck.empty() || !late.empty())
      mark_down("a job took longer than " + std::to_string(o_.timeout.count()) + " ms");
    for (job* j : stuck) fail(*j);
    for (auto [t, owner] : late) {
      fail(*owner);
      release(*t);
    }
    if (due) probe();
    lk.lock();
  }
}

}  // namespace qzfs::offload
