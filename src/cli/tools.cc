// `qzfs pack` and `qzfs check`: the store's tools over a backing directory, without a mount.
#include "tools.h"
#include "progress.h"
#include "walk.h"
#include "qzfs/fs/policy.h"

#include <fcntl.h>
#include <sys/file.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <map>
#include <set>
#include <filesystem>
#include <sstream>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "qzfs/engine/engine.h"
#include "qzfs/offload/scheduler.h"
#include "qzfs/store/file.h"
#include "qzfs/store/io.h"

namespace qzfs::cli {

namespace fs = std::filesystem;

namespace {

// qzfs's own file beside one being rewritten (store/pack.cc's file_beside):
// ".qzfs-pack.PID.N", ".qzfs-unpack.PID.N", ".qzfs-recompress.PID.N".
bool temporary(const fs::path& p, pid_t* pid = nullptr) {
  const std::string n = p.filename().string();
  std::size_t at = 0;
  for (const char* tool : {".qzfs-pack.", ".qzfs-unpack.", ".qzfs-recompress."}) {
    if (n.rfind(tool, 0) == 0) at = std::strlen(tool);
  }
  if (at == 0) return false;
  const auto dot = n.find('.', at);
  if (dot == std::string::npos || dot == at || dot + 1 == n.size()) return false;
  const auto digits = [&](std::size_t a, std::size_t b) {
    return std::all_of(n.begin() + static_cast<std::ptrdiff_t>(a), n.begin() + static_cast<std::ptrdiff_t>(b),
                       [](char c) { return c >= '0' && c <= '9'; });
  };
  if (!digits(at, dot) || !digits(dot + 1, n.size())) return false;
  if (pid != nullptr) *pid = static_cast<pid_t>(std::strtol(n.c_str() + at, nullptr, 10));
  return true;
}

}  // namespace

std::vector<fs::path> regular_files(const std::vector<std::string>& paths) {
  std::vector<fs::path> out;
  for (const auto& p : paths) {
    std::error_code ec;
    const auto st = fs::symlink_status(p, ec);
    if (ec || !fs::exists(st)) throw std::invalid_argument(p + ": no such file or directory");
    if (fs::is_regular_file(st)) {
      out.emplace_back(p);
    } else if (fs::is_directory(st)) {
      for (auto it = fs::recursive_directory_iterator(p, fs::directory_options::skip_permission_denied, ec);
           it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (ec) break;
        if (it->is_regular_file(ec) && !it->is_symlink(ec) && !temporary(it->path())) out.push_back(it->path());
      }
      if (ec) throw std::runtime_error(p + ": " + ec.message());
    }
  }
  return out;
}

std::uint64_t remove_leftovers(const std::vector<std::string>& paths) {
  std::uint64_t n = 0;
  for (const auto& p : paths) {
    std::error_code ec;
    if (!fs::is_directory(fs::symlink_status(p, ec)) || on_qzfs_mount(p)) continue;
    for (auto it = fs::recursive_directory_iterator(p, fs::directory_options::skip_permission_denied, ec);
         it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) break;
      pid_t pid = 0;
      if (!temporary(it->path(), &pid) || pid <= 0) continue;
      if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // its tool may still be running
      const int dir = ::open(it->path().parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (dir < 0) continue;
      const std::string name = it->path().filename().string();
      struct stat st {};
      if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
          st.st_uid == ::geteuid() && (st.st_mode & 07777) == 0600 && st.st_nlink == 1 &&
          ::unlinkat(dir, name.c_str(), 0) == 0) {
        ++n;
      }
      ::close(dir);
    }
  }
  return n;
}

std::uint64_t total_size(const std::vector<fs::path>& files, std::FILE* out) {
  if (!progress::on_terminal(out)) return 0;
  std::uint64_t n = 0;
  for (const auto& f : files) {
    struct stat st {};
    if (::lstat(f.c_str(), &st) == 0) n += static_cast<std::uint64_t>(st.st_size);
  }
  return n;
}

dir_handle::dir_handle(const fs::path& dir) : fd(::open(dir.empty() ? "." : dir.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC)) {
  if (fd < 0) throw std::runtime_error(dir.string() + ": " + std::strerror(errno));
}
dir_handle::~dir_handle() { ::close(fd); }

nearest_policy::nearest_policy(const std::vector<std::string>& paths) {
  for (const auto& p : paths) {
    const auto a = fs::absolute(p).lexically_normal();
    tops_.insert((fs::is_directory(a) ? a : a.parent_path()).string());
  }
}

