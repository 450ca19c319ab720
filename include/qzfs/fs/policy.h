#pragma once
// fs/: a directory's or a file's own compression policy (`qzfs set`, `qzfs get`; docs/FS.md
// "Policy per directory and file"). Kept in the backing directory as the extended attribute
// user.qzfs.policy of the directory or file, in its canonical text ("compression=zstd-3
// recordsize=1M", either property alone). A new file or directory made through the mount takes
// its parent's attribute as its own (inherited at creation, like a mode), the mount opens a file
// with the properties it holds (the mount's options for the rest), and `qzfs pack` walks the
// backing directory the same way.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace qzfs::fs {

inline constexpr const char* policy_attr = "user.qzfs.policy";

struct file_policy {
  std::string compression;       // a policy name as written (engine::parse_policy takes it); "": not set
  std::uint32_t record_size = 0;  // for new files; 0: not set
  [[nodiscard]] bool empty() const noexcept { return compression.empty() && record_size == 0; }
  friend bool operator==(const file_policy&, const file_policy&) = default;
};

/// Parses "compression=zstd-3 recordsize=1M" (properties separated by spaces or commas; either
/// alone). On failure: nullopt and `error` says what is wrong and what is allowed.
[[nodiscard]] std::optional<file_policy> parse_file_policy(std::string_view text, std::string* error = nullptr);
/// The canonical text (what the attribute holds): "compression=zstd-3 recordsize=1M".
[[nodiscard]] std::string to_string(const file_policy& p);
/// `inner`'s properties, and `outer`'s where `inner` sets none.
[[nodiscard]] file_policy overlay(const file_policy& inner, const file_policy& outer);
/// The attribute of the object a descriptor (any kind, O_PATH too) or path names; empty when it
/// has none or holds something that does not parse.
[[nodiscard]] file_policy read_policy_attr(int fd);
[[nodiscard]] file_policy read_policy_attr(const char* path);
/// A new object takes its parent directory's attribute, if it has one (both descriptors of any
/// kind; a failure leaves the child without: the mount's options apply to it).
void inherit_policy(int parent_fd, int child_fd);

}  // namespace qzfs::fs
