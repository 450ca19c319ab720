// fs/: the statistics' JSON form, both ways (the only code that knows its keys).
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "qzfs/fs/stats.h"

namespace qzfs::fs {

std::string to_json(const stats& s, int indent) {
  const auto& e = s.engine;
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
  }
  const auto& r = s.routing;
  const auto& c = s.cpu;
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
      {"engine",
       {{"records", e.records}, {"holes", e.holes}, {"raw", e.raw}, {"compressed", e.compressed},
        {"checker_skips", e.checker_skips}, {"probe_skips", e.probe_skips}, {"cap_misses", e.cap_misses},
        {"errors", e.errors}, {"bytes_in", e.bytes_in}, {"bytes_out", e.bytes_out},
        {"per_format", e.per_format.empty() ? nlohmann::json::object() : nlohmann::json(e.per_format)},
        {"per_producer", e.per_producer.empty() ? nlohmann::json::object() : nlohmann::json(e.per_producer)}}},
      {"cache",
       {{"limit_bytes", s.cache.limit_bytes}, {"used_bytes", s.cache.used_bytes}, {"peak_bytes", s.cache.peak_bytes},
        {"reliefs", s.cache.reliefs}}},
      {"accel", accel},
      {"routing",
       {{"to_accel", r.to_accel}, {"to_cpu", r.to_cpu}, {"small", r.small}, {"overflow", r.overflow},
        {"not_serving", r.not_serving}, {"redone", r.redone}}},
      {"cpu",
       {{"workers", c.workers}, {"jobs", c.jobs}, {"failed", c.failed}, {"bytes_in", c.bytes_in},
        {"bytes_out", c.bytes_out}, {"busy_s", c.busy_s}}}};
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

void read_engine(const nlohmann::json& e, stats::engine_counts& se) {
  read(e, "records", se.records);
  read(e, "holes", se.holes);
  read(e, "raw", se.raw);
  read(e, "compressed", se.compressed);
  read(e, "checker_skips", se.checker_skips);
  read(e, "probe_skips", se.probe_skips);
  read(e, "cap_misses", se.cap_misses);
  read(e, "errors", se.errors);
  read(e, "bytes_in", se.bytes_in);
  read(e, "bytes_out", se.bytes_out);
  read(e, "per_format", se.per_format);
  read(e, "per_producer", se.per_producer);
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
}

void read_backends(const nlohmann::json& j, stats& s) {
  const auto& r = object_at(j, "routing");
  read(r, "to_accel", s.routing.to_accel);
  read(r, "to_cpu", s.routing.to_cpu);
  read(r, "small", s.routing.small);
  read(r, "overflow", s.routing.overflow);
  read(r, "not_serving", s.routing.not_serving);
  read(r, "redone", s.routing.redone);
  const auto& c = object_at(j, "cpu");
  read(c, "workers", s.cpu.workers);
  read(c, "jobs", s.cpu.jobs);
  read(c, "failed", s.cpu.failed);
  read(c, "bytes_in", s.cpu.bytes_in);
  read(c, "bytes_out", s.cpu.bytes_out);
  read(c, "busy_s", s.cpu.busy_s);
  const auto& k = object_at(j, "cache");
  read(k, "limit_bytes", s.cache.limit_bytes);
  read(k, "used_bytes", s.cache.used_bytes);
  read(k, "peak_bytes", s.cache.peak_bytes);
  read(k, "reliefs", s.cache.reliefs);
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
    read_engine(object_at(j, "engine"), s.engine);
    read_accel(object_at(j, "accel"), s.accel);
    read_backends(j, s);
  } catch (const nlohmann::json::exception& x) {
    throw std::invalid_argument(std::string("the statistics: ") + x.what());
  }
  return s;
}

}  // namespace qzfs::fs