qzfs::fs::file_policy nearest_policy::of(const fs::path& file) {
  qzfs::fs::file_policy p = qzfs::fs::read_policy_attr(file.c_str());
  for (auto d = fs::absolute(file).lexically_normal().parent_path();; d = d.parent_path()) {
    auto [it, fresh] = dirs_.try_emplace(d.string());
    if (fresh) it->second = qzfs::fs::read_policy_attr(d.c_str());
    p = qzfs::fs::overlay(p, it->second);
    if (tops_.count(d.string()) != 0 || !d.has_relative_path()) break;
  }
  return p;
}

unmounted_guard::~unmounted_guard() {
  for (int fd : fds_) ::close(fd);  // the flocks go with them
}

std::string unmounted_guard::hold(const std::filesystem::path& path) {
  std::error_code ec;
  auto p = std::filesystem::weakly_canonical(path, ec);
  if (ec) return "";
  if (!std::filesystem::is_directory(p, ec)) p = p.parent_path();
  for (;; p = p.parent_path()) {
    const int fd = ::open(p.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
      if (::flock(fd, LOCK_SH | LOCK_NB) != 0) {
        const bool busy = errno == EWOULDBLOCK;
        ::close(fd);
        if (busy) return p.string();
      } else {
        fds_.push_back(fd);
      }
    }
    if (p == p.root_path() || p.empty()) return "";
  }
}

