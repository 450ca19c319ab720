// fs/: mount plumbing (mount.h) and unmount().
#include "mount.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>
#include <vector>

#include "state.h"

namespace qzfs::fs {
namespace detail {

std::string unescape_mountinfo(const char* field) {
  std::string out;
  for (const char* p = field; *p != '\0'; ++p) {
    if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' && p[3] <= '7') {
      out.push_back(static_cast<char>((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0')));
      p += 3;
    } else {
      out.push_back(*p);
    }
  }
  return out;
}

// The kernel reads ahead at most what the FUSE connection's backing device allows: 128 KiB
// unless raised (the INIT reply can only lower it). More in flight lets several threads decode
// records at once; the device's sysfs knob is writable by root only, so others keep 128 KiB.
void set_readahead(const mount_options& o, std::FILE* err) {
  if (o.readahead_kb == 0) return;
  // The device number from /proc/self/mountinfo: a stat() of the mount point would wait for
  // this daemon, which does not serve yet.
  char real[PATH_MAX];
  if (::realpath(o.mountpoint.c_str(), real) == nullptr) return;
  std::FILE* mi = std::fopen("/proc/self/mountinfo", "re");
  if (mi == nullptr) return;
  std::string dev;
  char line[8192];
  while (std::fgets(line, sizeof line, mi) != nullptr) {
    // id parent major:minor root mountpoint ... - fstype source options
    char devno[64], root[4096], point[4096];
    if (std::sscanf(line, "%*s %*s %63s %4095s %4095s", devno, root, point) == 3 &&
        unescape_mountinfo(point) == real && std::strstr(line, " - fuse.qzfs ") != nullptr) {
      dev = devno;  // the last one: mounts stack
    }
  }
  std::fclose(mi);
  if (dev.empty()) return;
  const std::string knob = "/sys/class/bdi/" + dev + "/read_ahead_kb";
  const int fd = ::open(knob.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  const std::string v = std::to_string(o.readahead_kb);
  if (::write(fd, v.data(), v.size()) < 0 && o.debug) std::fprintf(err, "qzfs mount: %s: %s\n", knob.c_str(), std::strerror(errno));
  ::close(fd);
}

// The descriptor limit decides how many files can be served at once: the hard limit, and a
// share of it for the inodes' cached descriptors and for the store files held.
std::size_t raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &rl);
    (void)::getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur == RLIM_INFINITY ? (1u << 20) : static_cast<std::size_t>(rl.rlim_cur);
}

bool handles_work(int root_fd, int mount_fd) {
  std::vector<unsigned char> h(sizeof(file_handle) + MAX_HANDLE_SZ);
  auto* fh = reinterpret_cast<file_handle*>(h.data());
  fh->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (::name_to_handle_at(root_fd, "", fh, &mount_id, AT_EMPTY_PATH) != 0) return false;
  const int fd = ::open_by_handle_at(mount_fd, fh, O_PATH | O_CLOEXEC);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

namespace {

// The mount point's own path without stat()ing it (that would wait for its daemon): the
// parent's real path and the last name.
std::string mount_point_path(const std::string& mountpoint) {
  const std::filesystem::path mp = std::filesystem::path(mountpoint).lexically_normal();
  const auto name = mp.has_filename() ? mp.filename() : mp.parent_path().filename();
  const auto parent = (mp.has_filename() ? mp : mp.parent_path()).parent_path();
  char real[PATH_MAX];
  if (::realpath(parent.empty() ? "." : parent.c_str(), real) == nullptr) return mountpoint;
  return (std::filesystem::path(real) / name).string();
}

// The backing directory of the qzfs mount at `point`, from the mount's source ("qzfs:BACKING"),
// opened (-1 when none is found).
int open_backing_of(const std::string& point) {
  std::FILE* mi = std::fopen("/proc/self/mountinfo", "re");
  if (mi == nullptr) return -1;
  std::string source;
  char line[16384];
  while (std::fgets(line, sizeof line, mi) != nullptr) {
    char at[4096], src[8192];
    const char* tail = std::strstr(line, " - fuse.qzfs ");
    if (tail != nullptr && std::sscanf(line, "%*s %*s %*s %*s %4095s", at) == 1 && unescape_mountinfo(at) == point &&
        std::sscanf(tail + std::strlen(" - fuse.qzfs "), "%8191s", src) == 1) {
      source = unescape_mountinfo(src);  // the last one: mounts stack
    }
  }
  std::fclose(mi);
  if (source.rfind("qzfs:", 0) != 0) return -1;
  return ::open(source.c_str() + 5, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

}  // namespace

// fusermount3 -u (-z: lazily), run directly (no shell: a mount point is any string); its exit
// status, or -1 when it cannot be run.
int run_fusermount(const std::string& mountpoint, bool lazy) {
  const char* const argv_u[] = {"fusermount3", lazy ? "-uz" : "-u", "--", mountpoint.c_str(), nullptr};
  pid_t pid = 0;
  if (::posix_spawnp(&pid, "fusermount3", nullptr, nullptr, const_cast<char* const*>(argv_u), environ) != 0) return -1;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

}  // namespace detail

int unmount(const std::string& mountpoint, std::FILE* err) {
  using namespace detail;
  // Opened before the unmount: its lock is held by the daemon until everything is committed.
  const int backing = open_backing_of(mount_point_path(mountpoint));
  const owned_fd hold(backing);
  std::fflush(err);
  const int rc = detail::run_fusermount(mountpoint, false);
  if (rc < 0) {
    std::fprintf(err, "qzfs umount: cannot run fusermount3 (install fuse3)\n");
    return 1;
  }
  if (rc != 0) return 1;
  if (backing < 0) return 0;
  // The daemon commits every file after the kernel lets go; the lock is free once it is done.
  const auto since = std::chrono::steady_clock::now();
  bool said = false;
  while (::flock(backing, LOCK_SH | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) break;
    if (!said && std::chrono::steady_clock::now() - since > std::chrono::seconds(2)) {
      std::fprintf(err, "qzfs umount: waiting for the daemon to commit its files\n");
      said = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  (void)::flock(backing, LOCK_UN);
  return 0;
}

}  // namespace qzfs::fs
