#include "bench.h"

#include <time.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <thread>

#include <sys/resource.h>

#include "qzfs/codec/workspace.h"
#include "qzfs/offload/scheduler.h"
#include "qzfs/format/frame.h"

namespace qzfs::cli {
namespace {

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Cuts each record into `n` pieces whose boundaries are deliberately unaligned, as pages of a
// FUSE request or a partly merged record would be.
std::vector<iovec> make_iovecs(const corpus& c, unsigned n) {
  std::vector<iovec> v;
  v.reserve(c.records.size() * n);
  for (const auto& r : c.records) {
    std::byte* base = c.data.get() + r.offset;
    std::size_t prev = 0;
    for (unsigned i = 1; i <= n; ++i) {
      std::size_t cut = i == n ? r.size : std::min(r.size, r.size * i / n + (i * 7) % 13);
      cut = std::max(cut, prev);
      v.push_back({base + prev, cut - prev});
      prev = cut;
    }
  }
  return v;
}

struct phase_result {
  double wall = 0, cpu = 0;
  unsigned passes = 0;
};

// Runs `work(thread_workspace, record_index)` over all records on `threads` threads, repeating
// whole passes until `min_time` has passed (the first, warm-up pass is not counted when more
// follow). Contexts are made before the clock starts.
template <class Setup, class Work>
phase_result run_phase(std::size_t nrec, unsigned threads, double min_time, Setup setup, Work work) {
  auto one_run = [&](unsigned passes) {
    std::atomic<std::size_t> next{0};
    const std::size_t total = nrec * passes;
    std::barrier sync(static_cast<std::ptrdiff_t>(threads) + 1);
    std::vector<double> cpu(threads, 0.0);
    std::vector<std::exception_ptr> errors(threads);
    std::vector<std::jthread> pool;
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        codec::workspace ws;
        try {
          setup(ws);
        } catch (...) {
          errors[t] = std::current_exception();
        }
        sync.arrive_and_wait();  // ready
        sync.arrive_and_wait();  // go
        double c0 = thread_cpu_seconds();
        constexpr std::size_t chunk = 4;
        for (std::size_t j; !errors[t] && (j = next.fetch_add(chunk, std::memory_order_relaxed)) < total;) {
          for (std::size_t k = j; k < std::min(total, j + chunk); ++k) work(ws, k % nrec);
        }
        cpu[t] = thread_cpu_seconds() - c0;
        sync.arrive_and_wait();  // done
      });
    }
    sync.arrive_and_wait();
    auto t0 = std::chrono::steady_clock::now();
    sync.arrive_and_wait();
    sync.arrive_and_wait();
    auto t1 = std::chrono::steady_clock::now();
    pool.clear();
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
    phase_result r;
    r.wall = std::chrono::duration<double>(t1 - t0).count();
    for (double x : cpu) r.cpu += x;
    r.passes = passes;
    return r;
  };
  phase_result first = one_run(1);
  if (first.wall >= min_time || nrec == 0) return first;
  auto passes = static_cast<unsigned>(std::ceil(min_time / std::max(first.wall, 1e-6)));
  return one_run(std::clamp(passes, 1u, 100000u));
}

}  // namespace

backend_report report_of(const offload::backend& b) {
  auto st = b.stats();
  return {std::string(b.name()), std::string(offload::to_string(b.state())), b.reason(), st.submitted, st.completed,
          st.failed, st.probes, st.teardowns, static_cast<double>(st.busy_ns) * 1e-9,
          static_cast<double>(st.device_ns) * 1e-9, static_cast<double>(st.device_cpu_ns) * 1e-9};
}

double process_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) * 1e-6; };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

namespace {

// The backends of --accel: a CPU pool of `threads` workers and, unless "cpu", an accelerator.
struct offload_set {
  std::unique_ptr<offload::cpu_backend> cpu;
  std::unique_ptr<offload::accel_backend> accel;
  std::unique_ptr<offload::scheduler> sched;

  offload_set(const std::string& spec, const std::string& qatzip_lib, unsigned threads, std::size_t max_record,
              const std::string& verify) {
    cpu = std::make_unique<offload::cpu_backend>(offload::cpu_backend::options{.workers = threads, .max_record = max_record});
    accel = offload::make_accel(spec, qatzip_lib, max_record, verify);
    sched = std::make_unique<offload::scheduler>(*cpu, accel.get());
  }
};

}  // namespace

