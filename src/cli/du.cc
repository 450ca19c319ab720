// `qzfs du`: what files on a qzfs mount hold, logical and on disk, per codec, holes and raw
// records (like compsize), read through the mount by any user for what they may read.
#include <sys/stat.h>
#include <sys/xattr.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "qzfs/fs/stats.h"
#include "tools.h"

namespace qzfs::cli {
namespace {

namespace stdfs = std::filesystem;

struct totals {
  std::uint64_t files = 0, containers = 0, plain = 0;
  std::uint64_t logical = 0, allocated = 0, records = 0, holes = 0, raw = 0, dirty = 0;
  std::map<std::string, std::uint64_t> per_format;

  void add(const fs::file_usage& u) {
    ++files;
    ++(u.container ? containers : plain);
    logical += u.logical_bytes;
    allocated += u.allocated_bytes;
    records += u.records;
    holes += u.holes;
    raw += u.raw;
    dirty += u.dirty_records;
    for (const auto& [k, v] : u.per_format) per_format[k] += v;
  }
};

double ratio(std::uint64_t logical, std::uint64_t allocated) {
  return allocated > 0 ? static_cast<double>(logical) / static_cast<double>(allocated) : 0.0;
}

std::string human(std::uint64_t v) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double d = static_cast<double>(v);
  int u = 0;
  while (d >= 1024 && u < 4) {
    d /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", v) : fmt::format("{:.1f} {}", d, units[u]);
}

// The file's usage from the mount, or an errno: ENODATA / ENOTSUP when it is not on a qzfs mount.
int usage_of(const std::string& path, fs::file_usage& u) {
  std::string buf(512, '\0');
  for (int tries = 0; tries < 4; ++tries) {
    const ssize_t n = ::getxattr(path.c_str(), "user.qzfs.du", buf.data(), buf.size());
    if (n >= 0) {
      buf.resize(static_cast<std::size_t>(n));
      try {
        u = fs::file_usage_from_json(buf);
      } catch (const std::invalid_argument&) {
        return EBADMSG;
      }
      return 0;
    }
    if (errno != ERANGE) return errno;
    const ssize_t need = ::getxattr(path.c_str(), "user.qzfs.du", nullptr, 0);
    if (need < 0) return errno;
    buf.assign(static_cast<std::size_t>(need) + 256, '\0');
  }
  return ERANGE;
}

nlohmann::json usage_json(const totals& t) {
  return {{"files", t.files},
          {"containers", t.containers},
          {"plain_files", t.plain},
          {"logical_bytes", t.logical},
          {"allocated_bytes", t.allocated},
          {"ratio", ratio(t.logical, t.allocated)},
          {"records", t.records},
          {"holes", t.holes},
          {"raw", t.raw},
          {"dirty_records", t.dirty},
          {"per_format", t.per_format}};
}

}  // namespace

int run_du(const du_options& o, std::FILE* out, std::FILE* err) {
  totals all;
  std::set<std::pair<dev_t, ino_t>> seen;  // a file with several links counts once
  std::uint64_t unreadable = 0, not_qzfs = 0, failed = 0;
  nlohmann::json per_file = nlohmann::json::array();
  std::vector<std::pair<std::string, fs::file_usage>> listed;

  auto one = [&](const std::string& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
      fmt::print(err, "qzfs du: {}: {}\n", path, std::strerror(errno));
      ++failed;
      return;
    }
    if (!S_ISREG(st.st_mode) || !seen.insert({st.st_dev, st.st_ino}).second) return;
    fs::file_usage u;
    if (int e = usage_of(path, u)) {
      if (e == EACCES || e == EPERM) {
        ++unreadable;  // not the caller's to read: left out, as du(1) leaves out what it cannot see
      } else if (e == ENODATA || e == ENOTSUP || e == EOPNOTSUPP) {
        if (not_qzfs++ == 0) fmt::print(err, "qzfs du: {}: not on a qzfs mount\n", path);
      } else {
        fmt::print(err, "qzfs du: {}: {}\n", path, std::strerror(e));
        ++failed;
      }
      return;
    }
    all.add(u);
    if (o.files) listed.emplace_back(path, std::move(u));
  };

  for (const auto& p : o.paths) {
    std::error_code ec;
    const auto st = stdfs::symlink_status(p, ec);
    if (ec) {
      fmt::print(err, "qzfs du: {}: {}\n", p, ec.message());
      ++failed;
      continue;
    }
    if (!stdfs::is_directory(st)) {
      one(p);
      continue;
    }
    // Directories the caller cannot enter are passed by (counted as unreadable), as du(1) would
    // report them; symlinks are not followed.
    stdfs::recursive_directory_iterator it(p, stdfs::directory_options::skip_permission_denied, ec), end;
    if (ec) {
      fmt::print(err, "qzfs du: {}: {}\n", p, ec.message());
      ++failed;
      continue;
    }
    for (; it != end; it.increment(ec)) {
      if (ec) {
        fmt::print(err, "qzfs du: {}\n", ec.message());
        ++failed;
        ec.clear();
        continue;
      }
      if (it->is_symlink(ec)) continue;
      if (it->is_regular_file(ec)) one(it->path().string());
    }
  }

  if (o.json) {
    auto j = usage_json(all);
    j["unreadable_files"] = unreadable;
    j["not_qzfs_files"] = not_qzfs;
    if (o.files) {
      for (const auto& [path, u] : listed) {
        totals t;
        t.add(u);
        auto f = usage_json(t);
        f.erase("files");
        f.erase("containers");
        f.erase("plain_files");
        f["path"] = path;
        f["container"] = u.container;
        per_file.push_back(std::move(f));
      }
      j["per_file"] = std::move(per_file);
    }
    fmt::print(out, "{}\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
  } else {
    if (o.files) {
      fmt::print(out, "{:>7} {:>11} {:>11}  {}\n", "ratio", "disk", "logical", "file");
      for (const auto& [path, u] : listed)
        fmt::print(out, "{:>7.2f} {:>11} {:>11}  {}\n", ratio(u.logical_bytes, u.allocated_bytes),
                   human(u.allocated_bytes), human(u.logical_bytes), path);
    }
    fmt::print(out, "Processed {} files ({} compressed, {} plain), {} records.\n", all.files, all.containers, all.plain,
               all.records);
    fmt::print(out, "{:<10} {:>7} {:>12} {:>12}\n", "Type", "Ratio", "Disk Usage", "Logical");
    fmt::print(out, "{:<10} {:>7.2f} {:>12} {:>12}\n", "TOTAL", ratio(all.logical, all.allocated), human(all.allocated),
               human(all.logical));
    std::string kinds;
    for (const auto& [k, v] : all.per_format) kinds += fmt::format("{}{} {}", kinds.empty() ? "" : ", ", k, v);
    fmt::print(out, "Records    {}{}raw {}, holes {}{}\n", kinds, kinds.empty() ? "" : ", ", all.raw, all.holes,
               all.dirty ? fmt::format(", {} not committed yet", all.dirty) : "");
    if (unreadable) fmt::print(out, "{} file(s) left out: not readable by you\n", unreadable);
  }
  if (not_qzfs) fmt::print(err, "qzfs du: {} file(s) not on a qzfs mount\n", not_qzfs);
  return failed || (not_qzfs && all.files == 0) ? 1 : 0;
}

}  // namespace qzfs::cli
