#include "qzfs/engine/engine.h"

#include <charconv>
#include <cmath>
#include <vector>

#include "qzfs/codec/workspace.h"

namespace qzfs::engine {

std::optional<policy> parse_policy(std::string_view t) noexcept {
  if (t == "off") return policy{policy_kind::off, 0};
  if (t == "lz4") return policy{policy_kind::lz4, 0};
  if (t == "auto") return policy{policy_kind::automatic, 0};
  if (t == "gzip") return policy{policy_kind::gzip, 0};
  if (t == "zstd") return policy{policy_kind::zstd, 0};
  // gzip-N and zstd-N share the codec layer's names and ranges.
  auto s = codec::parse_spec(t);
  if (!s) return std::nullopt;
  if (t.substr(0, 5) == "gzip-") return policy{policy_kind::gzip, s->level};
  if (t.substr(0, 5) == "zstd-" && s->level <= 19) return policy{policy_kind::zstd, s->level};
  return std::nullopt;
}

std::string to_string(const policy& p) {
  switch (p.kind) {
    case policy_kind::off: return "off";
    case policy_kind::lz4: return "lz4";
    case policy_kind::automatic: return "auto";
    case policy_kind::gzip: return p.level == 0 ? "gzip" : "gzip-" + std::to_string(p.level);
    case policy_kind::zstd:
      return p.level == 0 ? "zstd" : p.level < 0 ? "zstd-fast-" + std::to_string(-p.level) : "zstd-" + std::to_string(p.level);
  }
  return "?";
}

namespace {

codec::spec spec_of(const char* name) { return *codec::parse_spec(name); }

// The specs `auto` and the probe use, parsed once rather than per record.
const codec::spec lz4_spec = spec_of("lz4"), gzip1_spec = spec_of("gzip-1"), zstd1_spec = spec_of("zstd-1"),
                  zstd3_spec = spec_of("zstd-3");

codec::spec fixed_spec(const policy& p) {
  switch (p.kind) {
    case policy_kind::lz4: return lz4_spec;
    // gzip without a level: level 1, the level QZFS runs on QAT, ISA-L's on the CPU.
    case policy_kind::gzip: return *codec::parse_spec("gzip-" + std::to_string(p.level == 0 ? 1 : p.level));
    case policy_kind::zstd:
      return *codec::parse_spec(p.level == 0 ? std::string("zstd-3") : p.level < 0 ? "zstd-fast-" + std::to_string(-p.level) : "zstd-" + std::to_string(p.level));
    default: return spec_of("none");
  }
}

// The per-thread workspace for lz4 probes, run on the submitting thread.
codec::workspace& probe_workspace() {
  thread_local codec::workspace ws;
  return ws;
}

}  // namespace

engine::engine(offload::scheduler& sched, engine_options o) : sched_(sched), o_(o), fixed_(fixed_spec(o.pol)) {}

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
  if (r.on_done != nullptr) r.on_done(r, r.on_done_ctx);
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
    if (r.on_done != nullptr) r.on_done(r, r.on_done_ctx);
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
    if (fl && s.producer != codec::engine::lz4 && fl->streak.load(std::memory_order_relaxed) >= file_learning::probe_after) {
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
    j.kind = offload::op::compress;
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
