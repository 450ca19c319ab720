// `qzfs set` and `qzfs get`: a directory's or file's own policy (qzfs/fs/policy.h), through a
// mount or on a backing directory that is not mounted.
#include <sys/stat.h>
#include <sys/xattr.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

#include <fmt/core.h>

#include "qzfs/fs/policy.h"
#include "tools.h"

namespace qzfs::cli {
namespace {

bool usable(const std::string& path, std::FILE* err, const char* cmd) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    fmt::print(err, "qzfs {}: {}: {}\n", cmd, path, std::strerror(errno));
    return false;
  }
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
    fmt::print(err, "qzfs {}: {}: only directories and regular files have a policy\n", cmd, path);
    return false;
  }
  return true;
}

// The attribute of `path` itself (never through a symlink put there meanwhile).
fs::file_policy own_policy(const std::string& path) {
  char buf[256];
  const ssize_t n = ::lgetxattr(path.c_str(), fs::policy_attr, buf, sizeof buf);
  if (n <= 0) return {};
  const auto p = fs::parse_file_policy(std::string_view(buf, static_cast<std::size_t>(n)));
  return p ? *p : fs::file_policy{};
}

std::string errno_text(int e) {
  if (e == ENOTSUP) return "extended attributes not supported here (not a qzfs mount or a backing directory?)";
  if (e == EPERM) return "only root and the mount's owner set policies (they spend the mount's shared workers)";
  return std::strerror(e);
}

}  // namespace

int run_set(const set_options& o, std::FILE* out, std::FILE* err) {
  // PROPERTY=VALUE first, then paths; "inherit" takes a property away again.
  fs::file_policy add;
  bool drop_compression = false, drop_record_size = false;
  std::string text;
  for (const auto& a : o.properties) {
    if (a == "compression=inherit") {
      drop_compression = true;
    } else if (a == "recordsize=inherit") {
      drop_record_size = true;
    } else {
      text += a + " ";
    }
  }
  if (!text.empty()) {
    std::string why;
    const auto p = fs::parse_file_policy(text, &why);
    if (!p) throw std::invalid_argument(why);
    add = *p;
  }
  int rc = 0;
  for (const auto& path : o.paths) {
    if (!usable(path, err, "set")) {
      rc = 1;
      continue;
    }
    fs::file_policy now = own_policy(path);
    now = fs::overlay(add, now);
    if (drop_compression) now.compression.clear();
    if (drop_record_size) now.record_size = 0;
    int r = 0;
    if (now.empty()) {
      r = ::lremovexattr(path.c_str(), fs::policy_attr);
      if (r != 0 && errno == ENODATA) r = 0;
    } else {
      const std::string v = fs::to_string(now);
      r = ::lsetxattr(path.c_str(), fs::policy_attr, v.data(), v.size(), 0);
    }
    if (r != 0) {
      fmt::print(err, "qzfs set: {}: {}\n", path, errno_text(errno));
      rc = 1;
      continue;
    }
    if (o.verbose) fmt::print(out, "{}: {}\n", path, now.empty() ? "no policy of its own" : fs::to_string(now));
  }
  return rc;
}

int run_get(const get_options& o, std::FILE* out, std::FILE* err) {
  int rc = 0;
  nlohmann::json all = nlohmann::json::array();
  for (const auto& path : o.paths) {
    if (!usable(path, err, "get")) {
      rc = 1;
      continue;
    }
    char buf[256];
    const ssize_t n = ::lgetxattr(path.c_str(), fs::policy_attr, buf, sizeof buf);
    if (n < 0 && errno != ENODATA) {
      fmt::print(err, "qzfs get: {}: {}\n", path, errno_text(errno));
      rc = 1;
      continue;
    }
    const fs::file_policy p = own_policy(path);
    if (o.json) {
      nlohmann::json j = {{"path", path}};
      j["compression"] = p.compression.empty() ? nlohmann::json(nullptr) : nlohmann::json(p.compression);
      j["recordsize"] = p.record_size == 0 ? nlohmann::json(nullptr) : nlohmann::json(p.record_size);
      all.push_back(j);
    } else {
      fmt::print(out, "{}: compression={} recordsize={}\n", path, p.compression.empty() ? "(mount's)" : p.compression,
                 p.record_size == 0 ? std::string("(mount's)")
                                    : (p.record_size >= (1u << 20) ? std::to_string(p.record_size >> 20) + "M"
                                                                   : std::to_string(p.record_size >> 10) + "K"));
    }
  }
  if (o.json) fmt::print(out, "{}\n", all.dump(2));
  return rc;
}

}  // namespace qzfs::cli
