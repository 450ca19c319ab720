#pragma once
// store/ (internal): a plain backing file (no container magic, no marker): read and written as
// it is, never reinterpreted; every call goes straight to the backing io.
//
// Thread-safety: every member from any thread (io's own guarantee); no state of its own.

#include "file_impl.h"

namespace qzfs::store {

class plain_file final : public file_impl {
 public:
  explicit plain_file(file_core& core) noexcept : core_(core), io_(core.backing()) {}

  [[nodiscard]] bool is_container() const noexcept override { return false; }
  [[nodiscard]] std::uint32_t record_size() const noexcept override { return 0; }

  [[nodiscard]] std::error_code pread(std::span<std::byte> out, std::uint64_t off, std::size_t& got) override;
  [[nodiscard]] std::error_code pwrite(std::span<const iovec> in, std::uint64_t off) override;
  /// (Truncating to zero may turn the file into a container: the front decides that, file.cc.)
  [[nodiscard]] std::error_code truncate(std::uint64_t size) override;
  [[nodiscard]] std::error_code punch_hole(std::uint64_t off, std::uint64_t len) override;
  [[nodiscard]] std::error_code zero_range(std::uint64_t off, std::uint64_t len, bool keep_size) override;
  [[nodiscard]] std::error_code allocate(std::uint64_t off, std::uint64_t len, bool keep_size) override;
  [[nodiscard]] std::error_code seek(std::uint64_t off, int whence, std::uint64_t& out) override;
  [[nodiscard]] std::error_code flush() override { return {}; }
  [[nodiscard]] std::error_code sync() override;
  /// Its bytes need the barriers alone.
  [[nodiscard]] std::error_code begin_group(std::unique_ptr<group_part>& out) override;

  [[nodiscard]] std::uint64_t size() const noexcept override;
  [[nodiscard]] file_stats stats() const override;
  [[nodiscard]] std::uint64_t commits() const noexcept override { return 0; }
  [[nodiscard]] std::error_code check(std::vector<damage>& found) override {
    found.clear();
    return {};
  }
  [[nodiscard]] bool clean() const override { return true; }

  [[nodiscard]] std::uint64_t charged() const noexcept override { return 0; }
  void shed() override {}

 private:
  file_core& core_;
  io& io_;
};

}  // namespace qzfs::store
