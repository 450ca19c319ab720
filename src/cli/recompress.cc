// `qzfs recompress`: existing records rewritten under a new policy (docs/FS.md
// "Recompression"). Through a mount, online, in steps the daemon commits one after the other
// (the attribute user.qzfs.recompress, src/fs/ops_recompress.cc); on a backing directory that
// is not mounted, a file at a time, atomically (store::recompress_file). Both resume where a
// killed run stopped: the daemon's mark says how far a file has come, and a file rewritten on a
// backing directory carries the policy it was rewritten under.
#include <sys/stat.h>
#include <sys/xattr.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "progress.h"
#include "qzfs/engine/engine.h"
#include "qzfs/fs/policy.h"
#include "qzfs/offload/cpu_backend.h"
#include "qzfs/offload/scheduler.h"
#include "qzfs/store/file.h"
#include "qzfs/store/io.h"
#include "tools.h"
#include "walk.h"

namespace qzfs::cli {
namespace {

namespace stdfs = std::filesystem;
using clock = std::chrono::steady_clock;

constexpr const char* step_attr = "user.qzfs.recompress";

// Keeps the rate of logical bytes under --rate: sleeps when ahead of it.
class throttle {
 public:
  explicit throttle(double mib_per_s) : rate_(mib_per_s * (1 << 20)) {}
  void add(std::uint64_t bytes) {
    if (rate_ <= 0) return;
    done_ += static_cast<double>(bytes);
    const auto due = start_ + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(done_ / rate_));
    if (due > clock::now()) std::this_thread::sleep_until(due);
  }

 private:
  double rate_, done_ = 0;
  clock::time_point start_ = clock::now();
};

struct tally {
  std::uint64_t done = 0, resumed = 0, skipped = 0, failed = 0, online = 0;
  std::uint64_t logical = 0, before = 0, after = 0;
};

// Bytes the file takes on disk: through a mount the daemon's figure (a stat there may be the
// kernel's cached one), else the backing file's.
std::uint64_t allocated(const stdfs::path& p) {
  char buf[4096];
  if (const ssize_t n = ::lgetxattr(p.c_str(), "user.qzfs.du", buf, sizeof buf); n > 0) {
    const auto j = nlohmann::json::parse(std::string_view(buf, static_cast<std::size_t>(n)), nullptr, false);
    if (j.is_object() && j.contains("allocated_bytes")) return j["allocated_bytes"].get<std::uint64_t>();
  }
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_blocks) * 512 : 0;
}

// The file's state on a qzfs mount (the daemon's JSON), or nullopt when it is not on one.
std::optional<nlohmann::json> status_of(const stdfs::path& p, int& err) {
  std::string buf(4096, '\0');
  for (;;) {
    const ssize_t n = ::lgetxattr(p.c_str(), step_attr, buf.data(), buf.size());
    if (n >= 0) return nlohmann::json::parse(buf.substr(0, static_cast<std::size_t>(n)), nullptr, false);
    if (errno == ERANGE && buf.size() < (1 << 20)) {
      buf.resize(buf.size() * 4);
      continue;
    }
    err = errno;
    return std::nullopt;
  }
}

// The canonical "compression=NAME" of --policy, keeping the file's other properties.
std::string with_compression(const qzfs::fs::file_policy& own, const std::string& compression) {
  qzfs::fs::file_policy p = own;
  p.compression = compression;
  return qzfs::fs::to_string(p);
}

}  // namespace

