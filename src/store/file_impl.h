#pragma once
// store/ (internal): the one interface behind store::file, and what its two implementations
// share.
//
// store::file is a front: it holds a file_core and the implementation in use, and forwards
// every call to it. A backing file is read either as a container (container.h: records
// compressed through the engine) or as a plain file (plain_file.h: the backing bytes as they
// are). A plain file truncated to zero becomes a container (file.cc); the plain implementation
// then stays alive, unused, until the file is closed, so a call that raced the switch still
// finds it.
//
// Thread-safety: as store::file (every member from any thread). file_core's error record has
// its own leaf lock.

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <system_error>
#include <vector>

#include "qzfs/store/file.h"
#include "qzfs/store/io.h"

namespace qzfs::store {

/// What a file keeps whatever it is read as: the backing file, the options, its failures.
class file_core {
 public:
  /// `owner`: the store::file in front (memory_budget::relieve leaves it out).
  file_core(std::unique_ptr<io> backing, const options& o, const file* owner);

  [[nodiscard]] io& backing() const noexcept { return *io_; }
  [[nodiscard]] const options& opts() const noexcept { return o_; }
  /// The engine records are compressed by from now on: options::compressor at first, another
  /// one after set_compressor (the file's policy changed while it was open; a batch keeps the
  /// engine it was submitted to).
  [[nodiscard]] engine::engine* compressor() const noexcept { return compressor_.load(std::memory_order_acquire); }
  void set_compressor(engine::engine* e) noexcept { compressor_.store(e, std::memory_order_release); }
  [[nodiscard]] const file* owner() const noexcept { return owner_; }
  /// A log line, prefixed with the file's name.
  void report(std::string_view what) const;

  /// Counts a failure for error_seq() and returns it (no-op for success).
  std::error_code note_error(std::error_code ec);
  [[nodiscard]] std::error_code last_error() const;
  [[nodiscard]] std::uint64_t error_seq() const noexcept { return error_seq_.load(std::memory_order_acquire); }

 private:
  std::unique_ptr<io> io_;
  options o_;
  std::atomic<engine::engine*> compressor_;
  const file* owner_;
  mutable std::mutex m_;  // lock order: leaf
  std::error_code last_error_;  // guarded by m_: the last failure of a write-back or commit
  std::atomic<std::uint64_t> error_seq_{0};
};

/// A file's part in a group commit (file::sync_group): its sync() cut at its two syncs, which the
/// group makes with one barrier for all its members. Holds the file's commit locks until it goes.
class group_part {
 public:
  virtual ~group_part() = default;
  /// Everything the first barrier must cover is written (frames, maps). After it: writes what
  /// names them (a container's slot); a failure gives everything back for the next sync.
  [[nodiscard]] virtual std::error_code after_first() = 0;
  /// After the second barrier: the commit is durable. True: compaction is due (a sync() does it).
  [[nodiscard]] virtual bool after_second() = 0;
  /// The file's own barrier failed (its fdatasync after a failed shared one).
  [[nodiscard]] virtual std::error_code failed(std::error_code ec) = 0;
};

/// The operations of store::file that depend on what the backing file is (file.h has their
/// contracts). The front checks nothing the implementations check themselves.
class file_impl {
 public:
  virtual ~file_impl() = default;
  [[nodiscard]] virtual bool is_container() const noexcept = 0;
  [[nodiscard]] virtual std::uint32_t record_size() const noexcept = 0;

  [[nodiscard]] virtual std::error_code pread(std::span<std::byte> out, std::uint64_t off, std::size_t& got) = 0;
  [[nodiscard]] virtual std::error_code pwrite(std::span<const iovec> in, std::uint64_t off) = 0;
  [[nodiscard]] virtual std::error_code truncate(std::uint64_t size) = 0;
  [[nodiscard]] virtual std::error_code punch_hole(std::uint64_t off, std::uint64_t len) = 0;
  /// The range is already checked against format::max_container_size.
  [[nodiscard]] virtual std::error_code zero_range(std::uint64_t off, std::uint64_t len, bool keep_size) = 0;
  [[nodiscard]] virtual std::error_code allocate(std::uint64_t off, std::uint64_t len, bool keep_size) = 0;
  [[nodiscard]] virtual std::error_code seek(std::uint64_t off, int whence, std::uint64_t& out) = 0;
  [[nodiscard]] virtual std::error_code flush() = 0;
  [[nodiscard]] virtual std::error_code sync() = 0;
  /// The first half of sync() for a group commit (out: the rest; null: nothing to commit, or the
  /// file committed on its own because it needs more than a commit, e.g. after a failed sync).
  [[nodiscard]] virtual std::error_code begin_group(std::unique_ptr<group_part>& out) = 0;

  [[nodiscard]] virtual std::uint64_t size() const noexcept = 0;
  [[nodiscard]] virtual file_stats stats() const = 0;
  [[nodiscard]] virtual std::uint64_t commits() const noexcept = 0;
  /// The next commit names no sync log (file::close_log).
  virtual void close_log() {}
  /// Syncs made durable through the sync log, and its batches recovered at open.
  [[nodiscard]] virtual std::uint64_t log_syncs() const noexcept { return 0; }
  [[nodiscard]] virtual std::uint64_t log_replayed() const noexcept { return 0; }
  [[nodiscard]] virtual std::error_code check(std::vector<damage>& found) = 0;
  /// file::rewrite; a plain file has no records to compress again.
  [[nodiscard]] virtual std::error_code rewrite(std::uint64_t, std::uint64_t, rewrite_tally&) {
    return std::make_error_code(std::errc::not_supported);
  }
  [[nodiscard]] virtual bool clean() const = 0;

  /// Memory budget: bytes of record buffers held, and letting go of them.
  [[nodiscard]] virtual std::uint64_t charged() const noexcept = 0;
  virtual void shed() = 0;
};

}  // namespace qzfs::store
