#pragma once
// fs/: the compression service a mount runs on: the CPU worker pool, the accelerator, the
// scheduler between them and the engine (DESIGN.md: store -> engine -> offload). service.cc is
// the only file of src/fs/ that sees the offload module's headers and the engine's class
// (policy.cc checks policy names with the engine's parser); the FUSE operations reach the engine
// through store::options alone.
//
// Thread-safety: made and destroyed by serve() (after fuse_daemonize's fork: threads do not
// survive one); engine() and fill() may be called from any thread meanwhile.
#include <memory>
#include <string>

#include "qzfs/fs/filesystem.h"
#include "qzfs/fs/stats.h"

namespace qzfs::engine {
class engine;
}

namespace qzfs::fs::detail {

class service {
 public:
  /// Why `o` cannot be served ("": it can): an unknown compression policy, or accel=qat
  /// without a working device (accel=auto uses it when present). Starts no thread.
  [[nodiscard]] static std::string check(const mount_options& o);
  /// Starts the CPU workers and the accelerator; `o` passed check().
  explicit service(const mount_options& o);
  ~service();
  service(const service&) = delete;
  service& operator=(const service&) = delete;

  [[nodiscard]] engine::engine& engine() noexcept;
  /// The engine of a policy other than the mount's (a directory's or file's own, qzfs/fs/policy.h),
  /// made on first use on the same scheduler and kept until the service ends; the mount's own
  /// engine for "" and for an unknown name.
  [[nodiscard]] engine::engine& engine_for(const std::string& policy);
  /// The canonical name of the policy engine_for(policy) compresses by ("gzip-6", "auto").
  [[nodiscard]] std::string policy_name(const std::string& policy) const;
  /// The engine's, the scheduler's and the backends' counts since the mount, into `st`.
  void fill(stats& st) const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace qzfs::fs::detail