int run_recompress(const recompress_options& o, std::FILE* out, std::FILE* err) {
  std::optional<engine::policy> wanted;
  std::string wanted_name;
  if (!o.policy.empty()) {
    wanted = engine::parse_policy(o.policy);
    if (!wanted) throw std::invalid_argument("unknown --policy '" + o.policy + "' (" + engine::policy_help() + ")");
    wanted_name = engine::to_string(*wanted);
  }
  unmounted_guard guard;  // backing directories stay unmounted while their files are renamed over
  for (const auto& p : o.paths) {
    if (on_qzfs_mount(p)) continue;
    if (const auto b = guard.hold(p); !b.empty()) {
      fmt::print(err,
                 "qzfs recompress: {} is inside {}, the backing directory of a running qzfs mount: recompress through the "
                 "mount, or unmount it first\n",
                 p, b);
      return 1;
    }
  }
  const std::uint64_t leftovers = remove_leftovers(o.paths);
  if (leftovers > 0 && o.verbose) fmt::print(out, "removed {} temporary files of killed runs\n", leftovers);

  // Offline: the CPU workers and an engine per policy, made when a file needs one.
  std::unique_ptr<offload::cpu_backend> cpu;
  std::unique_ptr<offload::scheduler> sched;
  std::map<std::string, std::unique_ptr<engine::engine>> engines;
  auto engine_of = [&](const engine::policy& p) -> engine::engine& {
    if (!sched) {
      cpu = std::make_unique<offload::cpu_backend>(offload::cpu_backend::options{.workers = o.threads});
      sched = std::make_unique<offload::scheduler>(*cpu, nullptr);
    }
    auto& e = engines[engine::to_string(p)];
    if (!e) e = std::make_unique<engine::engine>(*sched, engine::engine_options{.pol = p});
    return *e;
  };
  nearest_policy policy_of(o.paths);

  tally t;
  std::uint64_t file_before = 0, file_after = 0;  // the last file's stored bytes (-v)
  throttle pace(o.rate_mib);
  const auto files = regular_files(o.paths);
  progress bar(out, files.size(), total_size(files, out), "files");
  const auto t0 = clock::now();

  // A file recompressed: its stored bytes before and after, for -v and the summary.
  auto finished = [&](const stdfs::path& path, std::uint64_t before) {
    file_before = before;
    file_after = allocated(path);
    t.before += file_before;
    t.after += file_after;
    return 1;
  };

  // Through a mount: steps of the daemon, each committed; sized to take about half a second.
  auto online = [&](const stdfs::path& path, nlohmann::json st) -> int {
    ++t.online;
    if (o.record_size != 0) {
      bar.say(err, fmt::format("qzfs recompress: {}: --record-size changes files on a backing directory that is not "
                               "mounted (a mounted file keeps its record size; qzfs set sets it for new files)",
                               path.string()));
      return -1;
    }
    if (!st.value("container", false)) return 0;
    if (wanted) {
      const auto own = qzfs::fs::read_policy_attr(path.c_str());
      if (own.compression != wanted_name) {
        const std::string text = with_compression(own, wanted_name);
        if (::lsetxattr(path.c_str(), qzfs::fs::policy_attr, text.data(), text.size(), 0) != 0) {
          bar.say(err, fmt::format("qzfs recompress: {}: setting its policy: {}{}", path.string(), std::strerror(errno),
                                   errno == EPERM ? " (a new policy is root's and the mount owner's; without --policy "
                                                    "a file is recompressed under the policy it has)"
                                                  : ""));
          return -1;
        }
        int e = 0;
        auto again = status_of(path, e);
        if (!again) {
          bar.say(err, fmt::format("qzfs recompress: {}: {}", path.string(), std::strerror(e)));
          return -1;
        }
        st = *again;
      }
    }
    const std::uint64_t size = st.value("size", std::uint64_t{0});
    std::uint64_t at = o.force ? 0 : std::min(size, st.value("done", std::uint64_t{0}));
    if (size == 0 || at >= size) return 0;
    if (at > 0) ++t.resumed;
    const std::uint64_t before = allocated(path);
    std::uint64_t step = o.rate_mib > 0 ? 1 << 20 : 4 << 20;
    bool damaged = false;
    int changes = 0;
    while (at < size) {
      const std::uint64_t len = std::min(step, size - at);
      const std::string arg = fmt::format("{} {}", at, len);
      const auto s0 = clock::now();
      if (::lsetxattr(path.c_str(), step_attr, arg.data(), arg.size(), 0) != 0) {
        const int e = errno;
        if (e == EBUSY) {  // another recompression's step is under way on this mount
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
          continue;
        }
        if (e == EAGAIN && ++changes < 5) {  // the file's policy changed during the step: from its mark again
          int e2 = 0;
          auto again = status_of(path, e2);
          if (!again) {
            bar.say(err, fmt::format("qzfs recompress: {}: {}", path.string(), std::strerror(e2)));
            return -1;
          }
          at = std::min(size, again->value("done", std::uint64_t{0}));
          continue;
        }
        if (e != EBADMSG) {
          bar.say(err, fmt::format("qzfs recompress: {}: {}{} (what is done so far stays; run again to go on)",
                                   path.string(), std::strerror(e),
                                   e == EACCES ? " (a file is recompressed by its owner, root or the mount's owner)" : ""));
          return -1;
        }
        damaged = true;
      }
      const double secs = std::chrono::duration<double>(clock::now() - s0).count();
      if (secs < 0.25 && step < (64u << 20)) step *= 2;
      if (secs > 1.0 && step > (1u << 20)) step /= 2;
      // Under --rate, steps of half a second's worth at most (an even pace, a kill loses little).
      if (o.rate_mib > 0) step = std::min<std::uint64_t>(step, std::max<std::uint64_t>(1 << 20, static_cast<std::uint64_t>(o.rate_mib * (1 << 19))));
      at += len;
      t.logical += len;
      bar.advance(0, len);
      pace.add(len);
    }
    if (damaged) {
      bar.say(err, fmt::format("qzfs recompress: {}: damaged records are left as they are (qzfs check names them)",
                               path.string()));
      return -1;
    }
    return finished(path, before);
  };

  // A backing directory that is not mounted: the file rewritten beside itself and renamed over.
  auto offline = [&](const stdfs::path& path) -> int {
    const auto own = policy_of.of(path);
    const std::string compression = wanted ? wanted_name : (own.compression.empty() ? std::string("gzip") : own.compression);
    const auto pol = engine::parse_policy(compression);
    if (!pol) {
      bar.say(err, fmt::format("qzfs recompress: {}: its policy '{}' is unknown", path.string(), compression));
      return -1;
    }
    const std::string name = engine::to_string(*pol);
    const std::uint32_t rs = o.record_size != 0 ? o.record_size : own.record_size;
    // Rewritten under this already (a run that was killed later on, or an earlier one): skipped.
    if (!o.force) {
      char mark[512];
      if (const ssize_t m = ::lgetxattr(path.c_str(), store::recompressed_xattr, mark, sizeof mark); m > 0) {
        const std::string_view text(mark, static_cast<std::size_t>(m));
        const auto was = text.find(" @") == std::string_view::npos ? qzfs::fs::parse_file_policy(text) : std::nullopt;
        if (was && was->compression == name && (rs == 0 || was->record_size == rs)) return 0;
      }
    }
    store::options so;
    so.compressor = &engine_of(*pol);
    so.record_size = rs;
    so.name = path.string();
    so.log = [&](std::string_view m) { bar.say(err, fmt::format("qzfs recompress: {}", m)); };
    const std::uint64_t before = allocated(path);
    dir_handle dir(path.parent_path());
    std::uint64_t copied = 0;
    const auto ec = store::recompress_file(
        dir.fd, path.filename().c_str(), so,
        [&](int fd, std::uint32_t record_size) -> std::error_code {
          // What it was rewritten under (the mount keeps this while it writes by the same), and
          // with --policy the file's own policy from now on.
          const std::string text = qzfs::fs::to_string(qzfs::fs::file_policy{name, record_size});
          if (::fsetxattr(fd, store::recompressed_xattr, text.data(), text.size(), 0) != 0) return {errno, std::generic_category()};
          if (wanted || o.record_size != 0) {
            auto p = qzfs::fs::read_policy_attr(fd);
            if (wanted) p.compression = name;
            if (o.record_size != 0) p.record_size = o.record_size;
            const std::string pt = qzfs::fs::to_string(p);
            if (::fsetxattr(fd, qzfs::fs::policy_attr, pt.data(), pt.size(), 0) != 0) return {errno, std::generic_category()};
          }
          return {};
        },
        [&](std::uint64_t bytes) {
          copied += bytes;
          bar.advance(0, bytes);
          pace.add(bytes);
        });
    t.logical += copied;
    if (ec == std::errc::not_supported) return 0;
    if (ec == std::errc::too_many_links) {
      if (o.verbose) bar.say(out, fmt::format("{}: skipped (has other hard links)", path.string()));
      return 0;
    }
    if (ec) {
      bar.say(err, fmt::format("qzfs recompress: {}: {} (the file is kept as it was{})", path.string(), ec.message(),
                               ec == std::errc::io_error ? "; qzfs check names its damaged records" : ""));
      return -1;
    }
    return finished(path, before);
  };

  for (const auto& path : files) {
    progress::item step{bar};
    int e = 0;
    const auto st = status_of(path, e);
    if (!st && e != ENOTSUP && e != ENODATA && e != EOPNOTSUPP) {
      ++t.failed;
      bar.say(err, fmt::format("qzfs recompress: {}: {}", path.string(), std::strerror(e)));
      continue;
    }
    const int r = st ? online(path, *st) : offline(path);
    if (r < 0) {
      ++t.failed;
    } else if (r == 0) {
      ++t.skipped;
      if (o.verbose) bar.say(out, fmt::format("{}: skipped (plain, empty or recompressed already)", path.string()));
    } else {
      ++t.done;
      if (o.verbose) bar.say(out, fmt::format("{}: {} -> {} bytes stored", path.string(), file_before, file_after));
    }
  }
  bar.finish();
  const double secs = std::chrono::duration<double>(clock::now() - t0).count();
  fmt::print(out,
             "recompressed {} files ({} resumed, {} skipped, {} failed{}): {:.1f} MiB, stored {:.1f} MiB -> {:.1f} MiB, "
             "{:.1f} MiB/s, policy {}\n",
             t.done, t.resumed, t.skipped, t.failed, t.online > 0 ? fmt::format(", {} through a mount", t.online) : "",
             static_cast<double>(t.logical) / (1 << 20), static_cast<double>(t.before) / (1 << 20),
             static_cast<double>(t.after) / (1 << 20), secs > 0 ? static_cast<double>(t.logical) / (1 << 20) / secs : 0.0,
             wanted ? engine::describe(*wanted) : std::string("each file's own"));
  return t.failed == 0 ? 0 : 1;
}

}  // namespace qzfs::cli
