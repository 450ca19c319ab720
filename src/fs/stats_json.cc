// fs/: the statistics' JSON form, both ways (the only code that knows its keys).
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "qzfs/fs/stats.h"

namespace qzfs::fs {

// The groups whose JSON keys are their field names, both ways from one list (a key that is
// missing keeps its default: an older daemon).
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(stats::auto_cost, cls, codec, ns_per_byte, stored_per_byte, samples, cost)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(stats::engine_counts, records, holes, raw, compressed, checker_skips,
                                                probe_skips, cap_misses, errors, bytes_in, bytes_out, per_format,
                                                per_producer, auto_costs)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(stats::cache_counts, limit_bytes, used_bytes, peak_bytes, reliefs)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(stats::routing_counts, to_accel, to_cpu, small, overflow, not_serving,
                                                redone, waited, decode_to_accel, decode_to_cpu, decode_redone)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(stats::sync_counts, fsyncs, logged, recovered)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(stats::cpu_counts, workers, jobs, failed, bytes_in, bytes_out, busy_s,
                                                decompressed, decompressed_bytes)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(stats::process_counts, cpu_s, device_cpu_s)

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(file_usage, container, logical_bytes, allocated_bytes, records, holes,
                                                raw, dirty_records, per_format)

std::string to_json(const file_usage& u) { return nlohmann::json(u).dump(); }

file_usage file_usage_from_json(std::string_view text) {
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) throw std::invalid_argument("the file's usage is not a JSON object");
  try {
    return j.get<file_usage>();
  } catch (const nlohmann::json::exception& x) {
    throw std::invalid_argument(std::string("the file's usage: ") + x.what());
  }
}

std::string to_json(const stats& s, int indent) {
  nlohmann::json accel{{"spec", s.accel.spec}, {"state", s.accel.state}};
  if (s.accel.present) {
    accel["name"] = s.accel.name;
    accel["reason"] = s.accel.reason;
    accel["jobs"] = s.accel.jobs;
    accel["failed"] = s.accel.failed;
    accel["probes"] = s.accel.probes;
    accel["teardowns"] = s.accel.teardowns;
    accel["bytes_in"] = s.accel.bytes_in;
    accel["bytes_out"] = s.accel.bytes_out;
    accel["device_cpu_ns"] = s.accel.device_cpu_ns;
    accel["device_ns"] = s.accel.device_ns;
    accel["emulation_ns"] = s.accel.emulation_ns;
    accel["decompressed"] = s.accel.decompressed;
    accel["decompressed_bytes"] = s.accel.decompressed_bytes;
  }
  const nlohmann::json j{
      {"backing", s.backing},
      {"compression", s.compression},
      {"recordsize", s.recordsize},
      {"files", s.files},
      {"containers", s.containers},
      {"plain_files", s.plain_files},
      {"logical_bytes", s.logical_bytes},
      {"allocated_bytes", s.allocated_bytes},
      {"ratio", s.ratio},
      {"open_files", s.open_files},
      {"scan", s.scan_done ? "done" : "running"},
      {"dirty_records", s.dirty_records},
      {"engine", s.engine},
      {"cache", s.cache},
      {"sync", s.sync},
      {"accel", accel},
      {"routing", s.routing},
      {"cpu", s.cpu},
      {"process", s.process}};
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {

// `out` from j[key] when it is there.
template <class T>
void read(const nlohmann::json& j, const char* key, T& out) {
  if (auto it = j.find(key); it != j.end() && !it->is_null()) out = it->get<T>();
}

const nlohmann::json& object_at(const nlohmann::json& j, const char* key) {
  static const nlohmann::json empty = nlohmann::json::object();
  auto it = j.find(key);
  return it != j.end() && it->is_object() ? *it : empty;
}

void read_accel(const nlohmann::json& a, stats::accel_counts& sa) {
  read(a, "spec", sa.spec);
  read(a, "state", sa.state);
  sa.present = a.contains("name");
  read(a, "name", sa.name);
  read(a, "reason", sa.reason);
  read(a, "jobs", sa.jobs);
  read(a, "failed", sa.failed);
  read(a, "probes", sa.probes);
  read(a, "teardowns", sa.teardowns);
  read(a, "bytes_in", sa.bytes_in);
  read(a, "bytes_out", sa.bytes_out);
  read(a, "device_cpu_ns", sa.device_cpu_ns);
  read(a, "device_ns", sa.device_ns);
  read(a, "emulation_ns", sa.emulation_ns);
  read(a, "decompressed", sa.decompressed);
  read(a, "decompressed_bytes", sa.decompressed_bytes);
}

}  // namespace

stats stats_from_json(std::string_view text) {
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) throw std::invalid_argument("the statistics are not a JSON object");
  stats s;
  try {
    read(j, "backing", s.backing);
    read(j, "compression", s.compression);
    read(j, "recordsize", s.recordsize);
    read(j, "files", s.files);
    read(j, "containers", s.containers);
    read(j, "plain_files", s.plain_files);
    read(j, "logical_bytes", s.logical_bytes);
    read(j, "allocated_bytes", s.allocated_bytes);
    read(j, "ratio", s.ratio);
    read(j, "open_files", s.open_files);
    std::string scan;
    read(j, "scan", scan);
    s.scan_done = scan == "done";
    read(j, "dirty_records", s.dirty_records);
    read(j, "engine", s.engine);
    read_accel(object_at(j, "accel"), s.accel);
    read(j, "routing", s.routing);
    read(j, "cpu", s.cpu);
    read(j, "process", s.process);
    read(j, "cache", s.cache);
    read(j, "sync", s.sync);
  } catch (const nlohmann::json::exception& x) {
    throw std::invalid_argument(std::string("the statistics: ") + x.what());
  }
  return s;
}

}  // namespace qzfs::fs
