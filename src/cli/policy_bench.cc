#include "policy_bench.h"

#include <sys/resource.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <thread>

#include "qzfs/engine/engine.h"
#include "qzfs/format/frame.h"

namespace qzfs::cli {

policy_report run_policy_bench(const corpus& c, const bench_options& o, const std::string& policy_name) {
  auto pol = engine::parse_policy(policy_name);
  if (!pol) throw std::invalid_argument("unknown policy '" + policy_name + "' (" + engine::policy_help() + ")");
  const std::string accel_spec = o.accel.empty() ? "cpu" : o.accel;
  offload::cpu_backend cpu({.workers = o.threads, .max_record = o.record_size});
  auto accel = offload::make_accel(accel_spec, o.qatzip_lib, o.record_size, o.accel_verify);
  offload::scheduler sched(cpu, accel.get());
  engine::engine compressor(sched, {.pol = *pol, .min_saving = o.min_saving, .checker = !o.no_checker});

  const std::size_t nrec = c.records.size();
  std::vector<iovec> iov(nrec);
  std::vector<engine::record> recs(nrec);
  std::unique_ptr<std::byte[]> payload(new std::byte[c.bytes + 1]);
  for (std::size_t i = 0; i < nrec; ++i) {
    const auto& r = c.records[i];
    iov[i] = {c.data.get() + r.offset, r.size};
    recs[i].in = std::span(&iov[i], 1);
    recs[i].payload = std::span(payload.get() + r.offset, r.size);
  }
  std::vector<std::unique_ptr<engine::file_learning>> learning(c.files);
  for (auto& l : learning) l = std::make_unique<engine::file_learning>();

  // One writer per CPU worker, each taking whole files and handing their records over in batches,
  // the way write-back of several files at once would.
  std::vector<std::pair<std::size_t, std::size_t>> files;  // record ranges, one per file
  for (std::size_t i = 0; i < nrec;) {
    std::size_t j = i;
    while (j < nrec && c.records[j].file == c.records[i].file) ++j;
    files.emplace_back(i, j);
    i = j;
  }
  const std::size_t batch = 16;
  std::atomic<std::size_t> next{0};
  const double cpu0 = process_cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  {
    std::vector<std::jthread> writers;
    for (unsigned w = 0; w < std::max(1u, o.threads); ++w)
      writers.emplace_back([&] {
        for (std::size_t f; (f = next.fetch_add(1)) < files.size();) {
          auto [first, last] = files[f];
          auto* fl = o.no_checker ? nullptr : learning[c.records[first].file].get();
          for (std::size_t i = first; i < last; i += batch)
            compressor.compress(std::span(recs).subspan(i, std::min(batch, last - i)), fl);
        }
      });
  }
  policy_report rep;
  rep.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rep.process_cpu_s = process_cpu_seconds() - cpu0;
  rep.policy = engine::to_string(*pol);
  rep.accel = accel_spec;
  rep.workers = cpu.workers();

  rep.classes.resize(c.sources.size());
  for (std::size_t s = 0; s < c.sources.size(); ++s) rep.classes[s].source = c.sources[s];
  for (std::size_t i = 0; i < nrec; ++i) {
    auto& k = rep.classes[c.records[i].source];
    const auto& r = recs[i];
    const std::size_t n = c.records[i].size;
    ++k.records;
    k.logical += n;
    switch (r.result) {
      case engine::outcome::hole: ++k.holes; break;
      case engine::outcome::compressed:
        ++k.compressed;
        k.stored += format::frame_header_size + r.payload_size;
        ++k.codecs[codec::to_string(r.spec)];
        ++k.backends[r.ran_on];
        break;
      case engine::outcome::raw:
        k.stored += format::frame_header_size + n;
        switch (r.reason) {
          case engine::record::why::checker: ++k.raw_checker; break;
          case engine::record::why::probe: ++k.raw_probe; break;
          case engine::record::why::cap: ++k.raw_cap; ++k.backends[r.ran_on]; break;
          case engine::record::why::policy_off: ++k.raw_policy; break;
          default: ++k.raw_error; break;
        }
        break;
    }
  }
  for (const auto& k : rep.classes) {
    rep.logical += k.logical;
    rep.stored += k.stored;
  }
  rep.backends.push_back(report_of(cpu));
  if (accel) rep.backends.push_back(report_of(*accel));
  rep.routing = sched.stats();
  return rep;
}

}  // namespace qzfs::cli
