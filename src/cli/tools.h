#pragma once
// `qzfs pack` (plain files of a backing directory rewritten as containers, atomically, in place)
// and `qzfs check` (every container read and verified; damaged records named).

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace qzfs::cli {

struct pack_options {
  std::vector<std::string> paths;
  std::string policy = "gzip";
  std::uint32_t record_size = 128 << 10;
  unsigned threads = 0;  // CPU workers; 0: one per core
  bool verbose = false;
};
/// 0 when every file was packed or skipped (empty, already a container, hard-linked), 1 when one failed.
int run_pack(const pack_options& o, std::FILE* out, std::FILE* err);

struct check_options {
  std::vector<std::string> paths;
  bool json = false;
};
/// 0 when nothing is damaged, 1 when a record or a container is.
int run_check(const check_options& o, std::FILE* out, std::FILE* err);

}  // namespace qzfs::cli
