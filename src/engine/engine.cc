#include "qzfs/engine/engine.h"

#include <charconv>
#include <cmath>
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

}  // namespace

engine::engine(offload::scheduler& sched, engine_options o) : sched_(sched), o_(o), fixed_(spec_of(o.pol)) {}

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

codec::spec engine::choose(compressibility c) const noexcept {
  if (o_.pol.kind != policy_kind::automatic) return fixed_;
  auto* accel = sched_.accel();
  // An accelerator that is up takes gzip at level 1, as QZFS runs it.
  if (accel != nullptr && accel->serving()) return gzip1_spec;
  if (c == compressibility::weak) return lz4_spec;
  // The best ratio that keeps up: the CPU pool's backlog says how far behind it is.
  auto& cpu = sched_.cpu();
  const double backlog = static_cast<double>(cpu.queue_depth()) / static_cast<double>(cpu.capacity());
  if (backlog < 0.25) return zstd3_spec;
  if (backlog < 0.75) return zstd1_spec;
  return lz4_spec;
}

void engine::finish_record(record& r, const offload::job& j, file_learning* fl) noexcept {
  r.ran_on = j.ran_on;
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
    const codec::spec s = choose(verdict);
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
    j.in = r.in;
    j.out = r.payload.first(std::min(cap, r.payload.size()));
    fin[i] = pending::finisher{this, &r, fl};
    j.then = [](offload::job& jb, void* ctx) {
      auto& f = *static_cast<pending::finisher*>(ctx);
      f.e->finish_record(*f.r, jb, f.fl);
    };
    j.then_ctx = &fin[i];
    p.ready.push_back(&j);
  }
  // All of the batch at once (the checks above take microseconds a record): one lock of the CPU
  // queue and one wake-up instead of one per record.
  if (!p.ready.empty()) sched_.submit(p.ready, done);
}

engine_stats engine::stats() const noexcept {
  engine_stats s{records_.load(), holes_.load(), raw_.load(), compressed_.load(), checker_.load(), probe_.load(),
                 cap_.load(), errors_.load(), bytes_in_.load(), bytes_out_.load()};
  for (std::size_t i = 0; i < per_format_.size(); ++i) s.per_format[i] = per_format_[i].load();
  for (std::size_t i = 0; i < per_producer_.size(); ++i) s.per_producer[i] = per_producer_[i].load();
  return s;
}

}  // namespace qzfs::engine