std::vector<codec::spec> default_bench_codecs() {
  using codec::spec;
  return {spec::lz4(),  spec::lz4hc(9), spec::gzip(1),  spec::gzip(2), spec::gzip(3),  spec::gzip(4),  spec::gzip(6),
          spec::gzip(9), spec::zstd(-5), spec::zstd(1), spec::zstd(3), spec::zstd(9), spec::zstd(19)};
}

std::vector<codec_result> run_bench(const corpus& c, const bench_options& o, const progress_fn& progress) {
  // Names mean what they mean everywhere (the codec table): "gzip" is gzip-1, as a mount's
  // compression=gzip; results name the level ("gzip-1").
  std::vector<codec::spec> specs;
  if (o.codecs.empty()) specs = default_bench_codecs();
  for (const auto& n : o.codecs) specs.push_back(codec::parse_spec_or_throw(n));
  if (!o.baseline.empty()) {
    const codec::spec base = codec::parse_spec_or_throw(o.baseline);
    specs.erase(std::remove(specs.begin(), specs.end(), base), specs.end());
    specs.insert(specs.begin(), base);
  }
  if (o.record_size == 0 || o.record_size > codec::default_max_input)
    throw std::invalid_argument("record size must be between 1 byte and 1 MiB");

  if (!o.accel.empty()) offload::check_accel_spec(o.accel, "--accel");  // refuse a bad one before any work
  const std::size_t nrec = c.records.size();
  const unsigned scatter = std::max(1u, o.scatter);
  const std::vector<iovec> iovs = make_iovecs(c, scatter);

  // Every record gets its own output slot, so decompression reads what compression wrote.
  std::vector<std::size_t> cap(nrec), slot(nrec);
  std::size_t arena_size = 0;
  for (std::size_t i = 0; i < nrec; ++i) {
    cap[i] = static_cast<std::size_t>(std::floor(static_cast<double>(c.records[i].size) * (1.0 - o.min_saving)));
    slot[i] = arena_size;
    arena_size += cap[i];
  }
  std::unique_ptr<std::byte[]> packed(new std::byte[arena_size + 1]);
  std::unique_ptr<std::byte[]> decoded(new std::byte[c.bytes + 1]);
  std::vector<codec::compress_result> res(nrec);

  std::vector<codec_result> out;
  for (std::size_t si = 0; si < specs.size(); ++si) {
    const codec::spec s = specs[si];
    codec_result r;
    r.name = codec::to_string(s);
    r.spec = s;
    r.records = nrec;
    // Two phases per codec (compress, decompress); the parallel run is part of the first.
    auto say = [&](const char* what, std::size_t phase) {
      if (progress) progress(r.name + " " + what, si * 2 + phase, specs.size() * 2);
    };

    say("compress", 0);
    std::atomic<bool> gathers{false};
    phase_result cph;
    // The baseline always runs on the codec directly: the yardstick does not move with --accel.
    if (o.accel.empty() || (si == 0 && !o.baseline.empty())) {
      cph = run_phase(
          nrec, o.threads, o.min_time, [&](codec::workspace& ws) { gathers = ws.get(s).gathers(); },
          [&](codec::workspace& ws, std::size_t i) {
            res[i] = ws.get(s).compress(std::span(iovs).subspan(i * scatter, scatter),
                                        std::span(packed.get() + slot[i], cap[i]));
          });
    } else {
      // Through the offload module: every record a job, routed by the scheduler.
      offload_set off(o.accel, o.qatzip_lib, o.threads, o.record_size, o.accel_verify);
      std::vector<offload::job> jobs(nrec);
      auto one_pass = [&] {
        for (std::size_t i = 0; i < nrec; ++i) {
          jobs[i] = offload::job{};
          jobs[i].spec = s;
          jobs[i].in = std::span(iovs).subspan(i * scatter, scatter);
          jobs[i].out = std::span(packed.get() + slot[i], cap[i]);
        }
        off.sched->run(jobs);
      };
      const double cpu0 = process_cpu_seconds();
      auto t0 = std::chrono::steady_clock::now();
      do {
        one_pass();
        ++cph.passes;
        cph.wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      } while (cph.wall < o.min_time);
      cph.cpu = process_cpu_seconds() - cpu0;
      r.process_cpu_s = cph.cpu;
      for (std::size_t i = 0; i < nrec; ++i) res[i] = {jobs[i].st, jobs[i].out_size};
      r.backends.push_back(report_of(*off.cpu));
      if (off.accel) r.backends.push_back(report_of(*off.accel));
      r.routing = off.sched->stats();
    }
    r.gathers = gathers;
    std::size_t compressed_logical = 0;
    for (std::size_t i = 0; i < nrec; ++i) {
      const auto& rec = c.records[i];
      r.logical_bytes += rec.size;
      if (res[i].st == codec::status::ok) {
        r.stored_bytes += format::frame_header_size + res[i].size;
        compressed_logical += rec.size;
      } else if (res[i].st == codec::status::does_not_fit) {
        r.stored_bytes += format::frame_header_size + rec.size;
        ++r.not_fit;
      } else {
        throw std::runtime_error(r.name + ": compression failed on record " + std::to_string(i));
      }
    }
    r.ratio = r.stored_bytes ? static_cast<double>(r.logical_bytes) / static_cast<double>(r.stored_bytes) : 0;
    const double mib = 1024.0 * 1024.0;
    const double cbytes = static_cast<double>(r.logical_bytes) * cph.passes;
    r.compress_passes = cph.passes;
    r.compress_mbs_total = cph.wall > 0 ? cbytes / mib / cph.wall : 0;
    r.compress_mbs_thread = cph.cpu > 0 ? cbytes / mib / cph.cpu : 0;
    r.compress_cpu_s_per_gib = cbytes > 0 ? cph.cpu / (cbytes / (mib * 1024.0)) : 0;
    if (o.scaling) {
      // One thread and N threads, alternating, best of three rounds each: on a shared machine
      // the least disturbed run of each is the fair pair.
      auto compress_all = [&](codec::workspace& ws, std::size_t i) {
        (void)ws.get(s).compress(std::span(iovs).subspan(i * scatter, scatter), std::span(packed.get() + slot[i], cap[i]));
      };
      auto rate = [&](const phase_result& p) {
        return p.wall > 0 ? static_cast<double>(r.logical_bytes) * p.passes / mib / p.wall : 0.0;
      };
      for (int round = 0; round < 3; ++round) {
        say("compress, one thread vs all", 0);
        auto one = run_phase(nrec, 1, o.min_time, [&](codec::workspace& ws) { ws.get(s); }, compress_all);
        r.compress_mbs_one_thread = std::max(r.compress_mbs_one_thread, rate(one));
        if (round == 0) continue;  // the measured phase above was this round's N-thread run
        auto all = run_phase(nrec, o.threads, o.min_time, [&](codec::workspace& ws) { ws.get(s); }, compress_all);
        r.compress_mbs_total = std::max(r.compress_mbs_total, rate(all));
      }
    }
    say("decompress", 1);
    // Stale bytes from the previous codec must not pass for this one's output.
    std::memset(decoded.get(), 0xA5, c.bytes);
    auto dph = run_phase(
        nrec, o.threads, o.min_time, [&](codec::workspace& ws) { ws.get(s); },
        [&](codec::workspace& ws, std::size_t i) {
          if (res[i].st != codec::status::ok) return;
          const auto& rec = c.records[i];
          auto st = ws.decompress(s.format, std::span(packed.get() + slot[i], res[i].size),
                                  std::span(decoded.get() + rec.offset, rec.size));
          if (st != codec::status::ok) res[i].st = codec::status::error;  // checked below
        });
    r.decompress_passes = dph.passes;
    const double dbytes = static_cast<double>(compressed_logical) * dph.passes;
    r.decompress_mbs_total = dph.wall > 0 && dbytes > 0 ? dbytes / mib / dph.wall : 0;
    r.decompress_mbs_thread = dph.cpu > 0 && dbytes > 0 ? dbytes / mib / dph.cpu : 0;

    for (std::size_t i = 0; i < nrec; ++i) {
      if (res[i].st == codec::status::error)
        throw std::runtime_error(r.name + ": record " + std::to_string(i) + " did not decode");
      if (o.verify && res[i].st == codec::status::ok &&
          std::memcmp(decoded.get() + c.records[i].offset, c.data.get() + c.records[i].offset, c.records[i].size) != 0)
        throw std::runtime_error(r.name + ": record " + std::to_string(i) + " decoded to different bytes");
    }
    r.verified = o.verify;
    out.push_back(r);
  }
  return out;
}

}  // namespace qzfs::cli
