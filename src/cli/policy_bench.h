#pragma once
// `qzfs bench --policy P`: the whole engine (checker, policy, offload, result cap, per-file
// learning) over a real corpus, reporting per data class (each PATH argument) what it decided.

#include <map>
#include <string>
#include <vector>

#include "bench.h"
#include "corpus.h"

namespace qzfs::cli {

struct policy_class_report {
  std::string source;
  std::uint64_t records = 0, holes = 0, raw_checker = 0, raw_probe = 0, raw_cap = 0, raw_policy = 0, raw_error = 0,
                compressed = 0, logical = 0, stored = 0;
  std::map<std::string, std::uint64_t> codecs;    // "gzip-1" -> records
  std::map<std::string, std::uint64_t> backends;  // "cpu" -> records
};

struct policy_report {
  std::string policy, accel;
  unsigned workers = 0;
  double wall_s = 0, process_cpu_s = 0;
  std::uint64_t logical = 0, stored = 0;
  std::vector<policy_class_report> classes;
  std::vector<backend_report> backends;
  offload::scheduler_stats routing{};
};

/// Throws std::invalid_argument for an unknown policy or --accel.
policy_report run_policy_bench(const corpus& c, const bench_options& o, const std::string& policy);

}  // namespace qzfs::cli
