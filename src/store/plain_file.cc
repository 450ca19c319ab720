#include "plain_file.h"

namespace qzfs::store {

std::error_code plain_file::pread(std::span<std::byte> out, std::uint64_t off, std::size_t& got) {
  got = 0;
  return io_.pread(out, off, got);
}

std::error_code plain_file::pwrite(std::span<const iovec> in, std::uint64_t off) { return io_.pwritev(in, off); }

std::error_code plain_file::truncate(std::uint64_t size) { return io_.truncate(size); }

std::error_code plain_file::punch_hole(std::uint64_t off, std::uint64_t len) { return io_.punch(off, len); }

std::error_code plain_file::zero_range(std::uint64_t off, std::uint64_t len, bool keep_size) {
  if (auto ec = io_.punch(off, len)) return ec;
  std::uint64_t sz = 0;
  if (auto ec = io_.size(sz)) return ec;
  return !keep_size && off + len > sz ? io_.truncate(off + len) : std::error_code{};
}

std::error_code plain_file::allocate(std::uint64_t off, std::uint64_t len, bool keep_size) {
  return io_.allocate(off, len, keep_size);
}

std::error_code plain_file::seek(std::uint64_t off, int whence, std::uint64_t& out) { return io_.seek(off, whence, out); }

std::error_code plain_file::sync() { return core_.note_error(io_.sync()); }

namespace {
class plain_part final : public group_part {
 public:
  explicit plain_part(file_core& core) noexcept : core_(core) {}
  std::error_code after_first() override { return {}; }
  bool after_second() override { return false; }
  std::error_code failed(std::error_code ec) override { return core_.note_error(ec); }

 private:
  file_core& core_;
};
}  // namespace

std::error_code plain_file::begin_group(std::unique_ptr<group_part>& out) {
  out = std::make_unique<plain_part>(core_);
  return {};
}

std::uint64_t plain_file::size() const noexcept {
  std::uint64_t s = 0;
  return io_.size(s) ? 0 : s;
}

file_stats plain_file::stats() const {
  file_stats st;
  st.logical_size = size();
  (void)io_.size(st.container_size);
  st.live_bytes = st.container_size;
  return st;
}

}  // namespace qzfs::store
