#include "corpus.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <system_error>

namespace qzfs::cli {
namespace fs = std::filesystem;

namespace {

struct input_file {
  fs::path path;
  std::size_t size;
  std::uint32_t source = 0;
};

void collect(const fs::path& p, std::vector<input_file>& out) {
  std::error_code ec;
  auto st = fs::symlink_status(p, ec);
  if (ec) throw std::runtime_error(p.string() + ": " + ec.message());
  if (fs::is_regular_file(st)) {
    out.push_back({p, static_cast<std::size_t>(fs::file_size(p))});
    return;
  }
  if (!fs::is_directory(st)) throw std::runtime_error(p.string() + ": not a regular file or directory");
  std::vector<input_file> found;
  for (auto it = fs::recursive_directory_iterator(p, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file(ec) && !it->is_symlink(ec)) found.push_back({it->path(), static_cast<std::size_t>(it->file_size(ec))});
  }
  if (ec) throw std::runtime_error(p.string() + ": " + ec.message());
  // A stable order, so two runs over the same tree see the same records.
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.path < b.path; });
  out.insert(out.end(), found.begin(), found.end());
}

}  // namespace

corpus load_corpus(const std::vector<std::string>& paths, std::size_t record_size, std::size_t max_bytes) {
  std::vector<input_file> files;
  std::vector<std::size_t> want(paths.size(), 0);  // bytes to read from each PATH
  for (std::size_t i = 0; i < paths.size(); ++i) {
    const std::size_t before = files.size();
    collect(paths[i], files);
    for (std::size_t k = before; k < files.size(); ++k) {
      files[k].source = static_cast<std::uint32_t>(i);
      want[i] += files[k].size;
    }
    want[i] = std::min(want[i], max_bytes);
  }
  std::size_t total = 0;
  for (auto w : want) total += w;

  corpus c;
  c.sources = paths;
  c.data.reset(new std::byte[total == 0 ? 1 : total]);
  std::vector<std::size_t> got(paths.size(), 0);
  for (const auto& f : files) {
    const std::size_t left = want[f.source] - got[f.source];
    if (left == 0) continue;
    int fd = ::open(f.path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) continue;  // vanished or unreadable since the walk: skip it, it is a sample
    const std::size_t start = c.bytes;
    while (c.bytes - start < left) {
      ssize_t n = ::read(fd, c.data.get() + c.bytes, left - (c.bytes - start));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      c.bytes += static_cast<std::size_t>(n);
    }
    ::close(fd);
    if (c.bytes == start) continue;
    got[f.source] += c.bytes - start;
    ++c.files;
    for (std::size_t off = start; off < c.bytes; off += record_size)
      c.records.push_back({off, std::min(record_size, c.bytes - off), f.source, static_cast<std::uint32_t>(c.files - 1)});
  }
  return c;
}

}  // namespace qzfs::cli
