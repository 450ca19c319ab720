#pragma once
// store/: the backing file, as the store sees it. Every byte the store keeps goes through this
// interface, so tests can put a layer under the store that stops at the k-th write or sync,
// tears that write, or forgets what was never synced (tests/support/mem_io.h: crash_plan).
//
// Contract: pwritev writes everything or fails; pread returns fewer bytes only at the end of
// the file. Errors are errno values (std::generic_category).
// Thread-safety: every call may come from any thread at once (pread/pwrite on one fd are).

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <system_error>

namespace qzfs::store {

class io {
 public:
  virtual ~io() = default;
  [[nodiscard]] virtual std::error_code pread(std::span<std::byte> out, std::uint64_t off, std::size_t& got) noexcept = 0;
  [[nodiscard]] virtual std::error_code pwritev(std::span<const iovec> in, std::uint64_t off) noexcept = 0;
  /// Makes every completed write durable (fdatasync: data and the size needed to reach it).
  [[nodiscard]] virtual std::error_code sync() noexcept = 0;
  [[nodiscard]] virtual std::error_code truncate(std::uint64_t size) noexcept = 0;
  /// Gives [off, off+len) back to the file system (reads zeros afterwards); a file system
  /// without hole punching answers std::errc::operation_not_supported and the store goes on.
  [[nodiscard]] virtual std::error_code punch(std::uint64_t off, std::uint64_t len) noexcept = 0;
  /// Reserves [off, off+len) (fallocate mode 0; plain files only).
  [[nodiscard]] virtual std::error_code allocate(std::uint64_t off, std::uint64_t len, bool keep_size) noexcept = 0;
  [[nodiscard]] virtual std::error_code size(std::uint64_t& out) noexcept = 0;
  /// Bytes the file system allocated for the file (st_blocks x 512).
  [[nodiscard]] virtual std::error_code allocated(std::uint64_t& out) noexcept = 0;
  /// lseek SEEK_DATA / SEEK_HOLE (plain files only); ENXIO past the end.
  [[nodiscard]] virtual std::error_code seek(std::uint64_t off, int whence, std::uint64_t& out) noexcept = 0;
  /// Bytes the file system could still give this file (statvfs: blocks available to users).
  [[nodiscard]] virtual std::error_code available(std::uint64_t& out) noexcept = 0;
  /// A copy of the newest committed slot kept beside the bytes (an extended attribute,
  /// docs/FORMAT.md "Marker"): it tells a container whose first block is damaged from a plain
  /// file, and gives its state back. Optional: operation_not_supported where there is none.
  [[nodiscard]] virtual std::error_code get_marker(std::span<std::byte, 64> out, bool& found) noexcept {
    (void)out;
    found = false;
    return std::make_error_code(std::errc::operation_not_supported);
  }
  [[nodiscard]] virtual std::error_code set_marker(std::span<const std::byte, 64> in) noexcept {
    (void)in;
    return std::make_error_code(std::errc::operation_not_supported);
  }
  /// The file system the file is on (st_dev + 1), for barriers shared by many files
  /// (file::sync_group); 0: none known, the file is synced on its own.
  [[nodiscard]] virtual std::uint64_t fs_id() const noexcept { return 0; }
  /// False when the file was opened read-only (the store then changes nothing on it).
  [[nodiscard]] virtual bool writable() const noexcept { return true; }

  [[nodiscard]] std::error_code pwrite(std::span<const std::byte> in, std::uint64_t off) noexcept {
    iovec v{const_cast<std::byte*>(in.data()), in.size()};
    return pwritev({&v, 1}, off);
  }
  /// Reads exactly out.size() bytes or fails (EIO for a short read: the store knows the sizes).
  [[nodiscard]] std::error_code pread_exact(std::span<std::byte> out, std::uint64_t off) noexcept;
  /// A hint: bytes [off, off+len) will be read soon (read them ahead). Nothing to fail.
  virtual void will_need(std::uint64_t off, std::uint64_t len) noexcept {
    (void)off;
    (void)len;
  }
  /// pread_exact into `bufs`, one after the other from `off` on (a run of raw frames: their
  /// headers into small buffers, their payloads straight into the reader's buffer); one preadv
  /// where the io has it.
  [[nodiscard]] virtual std::error_code preadv_exact(std::span<const iovec> bufs, std::uint64_t off) noexcept {
    for (const auto& v : bufs) {
      if (auto ec = pread_exact({static_cast<std::byte*>(v.iov_base), v.iov_len}, off)) return ec;
      off += v.iov_len;
    }
    return {};
  }
};

/// The real thing: a file descriptor (owned: closed with the io).
class fd_io final : public io {
 public:
  explicit fd_io(int fd) noexcept;
  ~fd_io() override;
  fd_io(const fd_io&) = delete;
  fd_io& operator=(const fd_io&) = delete;

  std::error_code pread(std::span<std::byte> out, std::uint64_t off, std::size_t& got) noexcept override;
  std::error_code preadv_exact(std::span<const iovec> bufs, std::uint64_t off) noexcept override;
  void will_need(std::uint64_t off, std::uint64_t len) noexcept override;
  std::error_code pwritev(std::span<const iovec> in, std::uint64_t off) noexcept override;
  std::error_code sync() noexcept override;
  std::error_code truncate(std::uint64_t size) noexcept override;
  std::error_code punch(std::uint64_t off, std::uint64_t len) noexcept override;
  std::error_code allocate(std::uint64_t off, std::uint64_t len, bool keep_size) noexcept override;
  std::error_code size(std::uint64_t& out) noexcept override;
  std::error_code allocated(std::uint64_t& out) noexcept override;
  std::error_code seek(std::uint64_t off, int whence, std::uint64_t& out) noexcept override;
  std::error_code available(std::uint64_t& out) noexcept override;
  std::error_code get_marker(std::span<std::byte, 64> out, bool& found) noexcept override;
  std::error_code set_marker(std::span<const std::byte, 64> in) noexcept override;
  [[nodiscard]] std::uint64_t fs_id() const noexcept override { return fs_id_; }
  [[nodiscard]] bool writable() const noexcept override { return writable_; }
  [[nodiscard]] int fd() const noexcept { return fd_; }

 private:
  int fd_;
  // A root daemon writes a user's file as that user (fsuid, around each write): the backing file
  // system's root reserve then holds it back as it would the user (with CAP_SYS_RESOURCE
  // dropped at mount, fs/). -1: write as the daemon.
  int owner_ = -1;
  std::uint64_t fs_id_ = 0;
  bool writable_ = true;
  // Writes to one backing file take turns here. The kernel serialises them on the inode's lock
  // anyway, but its waiters spin: with a dozen FUSE threads writing raw records into one file,
  // `fio` at 1 MiB measured 4-7 CPU-s/GiB at ~240 MB/s instead of 1.8 at ~1000 (tmpfs, 2 cores;
  // some of that may have been the VM's first-touch cost of memory, docs/FS.md).
  std::mutex write_m_;
};

/// The extended attribute that holds a container's marker (hidden from users by the mount).
inline constexpr const char* marker_xattr = "user.qzfs.slot";
/// The marker of a descriptor's file (found false: none, or no extended attributes there).
[[nodiscard]] std::error_code read_marker(int fd, std::span<std::byte, 64> out, bool& found) noexcept;

/// Opens `path` relative to `dirfd` (O_RDWR | O_CLOEXEC | O_NOFOLLOW | extra flags).
[[nodiscard]] std::error_code open_fd_io(int dirfd, const char* path, int extra_flags, unsigned mode,
                                         std::unique_ptr<io>& out) noexcept;

}  // namespace qzfs::store
