#pragma once
// `qzfs pack` (plain files of a backing directory rewritten as containers, atomically, in place)
// and `qzfs check` (every container read and verified; damaged records named) on a backing
// directory; `qzfs du` (what files hold) through a mount.

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

struct set_options {
  std::vector<std::string> properties;  // compression=P, recordsize=N, or PROPERTY=inherit
  std::vector<std::string> paths;
  bool verbose = false;
};
/// `qzfs set`: a directory's or file's own policy (qzfs/fs/policy.h); 0, or 1 when a path failed.
int run_set(const set_options& o, std::FILE* out, std::FILE* err);
struct get_options {
  std::vector<std::string> paths;
  bool json = false;
};
/// `qzfs get`: the policy each path holds of its own.
int run_get(const get_options& o, std::FILE* out, std::FILE* err);

struct unpack_options {
  std::vector<std::string> paths;
  bool verbose = false;
};
/// `qzfs unpack`: containers back to plain files, atomically per file (the way out). 0 when every
/// container was unpacked or skipped (already plain, hard-linked), 1 when one failed (it stays).
int run_unpack(const unpack_options& o, std::FILE* out, std::FILE* err);

struct recompress_options {
  std::vector<std::string> paths;
  std::string policy;             // "": each file's own (its directory's; through a mount, the mount's)
  std::uint32_t record_size = 0;  // on a backing directory only; 0: each file's own, else as it is
  double rate_mib = 0;            // MiB/s of logical bytes at most; 0: as fast as it goes
  unsigned threads = 0;           // CPU workers on a backing directory; 0: one per core
  bool force = false;             // also files recompressed under the policy already
  bool verbose = false;
};
/// `qzfs recompress`: the records of existing files compressed again under a policy, through a
/// mount (online) or on a backing directory that is not mounted; resumes what a killed run left.
/// 0 when every file was recompressed or skipped, 1 when one failed.
int run_recompress(const recompress_options& o, std::FILE* out, std::FILE* err);

struct check_options {
  std::vector<std::string> paths;
  bool json = false;
};
/// 0 when nothing is damaged, 1 when a record or a container is.
int run_check(const check_options& o, std::FILE* out, std::FILE* err);

struct du_options {
  std::vector<std::string> paths;
  bool json = false;
  bool files = false;  // a line (an object) per file too
};
/// `qzfs du`: sums what the files under the paths hold, through the mount ("user.qzfs.du" of each
/// regular file the caller may read). 1 when a path failed, or when nothing was on a qzfs mount.
int run_du(const du_options& o, std::FILE* out, std::FILE* err);

}  // namespace qzfs::cli
