// fs/: per-directory and per-file policy (qzfs/fs/policy.h).
#include "qzfs/fs/policy.h"

#include <sys/xattr.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <string>

#include "qzfs/engine/engine.h"

namespace qzfs::fs {
namespace {

// "128K", "1M", "65536" -> bytes; 0 when it does not parse.
std::uint64_t size_of(std::string_view s) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end == s.data()) return 0;
  std::string unit(end, s.data() + s.size());
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  constexpr std::uint64_t most = std::uint64_t{1} << 40;  // far above any record size, no overflow below
  if (v > most) return 0;
  if (unit.empty() || unit == "B") return v;
  if (unit == "K" || unit == "KB" || unit == "KIB") return v << 10;
  if (unit == "M" || unit == "MB" || unit == "MIB") return v << 20;
  return 0;
}

std::string size_text(std::uint32_t b) { return b >= (1u << 20) ? std::to_string(b >> 20) + "M" : std::to_string(b >> 10) + "K"; }

}  // namespace

std::optional<file_policy> parse_file_policy(std::string_view text, std::string* error) {
  auto fail = [&](std::string why) -> std::optional<file_policy> {
    if (error != nullptr) *error = std::move(why);
    return std::nullopt;
  };
  file_policy p;
  std::size_t at = 0;
  bool any = false;
  while (at < text.size()) {
    while (at < text.size() && (text[at] == ' ' || text[at] == ',' || text[at] == '\n')) ++at;
    if (at == text.size()) break;
    std::size_t end = at;
    while (end < text.size() && text[end] != ' ' && text[end] != ',' && text[end] != '\n') ++end;
    const std::string_view item = text.substr(at, end - at);
    at = end;
    const auto eq = item.find('=');
    if (eq == std::string_view::npos) return fail("'" + std::string(item) + "': expected PROPERTY=VALUE (compression=..., recordsize=...)");
    const std::string_view key = item.substr(0, eq), val = item.substr(eq + 1);
    if (key == "compression") {
      const auto pol = engine::parse_policy(val);
      if (!pol) {
        return fail("compression=" + std::string(val) + ": unknown (off, lz4, gzip[-N] N 1-12, zstd[-N] N 1-19, zstd-fast-N, auto)");
      }
      p.compression = engine::to_string(*pol);  // canonical: "zstd-03" is zstd-3
    } else if (key == "recordsize") {
      const std::uint64_t rs = size_of(val);
      if (rs < 4096 || rs > (1u << 20) || (rs & (rs - 1)) != 0) {
        return fail("recordsize=" + std::string(val) + ": must be a power of two between 4K and 1M");
      }
      p.record_size = static_cast<std::uint32_t>(rs);
    } else {
      return fail("'" + std::string(key) + "': unknown property (compression, recordsize)");
    }
    any = true;
  }
  if (!any) return fail("no property given (compression=..., recordsize=...)");
  return p;
}

std::string to_string(const file_policy& p) {
  std::string out;
  if (!p.compression.empty()) out = "compression=" + p.compression;
  if (p.record_size != 0) out += (out.empty() ? "" : " ") + std::string("recordsize=") + size_text(p.record_size);
  return out;
}

file_policy overlay(const file_policy& inner, const file_policy& outer) {
  file_policy p = inner;
  if (p.compression.empty()) p.compression = outer.compression;
  if (p.record_size == 0) p.record_size = outer.record_size;
  return p;
}

namespace {
file_policy from_attr(const char* buf, ssize_t n) {
  if (n <= 0) return {};
  auto p = parse_file_policy(std::string_view(buf, static_cast<std::size_t>(n)));
  return p ? *p : file_policy{};
}
}  // namespace

file_policy read_policy_attr(int fd) {
  char buf[256];
  const ssize_t n = ::fgetxattr(fd, policy_attr, buf, sizeof buf);
  if (n >= 0 || errno != EBADF) return from_attr(buf, n);
  // An O_PATH descriptor answers no fgetxattr: through /proc, which works for every kind.
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  return read_policy_attr(path.c_str());
}

void inherit_policy(int parent_fd, int child_fd) {
  const std::string parent = "/proc/self/fd/" + std::to_string(parent_fd);
  char buf[256];
  const ssize_t n = ::getxattr(parent.c_str(), policy_attr, buf, sizeof buf);
  if (n <= 0) return;
  const std::string child = "/proc/self/fd/" + std::to_string(child_fd);
  (void)::setxattr(child.c_str(), policy_attr, buf, static_cast<std::size_t>(n), 0);
}

file_policy read_policy_attr(const char* path) {
  char buf[256];
  return from_attr(buf, ::getxattr(path, policy_attr, buf, sizeof buf));
}

}  // namespace qzfs::fs
