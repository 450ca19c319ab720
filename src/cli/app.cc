#include "app.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <sstream>
#include <stdexcept>

#include "bench.h"
#include "man.h"
#include "progress.h"
#include "tools.h"
#include "qzfs/engine/engine.h"
#include "qzfs/fs/filesystem.h"
#include "qzfs/fs/stats.h"
#include "qzfs/offload/accel_backend.h"

#include <spawn.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <cstring>
#include "policy_bench.h"
#include "corpus.h"
#include "qzfs/codec/codec.h"

namespace qzfs::cli {
namespace {

// `qzfs stats` as text.
void print_stats(std::FILE* out, const fs::stats& st, const std::string& point) {
  const auto mib = [](std::uint64_t v) { return static_cast<double>(v) / (1 << 20); };
  const auto& e = st.engine;
  fmt::print(out, "{} on {} (compression {}, records of {} KiB)\n", st.backing, point, st.compression, st.recordsize / 1024);
  fmt::print(out, "files        {} ({} compressed, {} plain), {} open, {} records buffered\n", st.files, st.containers,
             st.plain_files, st.open_files, st.dirty_records);
  fmt::print(out, "size         {:.1f} MiB logical, {:.1f} MiB stored, ratio {:.3f}\n", mib(st.logical_bytes),
             mib(st.allocated_bytes), st.ratio);
  fmt::print(out, "since mount  {} records: {} compressed, {} raw ({} by the checker, {} by the lz4 probe, {} did not save "
             "10%), {} holes, {} errors; {:.1f} MiB in, {:.1f} MiB out\n",
             e.records, e.compressed, e.raw, e.checker_skips, e.probe_skips, e.cap_misses, e.holes, e.errors,
             mib(e.bytes_in), mib(e.bytes_out));
  auto counts = [](const std::map<std::string, std::uint64_t>& m) {  // {"gzip": 3, "lz4": 1} -> "gzip 3, lz4 1"
    std::string line;
    for (const auto& kv : m) line += fmt::format("{}{} {}", line.empty() ? "" : ", ", kv.first, kv.second);
    return line;
  };
  const std::string formats = counts(e.per_format), producers = counts(e.per_producer);
  if (!formats.empty()) fmt::print(out, "codecs       {} (made by {})\n", formats, producers);
  if (!e.auto_costs.empty()) {
    // auto's estimates per class: "zstd-1 2.91 ns/B 0.287 stored/B (40)", the cheapest first.
    for (const char* cls : {"compressible", "weak"}) {
      std::vector<const fs::stats::auto_cost*> cs;
      for (const auto& c : e.auto_costs)
        if (c.cls == cls && c.samples > 0) cs.push_back(&c);
      if (cs.empty()) continue;
      std::sort(cs.begin(), cs.end(), [](auto* a, auto* b) { return a->cost < b->cost; });
      std::string line;
      for (auto* c : cs)
        line += fmt::format("{}{} {:.2f} ns/B {:.3f} stored/B ({})", line.empty() ? "" : ", ", c->codec, c->ns_per_byte,
                            c->stored_per_byte, c->samples);
      fmt::print(out, "auto         {}: {}\n", cls, line);
    }
  }
  fmt::print(out, "backends     cpu: {} workers, {} jobs, {:.1f} s busy; accelerator: {} jobs, {} redone on the cpu\n",
             st.cpu.workers, st.cpu.jobs, st.cpu.busy_s, st.routing.to_accel, st.routing.redone);
  fmt::print(out, "decoded      by backends, cpu: {} records ({:.1f} MiB); accelerator: {} records ({:.1f} MiB), {} redone on "
             "the cpu (the rest by the request threads)\n",
             st.cpu.decompressed, mib(st.cpu.decompressed_bytes), st.accel.decompressed, mib(st.accel.decompressed_bytes),
             st.routing.decode_redone);
  // The reason names the state already when it is one ("unavailable: cannot load ...").
  const std::string& state = st.accel.state;
  const std::string& why = st.accel.reason;
  fmt::print(out, "accelerator  {} ({})\n", st.accel.spec,
             why.empty() ? state : why.rfind(state, 0) == 0 ? why : state + ": " + why);
  // Host CPU: the daemon's own, less a modelled card's threads (what a card would spend on its
  // silicon); per GiB of records the engine took since the mount.
  const double gib_in = static_cast<double>(e.bytes_in) / (1u << 30);
  fmt::print(out, "cpu          host {:.2f} s since start{}{}\n", st.process.host_cpu_s(),
             gib_in > 0 ? fmt::format(", {:.2f} s per GiB of records", st.process.host_cpu_s() / gib_in) : "",
             st.process.device_cpu_s > 0 ? fmt::format(" (the daemon's {:.2f} s less the modelled card's {:.2f} s)",
                                                      st.process.cpu_s, st.process.device_cpu_s)
                                         : "");
  if (st.accel.present && st.accel.device_ns > 0)
    fmt::print(out, "device time  {:.2f} s on {} jobs{}\n", static_cast<double>(st.accel.device_ns) * 1e-9, st.accel.jobs,
               st.accel.emulation_ns > 0 ? fmt::format(" as modelled (this machine took {:.2f} s more to compute them)",
                                                       static_cast<double>(st.accel.emulation_ns) * 1e-9)
                                         : "");
  fmt::print(out, "cache        {:.1f} MiB in use, {:.1f} MiB at most, of {:.0f} MiB; {} reliefs\n", mib(st.cache.used_bytes),
             mib(st.cache.peak_bytes), mib(st.cache.limit_bytes), st.cache.reliefs);
  fmt::print(out, "fsync        {} since mount, {} through sync logs; {} logged fsync(s) recovered at open\n", st.sync.fsyncs,
             st.sync.logged, st.sync.recovered);
}

// `qzfs stats M...`: each mount's statistics, and with several a total of what they store. A
// mount point that cannot be read is said and makes the exit status 1; the others still print.
int print_stats_of(const std::vector<std::string>& points, bool json, std::FILE* out, std::FILE* err) {
  int rc = 0;
  std::vector<std::pair<std::string, fs::stats>> got;
  for (const auto& point : points) {
    const ssize_t need = ::getxattr(point.c_str(), "user.qzfs.stats", nullptr, 0);
    std::string buf(need > 0 ? static_cast<std::size_t>(need) : 0, '\0');
    const ssize_t n = need > 0 ? ::getxattr(point.c_str(), "user.qzfs.stats", buf.data(), buf.size()) : -1;
    if (n < 0) {
      fmt::print(err, "qzfs stats: {}: not a qzfs mount point ({})\n", point, std::strerror(errno));
      rc = 1;
      continue;
    }
    buf.resize(static_cast<std::size_t>(n));
    got.emplace_back(point, fs::stats_from_json(buf));
  }
  std::uint64_t files = 0, logical = 0, stored = 0;
  for (const auto& g : got) {
    files += g.second.files;
    logical += g.second.logical_bytes;
    stored += g.second.allocated_bytes;
  }
  const double ratio = stored > 0 ? static_cast<double>(logical) / static_cast<double>(stored) : 1.0;
  if (json && points.size() == 1) {
    if (!got.empty()) fmt::print(out, "{}\n", fs::to_json(got[0].second, 2));
  } else if (json) {
    nlohmann::json j{{"mounts", nlohmann::json::array()},
                     {"total", {{"mounts", got.size()}, {"files", files}, {"logical_bytes", logical},
                                {"allocated_bytes", stored}, {"ratio", ratio}}}};
    for (const auto& g : got) j["mounts"].push_back(nlohmann::json::parse(fs::to_json(g.second, -1)));
    fmt::print(out, "{}\n", j.dump(2));
  } else {
    for (std::size_t i = 0; i < got.size(); ++i) {
      if (i > 0) fmt::print(out, "\n");
      print_stats(out, got[i].second, got[i].first);
    }
    if (points.size() > 1) {
      const auto mib = [](std::uint64_t v) { return static_cast<double>(v) / (1 << 20); };
      fmt::print(out, "\ntotal        {} mounts, {} files, {:.1f} MiB logical, {:.1f} MiB stored, ratio {:.3f}\n", got.size(),
                 files, mib(logical), mib(stored), ratio);
    }
  }
  return rc;
}

// "128K", "1M", "4096" -> bytes.
std::size_t parse_size(const std::string& s) {
  std::size_t pos = 0;
  unsigned long long v = std::stoull(s, &pos);
  std::string unit = s.substr(pos);
  for (auto& ch : unit) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (unit == "" || unit == "B") return v;
  if (unit == "K" || unit == "KIB" || unit == "KB") return v << 10;
  if (unit == "M" || unit == "MIB" || unit == "MB") return v << 20;
  if (unit == "G" || unit == "GIB" || unit == "GB") return v << 30;
  throw std::invalid_argument("bad size '" + s + "' (use a number with K, M or G)");
}

// "gzip, which is gzip-1": a policy as written and what it compresses with.
std::string policy_meaning(const std::string& name) {
  const auto p = engine::parse_policy(name);
  return p ? engine::describe(*p) : name;
}

std::string fmt_mbs(double v) { return v > 0 ? fmt::format("{:.1f}", v) : "-"; }

// ", host 1.23 s (0.45 s per GiB) and the modelled card's threads 2.00 s" when a modelled card
// ran: its threads' CPU is the card's, not the host's (docs/QAT.md).
std::string host_cpu_note(double process_cpu_s, const std::vector<backend_report>& bs, std::uint64_t bytes) {
  double card = 0;
  for (const auto& b : bs) card += b.device_cpu_s;
  if (card <= 0) return "";
  const double host = process_cpu_s - card;
  return fmt::format(", of which the host {:.2f} s ({:.2f} s per GiB) and the modelled card's threads {:.2f} s", host,
                     bytes ? host / (static_cast<double>(bytes) / (1u << 30)) : 0.0, card);
}

void print_backends(std::FILE* out, const std::vector<backend_report>& bs) {
  for (const auto& b : bs)
    fmt::print(out, "  {:<16} {:<11} submitted {} completed {} failed {} probes {} teardowns {} busy {:.2f} s{}{}\n",
               b.name, b.health, b.submitted, b.completed, b.failed, b.probes, b.teardowns, b.busy_s,
               b.device_s > 0 ? fmt::format(", device time {:.2f} s", b.device_s) : "",
               b.reason.empty() ? "" : " (" + b.reason + ")");
}

nlohmann::json backends_json(const std::vector<backend_report>& bs) {
  auto j = nlohmann::json::array();
  for (const auto& b : bs)
    j.push_back({{"name", b.name}, {"health", b.health}, {"reason", b.reason}, {"submitted", b.submitted},
                 {"completed", b.completed}, {"failed", b.failed}, {"probes", b.probes}, {"teardowns", b.teardowns},
                 {"busy_s", b.busy_s}, {"device_s", b.device_s}, {"device_cpu_s", b.device_cpu_s}});
  return j;
}

nlohmann::json routing_json(const offload::scheduler_stats& r) {
  return {{"to_accel", r.to_accel}, {"to_cpu", r.to_cpu}, {"small", r.small}, {"overflow", r.overflow},
          {"not_serving", r.not_serving}, {"redone", r.redone}, {"waited", r.waited}};
}

void print_table(std::FILE* out, const corpus& c, const bench_options& o, const std::vector<codec_result>& rs) {
  fmt::print(out, "corpus: {} files, {:.1f} MiB, {} records of {} KiB; {} thread(s), {} iovec(s) per record, "
                  "a record must save {:.0f}%\n",
             c.files, static_cast<double>(c.bytes) / (1 << 20), c.records.size(), o.record_size / 1024, o.threads,
             o.scatter, o.min_saving * 100);
  const codec_result* base = rs.empty() || o.baseline.empty() ? nullptr : &rs.front();
  std::string bname = base ? base->name : "";
  const bool scaling = o.scaling;
  fmt::print(out, "{:<13} {:>6} {:>10} {:>10} {:>10} {:>10} {:>7} {:>10} {:>10}{}\n", "codec", "ratio",
             "comp/thr", "comp", "dec/thr", "dec", "notfit", "comp x", "dec x", scaling ? "   comp x" : "");
  fmt::print(out, "{:<13} {:>6} {:>10} {:>10} {:>10} {:>10} {:>7} {:>10} {:>10}{}\n", "", "", "MB/s", "MB/s",
             "MB/s", "MB/s", "%", bname, bname, scaling ? " 1 thread" : "");
  for (const auto& r : rs) {
    auto rel = [&](double v, double b) { return base && b > 0 && v > 0 ? fmt::format("{:.2f}", v / b) : "-"; };
    fmt::print(out, "{:<13} {:>6.3f} {:>10} {:>10} {:>10} {:>10} {:>7.1f} {:>10} {:>10}{}\n", r.name, r.ratio,
               fmt_mbs(r.compress_mbs_thread), fmt_mbs(r.compress_mbs_total), fmt_mbs(r.decompress_mbs_thread),
               fmt_mbs(r.decompress_mbs_total), r.records ? 100.0 * r.not_fit / r.records : 0.0,
               rel(r.compress_mbs_thread, base ? base->compress_mbs_thread : 0),
               rel(r.decompress_mbs_thread, base ? base->decompress_mbs_thread : 0),
               scaling ? fmt::format(" {:>8.2f}", r.compress_mbs_one_thread > 0 ? r.compress_mbs_total / r.compress_mbs_one_thread : 0.0)
                       : "");
  }
  fmt::print(out, "MB/s are MiB of logical data per second; /thr per CPU-second of a worker thread, the other "
                  "column per wall second. ratio counts the 40-byte frame headers and raw records.\n");
  for (const auto& r : rs) {
    if (r.backends.empty()) continue;
    fmt::print(out, "{}: {} records to the accelerator, {} to the CPU ({} too small, {} overflowed, {} while it was "
                    "down), {} redone on the CPU; process CPU {:.2f} s{}\n",
               r.name, r.routing.to_accel, r.routing.to_cpu, r.routing.small, r.routing.overflow,
               r.routing.not_serving, r.routing.redone, r.process_cpu_s, host_cpu_note(r.process_cpu_s, r.backends, r.logical_bytes * r.compress_passes));
    print_backends(out, r.backends);
  }
}

void print_policy(std::FILE* out, const policy_report& r) {
  const double mib = 1024.0 * 1024.0;
  fmt::print(out, "policy {}, {} CPU worker(s), accel {}: {:.1f} MiB in {:.2f} s = {:.1f} MB/s; process CPU {:.2f} s "
                  "({:.2f} s per GiB{}); ratio {:.3f}\n",
             r.policy, r.workers, r.accel, static_cast<double>(r.logical) / mib, r.wall_s,
             r.wall_s > 0 ? static_cast<double>(r.logical) / mib / r.wall_s : 0.0, r.process_cpu_s,
             r.logical ? r.process_cpu_s / (static_cast<double>(r.logical) / (mib * 1024)) : 0.0,
             host_cpu_note(r.process_cpu_s, r.backends, r.logical),
             r.stored ? static_cast<double>(r.logical) / static_cast<double>(r.stored) : 0.0);
  fmt::print(out, "{:<28} {:>7} {:>6} {:>9} {:>9} {:>9} {:>7}  {:<24} {}\n", "class", "records", "holes", "raw:check",
             "raw:probe", "raw:cap", "ratio", "compressed", "backends");
  for (const auto& k : r.classes) {
    std::string codecs, backends;
    for (const auto& [n, v] : k.codecs) codecs += (codecs.empty() ? "" : " ") + n + ":" + std::to_string(v);
    for (const auto& [n, v] : k.backends) backends += (backends.empty() ? "" : " ") + n + ":" + std::to_string(v);
    if (k.raw_policy) codecs += (codecs.empty() ? "" : " ") + std::string("raw(off):") + std::to_string(k.raw_policy);
    fmt::print(out, "{:<28} {:>7} {:>6} {:>9} {:>9} {:>9} {:>7.3f}  {:<24} {}\n", k.source, k.records, k.holes,
               k.raw_checker, k.raw_probe, k.raw_cap,
               k.stored ? static_cast<double>(k.logical) / static_cast<double>(k.stored) : 0.0,
               codecs.empty() ? "-" : codecs, backends.empty() ? "-" : backends);
  }
  fmt::print(out, "routing: {} to the accelerator, {} to the CPU ({} too small, {} overflowed, {} while it was down), "
                  "{} redone on the CPU\n",
             r.routing.to_accel, r.routing.to_cpu, r.routing.small, r.routing.overflow, r.routing.not_serving, r.routing.redone);
  print_backends(out, r.backends);
}

nlohmann::json policy_json(const policy_report& r) {
  nlohmann::json j = {{"policy", r.policy}, {"accel", r.accel}, {"workers", r.workers}, {"wall_s", r.wall_s},
                      {"process_cpu_s", r.process_cpu_s}, {"logical_bytes", r.logical}, {"stored_bytes", r.stored}};
  j["routing"] = routing_json(r.routing);
  j["classes"] = nlohmann::json::array();
  for (const auto& k : r.classes)
    j["classes"].push_back({{"source", k.source}, {"records", k.records}, {"holes", k.holes},
                            {"raw_checker", k.raw_checker}, {"raw_probe", k.raw_probe}, {"raw_cap", k.raw_cap},
                            {"raw_policy", k.raw_policy}, {"raw_error", k.raw_error}, {"compressed", k.compressed},
                            {"logical_bytes", k.logical}, {"stored_bytes", k.stored}, {"codecs", k.codecs},
                            {"backends", k.backends}});
  j["backends"] = backends_json(r.backends);
  return j;
}

nlohmann::json to_json(const corpus& c, const bench_options& o, const std::vector<codec_result>& rs) {
  nlohmann::json j;
  j["corpus"] = {{"files", c.files}, {"bytes", c.bytes}, {"records", c.records.size()}};
  j["record_size"] = o.record_size;
  j["threads"] = o.threads;
  j["scatter"] = o.scatter;
  j["min_saving"] = o.min_saving;
  j["baseline"] = o.baseline;
  j["results"] = nlohmann::json::array();
  for (const auto& r : rs) {
    j["results"].push_back({{"codec", r.name},
                            {"gathers", r.gathers},
                            {"ratio", r.ratio},
                            {"logical_bytes", r.logical_bytes},
                            {"stored_bytes", r.stored_bytes},
                            {"records", r.records},
                            {"not_fit", r.not_fit},
                            {"compress_mib_s_per_thread", r.compress_mbs_thread},
                            {"compress_mib_s_total", r.compress_mbs_total},
                            {"decompress_mib_s_per_thread", r.decompress_mbs_thread},
                            {"decompress_mib_s_total", r.decompress_mbs_total},
                            {"compress_cpu_s_per_gib", r.compress_cpu_s_per_gib},
                            {"compress_mib_s_one_thread", r.compress_mbs_one_thread},
                            {"compress_passes", r.compress_passes},
                            {"decompress_passes", r.decompress_passes},
                            {"verified", r.verified}});
    if (!r.backends.empty()) {
      auto& jr = j["results"].back();
      jr["routing"] = routing_json(r.routing);
      jr["process_cpu_s"] = r.process_cpu_s;
      jr["backends"] = backends_json(r.backends);
    }
  }
  return j;
}

}  // namespace

namespace {
// Called as a mount helper (mount -t fuse.qzfs / fstab: mount(8) runs `mount.fuse.qzfs SPEC DIR
// [-sfnv] [-o OPTS] [-t TYPE]`, fuse's mount helper runs `qzfs SPEC DIR -o OPTS`): the same as
// `qzfs mount`, without mount(8)'s flags that mean nothing here.
std::vector<std::string> as_mount_helper(int argc, const char* const* argv) {
  std::string self = argc > 0 ? argv[0] : "qzfs";
  self = self.substr(self.find_last_of('/') + 1);
  std::vector<std::string> args(argv, argv + argc);
  const bool helper = self == "mount.fuse.qzfs" || self == "mount.qzfs" ||
                      (argc >= 3 && argv[1][0] != '-' && std::string(argv[1]).find('/') != std::string::npos);
  if (!helper) return {};
  std::vector<std::string> out = {"qzfs", "mount"};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-n" || a == "-s" || a == "-v" || a == "-f") continue;  // mount(8): no mtab, sloppy, verbose, fake
    if (a == "-t" && i + 1 < argc) {
      ++i;
      continue;
    }
    out.push_back(a);
  }
  return out;
}
}  // namespace