bool on_qzfs_mount(const std::filesystem::path& path) {
  std::error_code ec;
  const std::string p = std::filesystem::weakly_canonical(path, ec).string();
  if (ec) return false;
  // The longest mount point that holds `p` (mountinfo: field 5 is the mount point, the type
  // follows " - "; spaces in names are octal escapes).
  std::ifstream in("/proc/self/mountinfo");
  std::string line, best_type;
  std::size_t best = 0;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, devno, root, mp;
    f >> id >> parent >> devno >> root >> mp;
    std::string unescaped;
    for (std::size_t i = 0; i < mp.size(); ++i) {
      if (mp[i] == '\\' && i + 3 < mp.size()) {
        unescaped += static_cast<char>(std::stoi(mp.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        unescaped += mp[i];
      }
    }
    const bool holds = unescaped == "/" || p == unescaped || p.rfind(unescaped + "/", 0) == 0;
    if (!holds || unescaped.size() < best) continue;
    const auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream t(line.substr(dash + 3));
    std::string type;
    t >> type;
    best = unescaped.size();
    best_type = type;
  }
  return best_type == "fuse.qzfs";
}

// pack's and unpack's walk: every regular file under `paths` rewritten in place by
// `rewrite(dirfd, name, path)` (skip_empty: empty files are left alone), under a progress line.
// EEXIST (`already`: nothing to do) and EMLINK (other hard links) are skips, named with -v;
// failures are named on `err` (with `kept`); `done(before, after)` counts each file rewritten.
struct walk_counts {
  std::uint64_t done = 0, skipped = 0, failed = 0;
};
template <class Rewrite, class Done>
walk_counts rewrite_each(const std::vector<std::string>& paths, bool skip_empty, bool verbose, const char* tool,
                         const char* already, const char* kept, std::FILE* out, std::FILE* err, Rewrite&& rewrite,
                         Done&& done) {
  walk_counts n;
  const auto files = regular_files(paths);
  progress bar(out, files.size(), total_size(files, out), "files");
  for (const auto& path : files) {
    progress::item step{bar};
    struct stat before {};
    if (::lstat(path.c_str(), &before) != 0) continue;
    step.bytes = static_cast<std::uint64_t>(before.st_size);
    if (skip_empty && before.st_size == 0) {
      ++n.skipped;  // nothing to gain; it becomes a container when first written through a mount
      continue;
    }
    dir_handle dir(path.parent_path());
    const std::error_code ec = rewrite(dir.fd, path.filename().c_str(), path);
    if (ec == std::errc::file_exists || ec == std::errc::too_many_links) {
      ++n.skipped;
      if (verbose) {
        bar.say(out, fmt::format("{}: skipped ({})", path.string(), ec == std::errc::file_exists ? already : "has other hard links"));
      }
      continue;
    }
    if (ec) {
      ++n.failed;
      bar.say(err, fmt::format("qzfs {}: {}: {}{}", tool, path.string(), ec.message(), kept));
      continue;
    }
    struct stat after {};
    ::lstat(path.c_str(), &after);
    ++n.done;
    done(before, after);
    if (verbose) bar.say(out, fmt::format("{}: {} -> {} bytes", path.string(), before.st_size, after.st_size));
  }
  bar.finish();
  return n;
}

int run_pack(const pack_options& o, std::FILE* out, std::FILE* err) {
  auto pol = engine::parse_policy(o.policy);
  if (!pol) throw std::invalid_argument("unknown --policy '" + o.policy + "' (" + engine::policy_help() + ")");
  // A mounted backing directory is the daemon's: a file rewritten beside it would fork from the
  // state the mount keeps of it.
  unmounted_guard guard;
  for (const auto& p : o.paths) {
    if (const auto b = guard.hold(p); !b.empty()) {
      fmt::print(err, "qzfs pack: {} is inside {}, the backing directory of a running qzfs mount: unmount it first\n", p, b);
      return 1;
    }
  }
  offload::cpu_backend cpu({.workers = o.threads});
  offload::scheduler sched(cpu, nullptr);
  engine::engine compressor(sched, {.pol = *pol});
  store::options store_opts;
  store_opts.compressor = &compressor;
  store_opts.record_size = o.record_size;
  store_opts.log = [err](std::string_view m) { fmt::print(err, "qzfs pack: {}\n", m); };

  // Files and directories with a policy of their own (qzfs set): the file's, else its nearest
  // directory's, property by property, over --policy and --record-size; an engine per policy.
  nearest_policy policy_of(o.paths);
  std::map<std::string, std::unique_ptr<engine::engine>> engines;
  std::uint64_t own_policy = 0;

  std::uint64_t logical = 0, stored = 0;
  const auto t0 = std::chrono::steady_clock::now();
  const auto n = rewrite_each(
      o.paths, true, o.verbose, "pack", "already a container", "", out, err,
      [&](int dirfd, const char* name, const std::filesystem::path& path) {
        store::options file_opts = store_opts;
        file_opts.name = path.string();
        const qzfs::fs::file_policy own = policy_of.of(path);
        if (!own.empty()) {
          ++own_policy;
          if (own.record_size != 0) file_opts.record_size = own.record_size;
          if (const auto p = engine::parse_policy(own.compression)) {
            auto& e = engines[engine::to_string(*p)];
            if (!e) e = std::make_unique<engine::engine>(sched, engine::engine_options{.pol = *p});
            file_opts.compressor = e.get();
          }
        }
        return store::pack_file(dirfd, name, file_opts);
      },
      [&](const struct stat& before, const struct stat& after) {
        logical += static_cast<std::uint64_t>(before.st_size);
        stored += static_cast<std::uint64_t>(after.st_size);
      });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print(out, "packed {} files ({} skipped, {} failed): {:.1f} MiB -> {:.1f} MiB, ratio {:.3f}, {:.1f} MiB/s, policy {}{}\n",
             n.done, n.skipped, n.failed, static_cast<double>(logical) / (1 << 20), static_cast<double>(stored) / (1 << 20),
             stored > 0 ? static_cast<double>(logical) / static_cast<double>(stored) : 1.0,
             secs > 0 ? static_cast<double>(logical) / (1 << 20) / secs : 0.0, engine::describe(*pol),
             own_policy > 0 ? fmt::format(" ({} files by their own or their directory's policy)", own_policy) : std::string());
  return n.failed == 0 ? 0 : 1;
}

int run_unpack(const unpack_options& o, std::FILE* out, std::FILE* err) {
  unmounted_guard guard;
  for (const auto& p : o.paths) {
    if (const auto b = guard.hold(p); !b.empty()) {
      fmt::print(err, "qzfs unpack: {} is inside {}, the backing directory of a running qzfs mount: unmount it first\n", p, b);
      return 1;
    }
  }
  store::options store_opts;
  store_opts.log = [err](std::string_view m) { fmt::print(err, "qzfs unpack: {}\n", m); };
  std::uint64_t stored = 0, logical = 0;
  const auto n = rewrite_each(
      o.paths, false, o.verbose, "unpack", "a plain file", " (the container is kept)", out, err,
      [&](int dirfd, const char* name, const std::filesystem::path& path) {
        store_opts.name = path.string();
        return store::unpack_file(dirfd, name, store_opts);
      },
      [&](const struct stat& before, const struct stat& after) {
        stored += static_cast<std::uint64_t>(before.st_blocks) * 512;
        logical += static_cast<std::uint64_t>(after.st_size);
      });
  fmt::print(out, "unpacked {} files ({} skipped, {} failed): {:.1f} MiB stored -> {:.1f} MiB\n", n.done, n.skipped, n.failed,
             static_cast<double>(stored) / (1 << 20), static_cast<double>(logical) / (1 << 20));
  return n.failed == 0 ? 0 : 1;
}

int run_check(const check_options& o, std::FILE* out, std::FILE* err) {
  std::uint64_t containers = 0, plain = 0, damaged_files = 0, bad_records = 0;
  std::uint64_t logical = 0, stored = 0, allocated = 0, records = 0, holes = 0, raw = 0, lost = 0;
  std::array<std::uint64_t, codec::payload_format_count> per_format{};
  nlohmann::json damaged = nlohmann::json::array();
  const auto files = regular_files(o.paths);
  progress bar(out, files.size(), total_size(files, out), "files");
  for (const auto& path : files) {
    progress::item step{bar};
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (struct stat st {}; fd >= 0 && ::fstat(fd, &st) == 0) step.bytes = static_cast<std::uint64_t>(st.st_size);
    if (fd < 0) {
      bar.say(err, fmt::format("qzfs check: {}: {}", path.string(), std::strerror(errno)));
      ++damaged_files;
      continue;
    }
    store::options store_opts;
    store_opts.convert_plain = false;  // look, never change
    std::string why;
    store_opts.log = [&why](std::string_view m) { why = m; };
    std::unique_ptr<store::file> f;
    auto ec = store::file::open(std::make_unique<store::fd_io>(fd), store_opts, f);
    if (ec) {
      ++damaged_files;
      bar.say(out, fmt::format("{}: unreadable container: {}", path.string(), why.empty() ? ec.message() : why));
      damaged.push_back({{"file", path.string()}, {"error", why.empty() ? ec.message() : why}});
      continue;
    }
    const auto st = f->stats();
    if (!f->is_container()) {
      ++plain;
      logical += st.logical_size;
      stored += st.logical_size;
      allocated += f->physical_size();
      continue;
    }
    ++containers;
    std::vector<store::damage> found;
    ec = f->check(found);
    logical += st.logical_size;
    stored += st.container_size;
    allocated += f->physical_size();
    records += st.records;
    holes += st.holes;
    raw += st.raw;
    lost += st.damaged;
    for (std::size_t i = 0; i < per_format.size(); ++i) per_format[i] += st.per_format[i];
    if (ec || !found.empty()) {
      ++damaged_files;
      bad_records += found.size();
      for (const auto& d : found) {
        bar.say(out, fmt::format("{}: {}", path.string(), d.what));
        damaged.push_back({{"file", path.string()}, {"record", d.record}, {"error", d.what}});
      }
      if (ec) bar.say(out, fmt::format("{}: {}", path.string(), ec.message()));
    }
  }
  bar.finish();
  const double ratio = stored > 0 ? static_cast<double>(logical) / static_cast<double>(stored) : 1.0;
  if (o.json) {
    nlohmann::json j{{"containers", containers},   {"plain_files", plain},    {"damaged_files", damaged_files},
                     {"damaged_records", bad_records}, {"logical_bytes", logical}, {"stored_bytes", stored},
                     {"allocated_bytes", allocated}, {"ratio", ratio},        {"records", records},
                     {"holes", holes},             {"raw", raw},              {"lost", lost},
                     {"gzip", per_format[1]},      {"zstd", per_format[2]},   {"lz4", per_format[3]},
                     {"damage", damaged}};
    fmt::print(out, "{}\n", j.dump(2));
  } else {
    fmt::print(out,
               "{} containers, {} plain files, {} damaged\n"
               "logical {:.1f} MiB, stored {:.1f} MiB (allocated {:.1f} MiB), ratio {:.3f}\n"
               "records {}: gzip {}, zstd {}, lz4 {}, raw {}, holes {}, lost {}\n",
               containers, plain, damaged_files, static_cast<double>(logical) / (1 << 20),
               static_cast<double>(stored) / (1 << 20), static_cast<double>(allocated) / (1 << 20), ratio, records,
               per_format[1], per_format[2], per_format[3], raw, holes, lost);
  }
  return damaged_files == 0 ? 0 : 1;
}

}  // namespace qzfs::cli
