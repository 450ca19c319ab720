#include "qzfs/engine/engine.h"

#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <algorithm>
#include <thread>
#include <vector>

#include "qzfs/codec/table.h"
#include "qzfs/codec/workspace.h"
#include "qzfs/offload/scheduler.h"

namespace qzfs::engine {

std::optional<policy> parse_policy(std::string_view t) noexcept {
  if (t == "off") return policy{policy_kind::off, 0};
  if (t == "auto") return policy{policy_kind::automatic, 0};
  // The rest are codec names, read by the codec table: "gzip" here is the codec's gzip, at the
  // level the table gives it (docs/decisions/0008). A policy names a codec by its own name
  // (gzip-N, zstd-N, zstd-fast-N, lz4), not an implementation (isal-N, zlib-N, lz4hc-N).
  auto s = codec::parse_spec(t);
  if (!s) return std::nullopt;
  const codec::codec_info* c = codec::find(s->format);
  if (c == nullptr || !t.starts_with(c->name)) return std::nullopt;
  const int level = t == c->name ? 0 : s->level;
  switch (s->format) {
    case codec::payload_format::lz4:
      if (s->producer != codec::producer_id::lz4) return std::nullopt;
      return policy{policy_kind::lz4, 0};
    case codec::payload_format::gzip: return policy{policy_kind::gzip, level};
    case codec::payload_format::zstd:
      // Levels 20-22 need up to 1 GiB of working memory per context and worker.
      if (level > max_policy_zstd_level) return std::nullopt;
      return policy{policy_kind::zstd, level};
    case codec::payload_format::none: return std::nullopt;  // "off" is the policy's name for it
  }
  return std::nullopt;
}

std::string to_string(const policy& p) {
  switch (p.kind) {
    case policy_kind::off: return "off";
    case policy_kind::automatic: return "auto";
    case policy_kind::lz4: return "lz4";
    case policy_kind::gzip:
    case policy_kind::zstd: return p.level == 0 ? std::string(codec::to_string(spec_of(p).format)) : codec::to_string(spec_of(p));
  }
  return "?";
}

codec::spec spec_of(const policy& p) noexcept {
  switch (p.kind) {
    case policy_kind::lz4: return codec::spec::lz4();
    case policy_kind::gzip: return p.level == 0 ? codec::spec::gzip() : codec::spec::gzip(p.level);
    case policy_kind::zstd: return p.level == 0 ? codec::spec::zstd() : codec::spec::zstd(p.level);
    case policy_kind::off:
    case policy_kind::automatic: break;
  }
  return codec::spec::none();
}

std::string describe(const policy& p) {
  const std::string name = to_string(p);
  if (p.kind == policy_kind::off || p.kind == policy_kind::automatic) return name;
  const std::string spec = codec::to_string(spec_of(p));
  return spec == name ? name : name + ", which is " + spec;
}

std::string policy_help() {
  const auto gz = codec::find(codec::payload_format::gzip)->levels();
  return "off | lz4 | gzip[-N] (N " + std::to_string(gz.min) + "-" + std::to_string(gz.max) + ") | zstd[-N] (N 1-" +
         std::to_string(max_policy_zstd_level) + ") | zstd-fast-N | auto; " + codec::default_levels();
}

namespace {

// The specs `auto` and the probe use, made once rather than per record.
const codec::spec lz4_spec = codec::spec::lz4(), gzip1_spec = codec::spec::gzip(1), zstd1_spec = codec::spec::zstd(1),
                  zstd3_spec = codec::spec::zstd(3);

// The per-thread workspace for lz4 probes, run on the submitting thread.
codec::workspace& probe_workspace() {
  thread_local codec::workspace ws;
  return ws;
}

// auto's candidates, from the fastest to the densest.
constexpr std::size_t candidates = 4;
const std::array<codec::spec, candidates> candidate_specs{lz4_spec, gzip1_spec, zstd1_spec, zstd3_spec};
// Every this many records of a class, one goes to the candidate measured least recently.
constexpr std::uint64_t explore_every = 16;
// What a byte stored is worth in CPU time: auto minimizes ns per byte + this x bytes stored per
// byte (docs/ENGINE.md "auto": with it, a codec that stores 1% of the data less may spend 0.2 ns
// a byte more, about 6% of zstd-1's time on SAM).
constexpr double stored_byte_ns = 20.0;

std::size_t candidate_of(const codec::spec& s) noexcept {
  for (std::size_t k = 0; k < candidates; ++k)
    if (candidate_specs[k] == s) return k;
  return candidates;
}

int class_of(compressibility c) noexcept { return c == compressibility::weak ? 1 : 0; }

}  // namespace


struct engine::auto_state {
  mutable std::mutex m;  // lock order: after file_learning::auto_m; leaf
  std::array<auto_table, 2> est;  // per class
  // The CPU workers' recent busy share (moving average), when and at which busy time it was read.
  std::atomic<double> busy{1.0};
  std::atomic<std::int64_t> read_at{0};
  std::atomic<std::uint64_t> busy_ns{0};
  std::mutex busy_m;  // one reader at a time; never waited for (try_lock)
};

engine::engine(offload::scheduler& sched, engine_options o)
    : auto_(o.pol.kind == policy_kind::automatic ? std::make_unique<auto_state>() : nullptr),
      sched_(sched),
      o_(o),
      fixed_(spec_of(o.pol)) {}

engine::~engine() = default;

unsigned engine::workers() const noexcept { return sched_.cpu().workers(); }

bool engine::spare_core() const noexcept {
  static const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  return workers() < cores;
}

void decide_without_codec(std::span<record> batch) noexcept {
  for (auto& r : batch) {
    r.result = is_zero(r.in) ? outcome::hole : outcome::raw;
    if (r.sink != nullptr) r.sink->record_done(r);
  }
}

std::size_t auto_table::pick(double weight) noexcept {
  const std::uint64_t n = ++seq;
  std::size_t k = candidates;
  for (std::size_t i = 0; i < candidates && k == candidates; ++i)
    if (est[i].samples == 0 && (est[i].last == 0 || n - est[i].last > 2 * explore_every)) k = i;  // untried (or its try was lost)
  // Every 16th record while the estimates are young, every 64th after (a clear choice needs
  // fewer checks; each costs up to a record's worth of the difference).
  if (k == candidates && n % (n < 256 ? explore_every : 4 * explore_every) == 0) {
    k = 0;
    for (std::size_t i = 1; i < candidates; ++i)
      if (est[i].last < est[k].last) k = i;
  }
  if (k == candidates) {
    double best = 0;
    for (std::size_t i = 0; i < candidates; ++i) {
      if (est[i].samples == 0) continue;
      const double cost = auto_estimate{candidate_specs[i], est[i].ns_per_byte, est[i].stored_per_byte, 0, weight}.cost();
      if (k == candidates || cost < best) {
        k = i;
        best = cost;
      }
    }
  }
  if (k != candidates) est[k].last = n;
  return k;
}

void auto_table::fold(std::size_t k, double npb, double spb) noexcept {
  auto& e = est[k];
  if (++e.samples <= 4) {
    // The first records: their mean (a worker's first record of a codec also makes its context,
    // which a single first sample would carry for long).
    e.ns_per_byte += (npb - e.ns_per_byte) / static_cast<double>(e.samples);
    e.stored_per_byte += (spb - e.stored_per_byte) / static_cast<double>(e.samples);
  } else {
    // One record far off the estimate (a page fault storm, a cold cache) moves it by at most
    // what a record at twice (or half) the estimate would.
    const double n = std::clamp(npb, e.ns_per_byte / 2, e.ns_per_byte * 2);
    e.ns_per_byte += (n - e.ns_per_byte) / 8;
    e.stored_per_byte += (spb - e.stored_per_byte) / 8;
  }
}

codec::spec engine::choose(compressibility c, file_learning* fl, bool* by_file) noexcept {
  if (by_file != nullptr) *by_file = false;
  if (o_.pol.kind != policy_kind::automatic) return fixed_;
  auto* accel = sched_.accel();
  // An accelerator that is up takes gzip at level 1, as QZFS runs it: it costs the host
  // nothing but the copy.
  if (accel != nullptr && accel->serving()) return gzip1_spec;
  const double weight = stored_weight();
  // A file past its first records: its own estimates, once it has a candidate to offer (its
  // first tries of each are in flight meanwhile: the mount's estimates decide).
  if (fl != nullptr) {
    std::lock_guard lk(fl->auto_m);
    auto& t = fl->auto_est;
    if (t.seq >= file_learning::own_after) {
      // Measured for the file whichever estimates choose (its own, or the mount's while its
      // first tries are in flight).
      if (by_file != nullptr) *by_file = true;
      if (const std::size_t k = t.pick(weight); k != candidates) return candidate_specs[k];
    } else {
      ++t.seq;
    }
  }
  // The mount's estimates for the record's class.
  auto& a = *auto_;
  std::lock_guard lk(a.m);
  const std::size_t k = a.est[class_of(c)].pick(weight);
  return candidate_specs[k != candidates ? k : 2];  // nothing measured yet: zstd-1
}

void engine::note_cost(compressibility c, const codec::spec& s, std::size_t in, std::size_t stored, std::uint64_t ns,
                       file_learning* fl) noexcept {
  const std::size_t k = candidate_of(s);
  if (!auto_ || k == candidates || in == 0) return;
  const double npb = static_cast<double>(ns) / static_cast<double>(in);
  const double spb = static_cast<double>(stored) / static_cast<double>(in);
  if (fl != nullptr) {
    std::lock_guard lk(fl->auto_m);
    fl->auto_est.fold(k, npb, spb);
    return;
  }
  std::lock_guard lk(auto_->m);
  auto_->est[class_of(c)].fold(k, npb, spb);
}

double engine::stored_weight() noexcept {
  if (!auto_) return stored_byte_ns;
  auto& a = *auto_;
  const std::int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
  const std::int64_t at = a.read_at.load(std::memory_order_relaxed);
  if (now - at >= 100'000'000 && a.busy_m.try_lock()) {
    const std::uint64_t busy = sched_.cpu().busy_ns();
    if (at != 0) {
      const double share = static_cast<double>(busy - a.busy_ns.load(std::memory_order_relaxed)) /
                           (static_cast<double>(now - at) * static_cast<double>(std::max(1u, workers())));
      a.busy.store(0.5 * a.busy.load(std::memory_order_relaxed) + 0.5 * std::min(share, 1.0), std::memory_order_relaxed);
    }
    a.busy_ns.store(busy, std::memory_order_relaxed);
    a.read_at.store(now, std::memory_order_relaxed);
    a.busy_m.unlock();
  }
  return stored_byte_ns / std::clamp(a.busy.load(std::memory_order_relaxed), 0.2, 1.0);
}

std::vector<auto_estimate> engine::auto_estimates(compressibility c) const {
  std::vector<auto_estimate> out;
  for (std::size_t k = 0; k < candidates; ++k) {
    auto_estimate e{candidate_specs[k], 0, 0, 0, auto_ ? stored_byte_ns / std::clamp(auto_->busy.load(), 0.2, 1.0) : stored_byte_ns};
    if (auto_) {
      std::lock_guard lk(auto_->m);
      const auto& s = auto_->est[class_of(c)].est[k];
      e.ns_per_byte = s.ns_per_byte;
      e.stored_per_byte = s.stored_per_byte;
      e.samples = s.samples;
    }
    out.push_back(e);
  }
  return out;
}

void engine::finish_record(record& r, const offload::job& j, file_learning* fl, std::int8_t cls, bool by_file) noexcept {
  r.ran_on = j.ran_on;
  // auto learns from what the CPU spent (an accelerator's time is not the host's).
  if (cls >= 0 && j.ns != 0 && (j.st == codec::status::ok || j.st == codec::status::does_not_fit)) {
    const std::size_t n = codec::total_size(j.in);
    note_cost(cls == 1 ? compressibility::weak : compressibility::compressible, j.spec, n,
              j.st == codec::status::ok ? j.out_size : n, j.ns, by_file ? fl : nullptr);
  }
  if (j.st == codec::status::ok) {
    r.result = outcome::compressed;
    r.reason = record::why::none;
    r.payload_size = j.out_size;
    r.spec = j.spec;
    r.producer = j.producer;
    compressed_.fetch_add(1, std::memory_order_relaxed);
    bytes_out_.fetch_add(j.out_size, std::memory_order_relaxed);
    if (static_cast<std::size_t>(j.spec.format) < per_format_.size()) {
      per_format_[static_cast<std::size_t>(j.spec.format)].fetch_add(1, std::memory_order_relaxed);
    }
    if (static_cast<std::size_t>(j.producer) < per_producer_.size()) {
      per_producer_[static_cast<std::size_t>(j.producer)].fetch_add(1, std::memory_order_relaxed);
    }
    if (fl) {
      fl->compressed.fetch_add(1, std::memory_order_relaxed);
      fl->streak.store(0, std::memory_order_relaxed);
    }
  } else {
    r.result = outcome::raw;  // does_not_fit, or a codec error: the bytes are safe stored raw
    raw_.fetch_add(1, std::memory_order_relaxed);
    if (j.st == codec::status::does_not_fit) {
      r.reason = record::why::cap;
      cap_.fetch_add(1, std::memory_order_relaxed);
      if (fl) {
        fl->raw_cap.fetch_add(1, std::memory_order_relaxed);
        fl->streak.fetch_add(1, std::memory_order_relaxed);
      }
    } else {
      r.reason = record::why::error;
      errors_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  if (r.sink != nullptr) r.sink->record_done(r);
}

void engine::compress(std::span<record> batch, file_learning* fl) {
  pending p;
  submit(batch, fl, p);
  wait(p);
}

void engine::submit(std::span<record> batch, file_learning* fl, pending& p) {
  p.jobs.assign(batch.size(), offload::job{});
  p.ready.clear();
  p.ready.reserve(batch.size());
  p.fin.assign(batch.size(), pending::finisher{});
  auto& jobs = p.jobs;
  auto& fin = p.fin;
  auto& done = p.done;
  auto decided = [](record& r) {
    if (r.sink != nullptr) r.sink->record_done(r);
  };
  for (std::size_t i = 0; i < batch.size(); ++i) {
    record& r = batch[i];
    const std::size_t n = codec::total_size(r.in);
    records_.fetch_add(1, std::memory_order_relaxed);
    bytes_in_.fetch_add(n, std::memory_order_relaxed);
    if (fl) fl->records.fetch_add(1, std::memory_order_relaxed);
    r.payload_size = 0;
    r.ran_on = "";
    if (is_zero(r.in)) {
      r.result = outcome::hole;
      r.reason = record::why::zeros;
      holes_.fetch_add(1, std::memory_order_relaxed);
      if (fl) fl->holes.fetch_add(1, std::memory_order_relaxed);
      decided(r);
      continue;
    }
    r.result = outcome::raw;
    if (o_.pol.kind == policy_kind::off) {
      r.reason = record::why::policy_off;
      raw_.fetch_add(1, std::memory_order_relaxed);
      if (fl) fl->raw_policy.fetch_add(1, std::memory_order_relaxed);
      decided(r);
      continue;
    }
    const auto verdict = o_.checker ? sample(r.in).verdict : compressibility::compressible;
    if (verdict == compressibility::incompressible) {
      r.reason = record::why::checker;
      raw_.fetch_add(1, std::memory_order_relaxed);
      checker_.fetch_add(1, std::memory_order_relaxed);
      if (fl) fl->raw_checker.fetch_add(1, std::memory_order_relaxed);
      decided(r);
      continue;
    }
    bool by_file = false;
    const codec::spec s = choose(verdict, fl, &by_file);
    const auto cap = static_cast<std::size_t>(std::floor(static_cast<double>(n) * (1.0 - o_.min_saving)));
    // Learned: this file's records keep passing the checker and then not fitting. Ask lz4
    // first (it gives up at memory speed); the expensive codec only runs when lz4 fits.
    if (fl && s.producer != codec::producer_id::lz4 && fl->streak.load(std::memory_order_relaxed) >= file_learning::probe_after) {
      fl->probes.fetch_add(1, std::memory_order_relaxed);
      auto pr = probe_workspace().compress(lz4_spec, r.in, r.payload.first(std::min(cap, r.payload.size())));
      if (pr.st != codec::status::ok) {
        r.reason = record::why::probe;
        raw_.fetch_add(1, std::memory_order_relaxed);
        probe_.fetch_add(1, std::memory_order_relaxed);
        fl->raw_probe.fetch_add(1, std::memory_order_relaxed);
        decided(r);
        continue;
      }
    }
    offload::job& j = jobs[i];
    j.spec = s;
    j.timed = auto_ != nullptr;  // auto learns from the worker's CPU time
    j.in = r.in;
    j.out = r.payload.first(std::min(cap, r.payload.size()));
    fin[i] = pending::finisher{this, &r, fl, static_cast<std::int8_t>(auto_ ? class_of(verdict) : -1), by_file};
    j.then = [](offload::job& jb, void* ctx) {
      auto& f = *static_cast<pending::finisher*>(ctx);
      f.e->finish_record(*f.r, jb, f.fl, f.cls, f.by_file);
    };
    j.then_ctx = &fin[i];
    p.ready.push_back(&j);
  }
  // All of the batch at once (the checks above take microseconds a record): one lock of the CPU
  // queue and one wake-up instead of one per record.
  if (!p.ready.empty()) sched_.submit(p.ready, done);
}

void engine::submit_decode(offload::job& j, offload::completion& c) { sched_.submit(j, c); }

bool engine::decodes_offloaded(std::size_t record_size) const noexcept {
  static const int forced = [] {
    const char* v = ::secure_getenv("QZFS_DECODE_JOBS");
    return v == nullptr || *v == '\0' ? -1 : *v == '1' ? 1 : 0;
  }();
  if (forced >= 0) return forced == 1;
  const auto* a = sched_.accel();
  return a != nullptr && a->serving() && a->decompresses() && a->decodes_records_of(record_size);
}

engine_stats engine::stats() const noexcept {
  engine_stats s{records_.load(), holes_.load(), raw_.load(), compressed_.load(), checker_.load(), probe_.load(),
                 cap_.load(), errors_.load(), bytes_in_.load(), bytes_out_.load()};
  for (std::size_t i = 0; i < per_format_.size(); ++i) s.per_format[i] = per_format_[i].load();
  for (std::size_t i = 0; i < per_producer_.size(); ++i) s.per_producer[i] = per_producer_[i].load();
  return s;
}

}  // namespace qzfs::engine