int run(int argc, const char* const* argv, std::FILE* out, std::FILE* err) {
  if (auto helper = as_mount_helper(argc, argv); !helper.empty()) {
    std::vector<const char*> v;
    for (auto& a : helper) v.push_back(a.c_str());
    return run(static_cast<int>(v.size()), v.data(), out, err);
  }
  CLI::App app{"qzfs: a transparently compressing file system (QZFS, USENIX ATC '19) in user space"};
  constexpr std::string_view version = QZFS_VERSION;
  app.set_version_flag("--version", "qzfs " + std::string(version));
  app.require_subcommand(1);

  bench_options bo;
  std::string record_size = "128K", max_bytes = "1G", codecs;
  std::vector<std::string> paths;
  bool json = false, quiet = false;
  double min_saving_pct = 10;
  auto* bench = app.add_subcommand("bench", "Compress real files record by record with every codec and report "
                                            "ratio and speed (like lzbench, on file-system records)");
  bench->add_option("--record-size", record_size, "Record size: 4K to 1M")->default_val("128K");
  bench->add_option("--threads", bo.threads, "Worker threads")->default_val(1)->check(CLI::Range(1u, 256u));
  bench->add_option("--codecs", codecs,
                    "Comma-separated codecs (default: a spread of every family). Names: " + codec::spec_help());
  bench->add_option("--baseline", bo.baseline, "Codec every speed is compared with ('' for none)")
      ->default_val("zlib-6");
  bench->add_option("--min-saving", min_saving_pct, "Percent a record must save, else it is stored raw")
      ->default_val(10)->check(CLI::Range(0.0, 99.0));
  bench->add_option("--scatter", bo.scatter, "Split every record into N unaligned iovecs")
      ->default_val(1)->check(CLI::Range(1u, 4096u));
  bench->add_option("--min-time", bo.min_time, "Seconds each phase runs at least")->default_val(1.0);
  bench->add_option("--max-bytes", max_bytes, "Read at most this much from each PATH")->default_val("1G");
  bench->add_flag("--scaling", bo.scaling, "Also compress on one thread and print the speed-up of --threads (1 and N threads alternate, best of 3 each)");
  bench->add_option("--accel", bo.accel,
                    "Compress through the offload scheduler: cpu | qat | auto | fault:SPEC | fault-qat:SPEC (a "
                    "failing accelerator to rehearse, over a software device or over QAT, e.g. "
                    "fault:error=0.1,timeout=0.01; keys error, timeout, garbage, badcrc, slow, delay, every, init, "
                    "seed) | model[:SPEC] (a modelled QAT card, e.g. model:gbps=24+latency=40us+instances=4, "
                    "fault keys compose; docs/QAT.md). Prints each backend's health and counters");
  bench->add_option("--accel-verify", bo.accel_verify,
                    "How accelerator output is checked before it is trusted: full (decode and compare) or crc "
                    "(CRC-32 and size of the input)")->default_val("full");
  bench->add_flag("--no-skip", bo.no_checker,
                  "With --policy: no checker and no per-file learning, every record goes to its codec in full "
                  "(what zfs-fuse does; shows what the skips save)");
  bench->add_option("--qatzip-lib", bo.qatzip_lib, "QATzip library for --accel qat (default $QZFS_QATZIP_LIB or libqatzip.so.3)");
  std::string policy;
  bench->add_option("--policy", policy,
                    "Run the whole engine with this policy (" + engine::policy_help() + ") instead of each codec "
                    "alone, and print per data class (each PATH) what it decided: holes, raw, codec, backend");
  bench->add_flag("--json", json, "Print JSON instead of a table");
  bench->add_flag("--quiet,-q", quiet, "No progress line");
  bench->add_option("PATH", paths, "Files or directories (read recursively)")->required();

  pack_options po;
  std::string pack_rs = "128K";
  auto* pack = app.add_subcommand("pack", "Rewrite plain files of a backing directory as compressed containers, in "
                                          "place and atomically (a new file beside each, synced, renamed over it; mode, "
                                          "owner, times and extended attributes kept). Skips empty files, containers "
                                          "and files with other hard links; a file that changes meanwhile is left as it was");
  pack->add_option("--policy", po.policy, "Compression policy: " + engine::policy_help() + " (default " +
                                              policy_meaning(po.policy) + ")")->default_val(po.policy);
  pack->add_option("--record-size", pack_rs, "Record size of the new containers: 4K to 1M, a power of two")->default_val("128K");
  pack->add_option("--threads", po.threads, "CPU workers (default: one per core)")->check(CLI::Range(0u, 256u));
  pack->add_flag("--verbose,-v", po.verbose, "One line per file");
  pack->add_option("PATH", po.paths, "Files or directories (recursively; symlinks are not followed)")->required();

  check_options co;
  auto* check = app.add_subcommand("check", "Read and verify every record of every container under PATH; name each "
                                            "damaged record (exit 1), and summarise sizes, ratio and codecs");
  check->add_flag("--json", co.json, "Print JSON instead of text");
  check->add_option("PATH", co.paths, "Files or directories of a backing directory (recursively)")->required();

  unpack_options uo;
  auto* unpack = app.add_subcommand("unpack", "The way out: rewrite the compressed containers of a backing directory as "
                                              "plain files of their logical bytes, in place and atomically (a new file "
                                              "beside each, holes kept, synced, renamed over it; mode, owner, times and "
                                              "extended attributes kept). Plain files and files with other hard links are "
                                              "skipped; a container with a damaged record is kept and named (exit 1). Not "
                                              "while the backing directory is mounted");
  unpack->add_flag("-v,--verbose", uo.verbose, "Name each file");
  unpack->add_option("PATH", uo.paths, "Files or directories of a backing directory (recursively)")->required();

  recompress_options ro;
  std::string recompress_rs;
  auto* recompress = app.add_subcommand(
      "recompress",
      "Compress the records of existing files again under a policy. Through a qzfs mount it runs online: the daemon "
      "rewrites a few MiB at a time and commits each step, beside the file's readers and writers (anyone who may write "
      "a file may recompress it under its own policy; --policy sets the file's policy first, which is root's and the "
      "mount owner's). On a backing directory that is not mounted it rewrites each container beside itself and renames "
      "it over the original (mode, owner, times and extended attributes kept). Either way a killed run loses nothing "
      "and the next run goes on where it stopped: files already under the policy are skipped");
  recompress->add_option("--policy", ro.policy,
                         "Compression policy: " + engine::policy_help() +
                             " (default: each file's own, else its directory's; through a mount, else the mount's; on a "
                             "backing directory, else gzip)");
  recompress->add_option("--record-size", recompress_rs,
                         "Record size of the rewritten containers: 4K to 1M, a power of two (backing directory only; "
                         "default: each file's own policy's, else as it is)");
  recompress->add_option("--rate", ro.rate_mib, "At most this many MiB/s of file data (0: as fast as it goes)")
      ->default_val(0)
      ->check(CLI::Range(0.0, 1e6));
  recompress->add_option("--threads", ro.threads, "CPU workers on a backing directory (default: one per core)")
      ->check(CLI::Range(0u, 256u));
  recompress->add_flag("--force", ro.force, "Also rewrite files recompressed under the policy already");
  recompress->add_flag("-v,--verbose", ro.verbose, "One line per file");
  recompress->add_option("PATH", ro.paths, "Files or directories, on a qzfs mount or a backing directory (recursively)")
      ->required();

  du_options duo;
  auto* du = app.add_subcommand("du", "What files on a qzfs mount hold, like compsize: logical size, disk usage and "
                                      "ratio, records per codec, raw records and holes, summed over PATHs (directories "
                                      "recursively, each file once, symlinks not followed). Any user, for the files they "
                                      "may read (records an open file has not committed yet are counted apart)");
  du->add_flag("--json", duo.json, "Print JSON instead of text");
  du->add_flag("--files", duo.files, "A line per file too");
  du->add_option("PATH", duo.paths, "Files or directories on a qzfs mount")->required();

  set_options so;
  std::vector<std::string> set_args;
  auto* set = app.add_subcommand("set", "Give a directory or file a policy of its own: compression=POLICY (" + engine::policy_help() +
                                            ") and/or recordsize=4K..1M; PROPERTY=inherit takes one away. Through a mount or "
                                            "on a backing directory (kept there as the attribute user.qzfs.policy). New files "
                                            "and directories made in a directory through the mount take its policy; a file "
                                            "uses it from its next open on (records already written keep theirs); qzfs pack "
                                            "uses the nearest one of a file and its directories. Levels are honoured");
  set->add_flag("-v,--verbose", so.verbose, "Print each path's policy after the change");
  set->add_option("ARGS", set_args, "PROPERTY=VALUE... PATH...")->required();
  get_options go;
  auto* get = app.add_subcommand("get", "Print the policy each PATH holds of its own (qzfs set); (mount's): none, the "
                                            "mount's options apply");
  get->add_flag("--json", go.json, "Print JSON instead of text");
  get->add_option("PATH", go.paths, "Directories or files")->required();

  fs::mount_options mo;
  std::vector<std::string> mount_pos;
  std::vector<std::string> mount_o;
  auto* mount = app.add_subcommand("mount", "Mount a compressed view of BACKING on MOUNTPOINT (FUSE). Files already in "
                                            "BACKING stay as they are and readable; new and rewritten files are stored "
                                            "compressed. Options (-o, comma-separated): compression=POLICY (" +
                                            engine::policy_help() + "; default " + policy_meaning(mo.compression) +
                                            "), recordsize=4K..1M (default 128K, for new "
                                            "files), threads=N (CPU workers, default one per core), commit=SECONDS "
                                            "(dirty data is committed at least this often, default 5), cache=SIZE (one "
                                            "memory budget for the records every open file buffers or keeps for reads, "
                                            "default 256M), readahead=SIZE (the kernel's read-ahead on the mount, default 4M; 0 "
                                            "leaves the kernel's 128K; needs root), accel=auto|qat|cpu (auto: Intel QAT through QATzip when "
                                            "present, else the CPU; qat: refuse to mount without it; cpu: never), "
                                            "qatzip=LIBRARY (default $QZFS_QATZIP_LIB or libqatzip.so.3; accel=fault:ITEM+ITEM... "
                                            "injects faults into a software stand-in, for tests; accel=model:gbps=24+latency=40us+instances=4 "
                                            "models a QAT card, fault items compose, docs/QAT.md), accel_verify=full|crc (how the "
                                            "accelerator's output is checked before it is stored: full decodes every member "
                                            "and compares, the default; crc checks its CRC-32 and size, cheaper, and misses "
                                            "bad deflate data under a right footer), nowriteback (no "
                                            "kernel writeback cache: every write reaches qzfs as the application made "
                                            "it), allow_other (other users may use the mount; each acts as itself), noacl (no POSIX "
                                            "ACLs), debug, source=BACKING; and mount(8)'s ro, nosuid, nodev, noexec, sync, "
                                            "dirsync, noatime, relatime, strictatime, lazytime, which reach the kernel as "
                                            "for any file system (ro: nothing is written to BACKING)");
  mount->add_flag("-f,--foreground", mo.foreground, "Stay in the foreground (default: detach once mounted)");
  mount->add_flag("--recover", mo.recover,
                  "If MOUNTPOINT was left by a qzfs daemon that died (\"Transport endpoint is not connected\"), detach "
                  "it lazily (fusermount3 -u -z) and mount again; what was committed is kept, and `qzfs check` tells "
                  "whether anything is damaged");
  mount->add_option("-o", mount_o, "Mount options, comma-separated (see above)")->delimiter(',')->allow_extra_args(false);
  mount->add_option("ARGS", mount_pos, "BACKING MOUNTPOINT (or MOUNTPOINT with -o source=BACKING)")->required()->expected(1, 2);
  std::vector<std::string> stats_points;
  bool stats_json = false;
  auto* stats = app.add_subcommand("stats", "Live statistics of a mounted qzfs: logical and stored bytes, ratio, files, "
                                            "and what the engine and the backends did since the mount");
  stats->add_flag("--json", stats_json, "Print JSON instead of text");
  stats->add_option("MOUNTPOINT", stats_points,
                    "Where it is mounted; several (e.g. a GlusterFS volume's bricks) add a total")->required();
  std::string umount_point;
  auto* umount = app.add_subcommand("umount", "Unmount a qzfs mount point; returns once its daemon has committed every file");
  umount->add_option("MOUNTPOINT", umount_point, "Where it is mounted")->required();
  // Hidden (no group): the manual page, made from the definitions above; the build installs it.
  auto* man = app.add_subcommand("man", "Print the manual page (roff)")->group("");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::ostringstream o, x;
    int code = app.exit(e, o, x);
    std::fputs(o.str().c_str(), out);
    std::fputs(x.str().c_str(), err);
    return code;
  }

  try {
    if (man->parsed()) {
      write_man(app, version, out);
      return 0;
    }
    if (pack->parsed()) {
      const auto rs = parse_size(pack_rs);
      if (rs < 4096 || rs > (1u << 20) || (rs & (rs - 1)) != 0) {
        throw std::invalid_argument("--record-size must be a power of two between 4K and 1M");
      }
      po.record_size = static_cast<std::uint32_t>(rs);
      return run_pack(po, out, err);
    }
    if (check->parsed()) return run_check(co, out, err);
    if (du->parsed()) return run_du(duo, out, err);
    if (unpack->parsed()) return run_unpack(uo, out, err);
    if (recompress->parsed()) {
      if (!recompress_rs.empty()) {
        const auto rs = parse_size(recompress_rs);
        if (rs < 4096 || rs > (1u << 20) || (rs & (rs - 1)) != 0) {
          throw std::invalid_argument("--record-size must be a power of two between 4K and 1M");
        }
        ro.record_size = static_cast<std::uint32_t>(rs);
      }
      return run_recompress(ro, out, err);
    }
    if (set->parsed()) {
      for (const auto& a : set_args) (a.find('=') != std::string::npos && so.paths.empty() ? so.properties : so.paths).push_back(a);
      if (so.properties.empty()) throw std::invalid_argument("set: no PROPERTY=VALUE given (compression=..., recordsize=...)");
      if (so.paths.empty()) throw std::invalid_argument("set: no PATH given");
      return run_set(so, out, err);
    }
    if (get->parsed()) return run_get(go, out, err);
    if (mount->parsed()) {
      for (const auto& kv : mount_o) {
        const auto eq = kv.find('=');
        const std::string key = kv.substr(0, eq), val = eq == std::string::npos ? "" : kv.substr(eq + 1);
        if (key == "compression") {
          mo.compression = val;
        } else if (key == "recordsize") {
          const auto rs = parse_size(val);
          if (rs < 4096 || rs > (1u << 20) || (rs & (rs - 1)) != 0) {
            throw std::invalid_argument("recordsize must be a power of two between 4K and 1M");
          }
          mo.recordsize = static_cast<std::uint32_t>(rs);
        } else if (key == "threads") {
          mo.threads = static_cast<unsigned>(std::stoul(val));
        } else if (key == "cache") {
          mo.cache_bytes = parse_size(val);
          if (mo.cache_bytes < (4u << 20)) throw std::invalid_argument("cache must be at least 4M");
        } else if (key == "accel") {
          // A fault spec's items are joined by '+' here: ',' separates mount options.
          mo.accel = val;
          if (mo.accel.rfind("fault", 0) == 0) std::replace(mo.accel.begin(), mo.accel.end(), '+', ',');
          offload::check_accel_spec(mo.accel, "accel");
        } else if (key == "readahead") {
          mo.readahead_kb = static_cast<unsigned>(parse_size(val) / 1024);
        } else if (key == "qatzip") {
          mo.qatzip = val;
        } else if (key == "accel_verify") {
          if (val != "full" && val != "crc") throw std::invalid_argument("accel_verify must be full or crc");
          mo.accel_verify = val;
        } else if (key == "commit") {
          mo.commit_seconds = std::stod(val);
          if (mo.commit_seconds <= 0) throw std::invalid_argument("commit must be a positive number of seconds");
        } else if (key == "writeback") {
          mo.writeback = true;
        } else if (key == "nowriteback") {
          mo.writeback = false;
        } else if (key == "allow_other") {
          mo.allow_other = true;
        } else if (key == "debug") {
          mo.debug = true;
        } else if (key == "source") {
          mo.backing = val;
        } else if (key == "acl") {
          mo.acl = true;
        } else if (key == "noacl") {
          mo.acl = false;
        } else if (key == "ro" || key == "rw" || key == "suid" || key == "nosuid" || key == "dev" || key == "nodev" ||
                   key == "exec" || key == "noexec" || key == "sync" || key == "async" || key == "dirsync" ||
                   key == "atime" || key == "noatime" || key == "diratime" || key == "nodiratime" ||
                   key == "relatime" || key == "norelatime" || key == "strictatime" || key == "lazytime" ||
                   key == "nolazytime") {
          // mount(8)'s flags: they reach the kernel as they would for any file system.
          if (!val.empty()) throw std::invalid_argument("mount option '" + key + "' takes no value");
          if (key == "ro") mo.read_only = true;
          if (key == "rw") mo.read_only = false;
          mo.kernel_options.push_back(key);
        } else if (key == "defaults" || key == "auto" || key == "noauto" || key == "_netdev" || key == "user" ||
                   key == "nouser" || key == "nofail") {
          // fstab words for mount(8) itself: nothing to do here.
        } else {
          throw std::invalid_argument("unknown mount option '" + kv + "'");
        }
      }
      if (mount_pos.size() == 2) {
        mo.backing = mount_pos[0];
        mo.mountpoint = mount_pos[1];
      } else {
        mo.mountpoint = mount_pos[0];
        if (mo.backing.empty()) throw std::invalid_argument("mount needs BACKING MOUNTPOINT (or -o source=BACKING)");
      }
      if (!engine::parse_policy(mo.compression)) {
        throw std::invalid_argument("unknown compression '" + mo.compression + "' (" + engine::policy_help() + ")");
      }
      std::fflush(out);
      return fs::serve(mo, err);
    }
    if (stats->parsed()) return print_stats_of(stats_points, stats_json, out, err);
    if (umount->parsed()) return fs::unmount(umount_point, err);
    if (bench->parsed()) {
      bo.record_size = parse_size(record_size);
      if (bo.record_size < 4096 || bo.record_size > (1u << 20))
        throw std::invalid_argument("--record-size must be between 4K and 1M");
      bo.min_saving = min_saving_pct / 100.0;
      if (!codecs.empty()) bo.codecs = CLI::detail::split(codecs, ',');
      corpus c = load_corpus(paths, bo.record_size, parse_size(max_bytes));
      if (c.records.empty()) throw std::runtime_error("no data found under the given paths");
      // The shared progress line (on a terminal, unless --quiet): phases done, time left, what
      // runs now; cleared before the table.
      std::unique_ptr<progress> bar;
      auto on_phase = [&](const std::string& what, std::size_t done, std::size_t phases) {
        if (quiet) return;
        if (!bar) bar = std::make_unique<progress>(err, phases, 0, "phases");
        bar->label(what);
        bar->reach(done);
      };
      if (!policy.empty()) {
        auto pr = run_policy_bench(c, bo, policy);
        if (json)
          fmt::print(out, "{}\n", policy_json(pr).dump(2));
        else
          print_policy(out, pr);
        return 0;
      }
      auto rs = run_bench(c, bo, on_phase);
      if (bar) bar->finish();
      if (json)
        fmt::print(out, "{}\n", to_json(c, bo, rs).dump(2));
      else
        print_table(out, c, bo, rs);
    }
    return 0;
  } catch (const std::invalid_argument& e) {
    fmt::print(err, "qzfs: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(err, "qzfs: {}\n", e.what());
    return 1;
  }
}

}  // namespace qzfs::cli
