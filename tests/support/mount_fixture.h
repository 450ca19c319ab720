#pragma once
// Real mounts for the integration tests: the qzfs binary mounted with FUSE on a fresh directory,
// used through ordinary system calls, unmounted (with retries), and the backing directory
// inspected.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "test_data.h"

namespace qzfs::mount_rig {

namespace fs = std::filesystem;

inline bool mounted(const fs::path& mp) {
  // mountinfo writes space, tab, newline and backslash as octal escapes.
  std::string esc;
  for (char c : mp.string()) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\\') {
      char oct[8];
      std::snprintf(oct, sizeof oct, "\\%03o", static_cast<unsigned char>(c));
      esc += oct;
    } else {
      esc += c;
    }
  }
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" " + esc + " ") != std::string::npos && line.find("fuse.qzfs") != std::string::npos) return true;
  }
  return false;
}

inline int run(const std::vector<std::string>& args, std::string* output = nullptr) {
  std::string cmd;
  for (const auto& a : args) cmd += "'" + a + "' ";
  cmd += " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int rc = ::pclose(p);
  if (output != nullptr) *output = out;
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

inline void put(const fs::path& p, const std::vector<std::byte>& d) {
  std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(d.data()), static_cast<std::streamsize>(d.size()));
}

// Text that differs per seed (the corpus text from a seed-dependent offset).
inline std::vector<std::byte> pattern(std::uint64_t seed, std::size_t n) {
  const auto& t = qzfs::test::text_source();
  std::vector<std::byte> v(n);
  const std::size_t at = (seed * 7919 + seed * seed * 104729) % t.size();
  for (std::size_t i = 0; i < n; ++i) v[i] = t[(at + i) % t.size()];
  return v;
}

// A number from `qzfs stats --json` output: "key": N (the first one after `after`).
// A missing key fails the test (and reads as 0), so no check passes on a field that is gone.
inline std::uint64_t json_number(const std::string& out, const std::string& key, const std::string& after = "") {
  std::size_t from = after.empty() ? 0 : out.find("\"" + after + "\"");
  const auto k = from == std::string::npos ? from : out.find("\"" + key + "\": ", from);
  if (k == std::string::npos) {
    ADD_FAILURE() << "no \"" << key << "\" after \"" << after << "\" in: " << out;
    return 0;
  }
  return std::stoull(out.substr(k + key.size() + 4));
}

class mount_test : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/qzfs-mount-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    backing_ = root_ / "backing";
    mnt_ = root_ / "mnt";
    fs::create_directories(backing_);
    fs::create_directories(mnt_);
  }
  void TearDown() override {
    if (mounted(mnt_)) unmount();
    fs::remove_all(root_);
  }
  void mount(const std::string& opts = "commit=1") {
    std::string out;
    const int rc = run({QZFS_BINARY, "mount", "-o", opts, backing_.string(), mnt_.string()}, &out);
    ASSERT_EQ(rc, 0) << out;
    ASSERT_TRUE(mounted(mnt_)) << out;
  }
  /// The daemon under `ulimit -n nofile` (soft and hard), as a service manager may start it.
  void mount_limited(const std::string& opts, unsigned nofile) {
    std::string out;
    const std::string cmd = "ulimit -n " + std::to_string(nofile) + " && exec \"$0\" mount -o \"$1\" \"$2\" \"$3\"";
    const int rc = run({"bash", "-c", cmd, QZFS_BINARY, opts, backing_.string(), mnt_.string()}, &out);
    ASSERT_EQ(rc, 0) << out;
    ASSERT_TRUE(mounted(mnt_)) << out;
  }
  /// The daemon's process id (the newest qzfs mount of this mount point).
  std::string daemon_pid() {
    std::string out;
    run({"pgrep", "-n", "-f", "[q]zfs mount .*" + mnt_.string()}, &out);
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    return out;
  }
  void unmount() {
    for (int i = 0; i < 50; ++i) {
      if (run({QZFS_BINARY, "umount", mnt_.string()}) == 0 && !mounted(mnt_)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_FALSE(mounted(mnt_));
    // `qzfs umount` returns once the daemon has let go of the backing directory; it may still be
    // exiting (a sanitizer's leak check takes seconds): wait for it to be gone.
    int i = 0;
    for (; i < 1200 && run({"pgrep", "-f", "[q]zfs mount .*" + mnt_.string()}) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_LT(i, 1200) << "the daemon of " << mnt_ << " did not exit within 60 s of its unmount";
  }
  fs::path root_, backing_, mnt_;
};

}  // namespace qzfs::mount_rig
