// fs/: the compression service of a mount (service.h): the one place src/fs/ wires the CPU
// pool, the accelerator, the scheduler and the engine.
#include "service.h"

#include <sys/resource.h>

#include <map>
#include <mutex>

#include "qzfs/codec/codec.h"
#include "qzfs/engine/engine.h"
#include "qzfs/offload/accel_backend.h"
#include "qzfs/offload/cpu_backend.h"
#include "qzfs/offload/device.h"
#include "qzfs/offload/scheduler.h"

namespace qzfs::fs::detail {

// Destroyed in reverse order: the engine before the scheduler before the backends.
struct service::impl {
  std::unique_ptr<offload::cpu_backend> cpu;
  std::unique_ptr<offload::accel_backend> accel;
  std::unique_ptr<offload::scheduler> sched;
  std::unique_ptr<engine::engine> compressor;
  std::mutex others_m;
  std::map<std::string, std::unique_ptr<engine::engine>> others;  // by policy name (qzfs set)
};

std::string service::check(const mount_options& o) {
  if (!engine::parse_policy(o.compression)) {
    return "compression=" + o.compression + ": unknown (off, lz4, gzip[-N], zstd[-N], auto)";
  }
  if (o.accel == "qat") {
    // Asked for by name: refuse to mount without it (accel=auto uses it when present).
    auto dev = offload::make_qat_device({.library = o.qatzip});
    auto probe = dev->open_session();  // (a session must not outlive its device)
    const bool works = probe.session != nullptr;
    probe.session.reset();
    if (!works && probe.permanent) return "accel=qat: " + probe.reason + " (accel=auto uses QAT when present)";
  }
  return {};
}

service::service(const mount_options& o) : impl_(std::make_unique<impl>()) {
  impl_->cpu = std::make_unique<offload::cpu_backend>(offload::cpu_backend::options{.workers = o.threads});
  impl_->accel = offload::make_accel(o.accel, o.qatzip, o.recordsize, o.accel_verify);
  impl_->sched = std::make_unique<offload::scheduler>(*impl_->cpu, impl_->accel.get());
  impl_->compressor = std::make_unique<engine::engine>(*impl_->sched, engine::engine_options{.pol = *engine::parse_policy(o.compression)});
}

service::~service() = default;

engine::engine& service::engine() noexcept { return *impl_->compressor; }

engine::engine& service::engine_for(const std::string& policy) {
  const auto p = engine::parse_policy(policy);
  if (!p) return *impl_->compressor;
  std::lock_guard lk(impl_->others_m);
  auto& e = impl_->others[engine::to_string(*p)];
  if (!e) e = std::make_unique<engine::engine>(*impl_->sched, engine::engine_options{.pol = *p});
  return *e;
}

std::string service::policy_name(const std::string& policy) const {
  const auto p = engine::parse_policy(policy);
  return engine::to_string(p ? *p : impl_->compressor->options().pol);
}

namespace {

// The non-zero counts of an array indexed by an enum, by the enum's name.
template <class Enum, class Counts>
std::map<std::string, std::uint64_t> by_name(const Counts& counts) {
  std::map<std::string, std::uint64_t> out;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] != 0) out[std::string(codec::to_string(static_cast<Enum>(i)))] = counts[i];
  }
  return out;
}

}  // namespace

void service::fill(stats& st) const {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) * 1e-6; };
  st.process.cpu_s = sec(ru.ru_utime) + sec(ru.ru_stime);
  if (impl_->accel) st.process.device_cpu_s = static_cast<double>(impl_->accel->device_cpu_ns()) * 1e-9;
  // Every engine's records: the mount's policy and those of directories and files (qzfs set).
  auto es = impl_->compressor->stats();
  // auto's estimates: the mount's engine's when its policy is auto, else those of the auto engine
  // of directories and files.
  std::vector<stats::auto_cost> costs;
  auto auto_costs = [&](const engine::engine& e) {
    for (auto c : {engine::compressibility::compressible, engine::compressibility::weak}) {
      for (const auto& a : e.auto_estimates(c)) {
        costs.push_back({c == engine::compressibility::weak ? "weak" : "compressible",
                                        codec::to_string(a.spec), a.ns_per_byte, a.stored_per_byte, a.samples, a.cost()});
      }
    }
  };
  if (impl_->compressor->options().pol.kind == engine::policy_kind::automatic) auto_costs(*impl_->compressor);
  {
    std::lock_guard lk(impl_->others_m);
    if (costs.empty()) {
      if (auto it = impl_->others.find("auto"); it != impl_->others.end()) auto_costs(*it->second);
    }
    for (const auto& [name, e] : impl_->others) {
      const auto o = e->stats();
      es.records += o.records, es.holes += o.holes, es.raw += o.raw, es.compressed += o.compressed;
      es.checker_skips += o.checker_skips, es.probe_skips += o.probe_skips, es.cap_misses += o.cap_misses;
      es.errors += o.errors, es.bytes_in += o.bytes_in, es.bytes_out += o.bytes_out;
      for (std::size_t i = 0; i < es.per_format.size(); ++i) es.per_format[i] += o.per_format[i];
      for (std::size_t i = 0; i < es.per_producer.size(); ++i) es.per_producer[i] += o.per_producer[i];
    }
  }
  st.engine = {.records = es.records, .holes = es.holes, .raw = es.raw, .compressed = es.compressed,
               .checker_skips = es.checker_skips, .probe_skips = es.probe_skips, .cap_misses = es.cap_misses,
               .errors = es.errors, .bytes_in = es.bytes_in, .bytes_out = es.bytes_out,
               .per_format = by_name<codec::payload_format>(es.per_format),
               .per_producer = by_name<codec::producer_id>(es.per_producer),
               .auto_costs = std::move(costs)};
  const auto ss = impl_->sched->stats();
  st.routing = {.to_accel = ss.to_accel, .to_cpu = ss.to_cpu, .small = ss.small, .overflow = ss.overflow,
                .not_serving = ss.not_serving, .redone = ss.redone, .waited = ss.waited,
                .decode_to_accel = ss.decode_to_accel, .decode_to_cpu = ss.decode_to_cpu,
                .decode_redone = ss.decode_redone};
  const auto cs = impl_->cpu->stats();
  // jobs: compression jobs, as before decompression jobs existed (decoded records apart).
  st.cpu = {.workers = impl_->cpu->workers(), .jobs = cs.completed - cs.decompressed, .failed = cs.failed, .bytes_in = cs.bytes_in,
            .bytes_out = cs.bytes_out, .busy_s = static_cast<double>(cs.busy_ns) / 1e9,
            .decompressed = cs.decompressed, .decompressed_bytes = cs.decompressed_bytes};
  if (const auto& a = impl_->accel) {
    const auto as = a->stats();
    st.accel.present = true;
    st.accel.name = std::string(a->name());
    st.accel.state = std::string(offload::to_string(a->state()));
    st.accel.reason = a->reason();
    st.accel.jobs = as.completed - as.decompressed;  // compression jobs (decoded records apart)
    st.accel.failed = as.failed;
    st.accel.probes = as.probes;
    st.accel.teardowns = as.teardowns;
    st.accel.bytes_in = as.bytes_in;
    st.accel.bytes_out = as.bytes_out;
    st.accel.device_cpu_ns = as.device_cpu_ns;
    st.accel.device_ns = as.device_ns;
    st.accel.emulation_ns = as.emulation_ns;
    st.accel.decompressed = as.decompressed;
    st.accel.decompressed_bytes = as.decompressed_bytes;
  } else {
    st.accel.state = "none";
  }
}

}  // namespace qzfs::fs::detail
