// store::file, the front: opens the backing file as a container or a plain file and forwards
// every call to that implementation (file_impl.h); turns a plain file truncated to zero into a
// container.

#include "qzfs/store/file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>

#include "container.h"
#include "plain_file.h"
#include "qzfs/store/budget.h"

namespace qzfs::store {

using format::container_header_size;
using format::slot_size;

// ---------------------------------------------------------------------------------------------
// file_core

file_core::file_core(std::unique_ptr<io> backing, const options& o, const file* owner)
    : io_(std::move(backing)), o_(o), compressor_(o.compressor), owner_(owner) {
  if (!o_.log) o_.log = [](std::string_view m) { std::fprintf(stderr, "qzfs: %.*s\n", int(m.size()), m.data()); };
}

void file_core::report(std::string_view what) const {
  std::string line = o_.name.empty() ? std::string("container") : o_.name;
  line += ": ";
  line += what;
  o_.log(line);
}

std::error_code file_core::note_error(std::error_code ec) {
  if (ec) {
    std::lock_guard lk(m_);
    last_error_ = ec;
    error_seq_.fetch_add(1, std::memory_order_release);
  }
  return ec;
}

std::error_code file_core::last_error() const {
  std::lock_guard lk(m_);
  return last_error_;
}

// ---------------------------------------------------------------------------------------------
// The front

struct file::impl {
  impl(std::unique_ptr<io> backing, const options& o, const file* owner) : core(std::move(backing), o, owner) {}

  [[nodiscard]] file_impl& now() const noexcept { return *active.load(std::memory_order_acquire); }
  void use(file_impl& i) noexcept { active.store(&i, std::memory_order_release); }
  /// A plain file truncated to zero: a container from its first write on.
  [[nodiscard]] std::error_code convert();

  file_core core;  // first: the implementations refer to it
  std::unique_ptr<plain_file> plain;  // kept once a container replaces it (a racing call may hold it)
  std::unique_ptr<container> cont;
  std::atomic<file_impl*> active{nullptr};
  std::mutex convert_m;  // lock order: before everything of the container
};

std::error_code file::impl::convert() {
  std::lock_guard lk(convert_m);
  if (now().is_container()) return now().truncate(0);  // another thread converted it meanwhile
  if (auto ec = core.backing().truncate(0)) return ec;
  if (auto ec = container::make_empty(core, cont)) return ec;
  use(*cont);
  return {};
}

file::file(std::unique_ptr<impl> p) noexcept : impl_(std::move(p)) {}

file::~file() {
  // No relief may reach a file being torn down (waits for one in progress). The container
  // commits as it goes (container::~container).
  if (impl_ && impl_->core.opts().budget != nullptr) impl_->core.opts().budget->withdraw(this);
}

std::error_code file::create(std::unique_ptr<io> backing, const options& o, std::unique_ptr<file>& out) {
  std::unique_ptr<file> f(new file(nullptr));
  f->impl_ = std::make_unique<impl>(std::move(backing), o, f.get());
  auto& s = *f->impl_;
  if (auto ec = container::create(s.core, s.cont)) return ec;
  s.use(*s.cont);
  if (o.budget != nullptr) o.budget->enroll(f.get());
  out = std::move(f);
  return {};
}

std::error_code file::open(std::unique_ptr<io> backing, const options& o, std::unique_ptr<file>& out) {
  std::uint64_t len = 0;
  if (auto ec = backing->size(len)) return ec;
  std::array<std::byte, container_header_size> hdr{};
  std::size_t got = 0;
  if (len > 0) {
    if (auto ec = backing->pread(std::span(hdr).first(std::min<std::uint64_t>(len, hdr.size())), 0, got)) return ec;
  }
  // Generation 1 is in slot 0, every later even one in slot 1: a container has the magic at 0
  // or 64. A file shorter than the magic that is a prefix of it is a torn first header write.
  static constexpr char magic_text[] = "QZCT";
  const bool magic = format::has_container_magic(std::span(hdr).first(got)) ||
                     (got > slot_size && format::has_container_magic(std::span(hdr).subspan(slot_size, got - slot_size)));
  const bool torn_start = (got > 0 && got < 4 && std::memcmp(hdr.data(), magic_text, got) == 0);
  // The marker tells a container whose first block is damaged (or zeroed) from a plain file: it
  // is read as the container it is (from the marker's slot), or fails with EIO, never served as
  // plain bytes.
  std::array<std::byte, slot_size> mk{};
  bool has_marker = false;
  (void)backing->get_marker(mk, has_marker);
  format::container_slot mslot;
  const bool marker_ok = has_marker && format::parse_slot(mk, mslot) == format::container_error::ok;
  std::unique_ptr<file> f(new file(nullptr));
  f->impl_ = std::make_unique<impl>(std::move(backing), o, f.get());
  auto& s = *f->impl_;
  if (magic || has_marker) {
    // An empty file with a marker: its header had not reached the disk yet (a power loss
    // before its first commit), no damage.
    if (!magic && len > 0) s.core.report("the container's header is damaged (its marker says what it was)");
    if (auto ec = container::open(s.core, std::span(hdr).first(got), len, marker_ok ? &mslot : nullptr, s.cont)) return ec;
    s.use(*s.cont);
  } else if (torn_start || (len == 0 && o.convert_plain)) {
    // Empty: a container from its first write on (its header is written with the first frame).
    if (auto ec = container::make_empty(s.core, s.cont)) return ec;
    s.use(*s.cont);
  } else {
    s.plain = std::make_unique<plain_file>(s.core);
    s.use(*s.plain);
  }
  if (o.budget != nullptr) o.budget->enroll(f.get());
  out = std::move(f);
  return {};
}

bool file::is_container() const noexcept { return impl_->now().is_container(); }
std::uint32_t file::record_size() const noexcept { return impl_->now().record_size(); }

std::error_code file::pread(std::span<std::byte> out, std::uint64_t off, std::size_t& got) {
  return impl_->now().pread(out, off, got);
}

std::error_code file::pwrite(std::span<const iovec> in, std::uint64_t off) { return impl_->now().pwrite(in, off); }

std::error_code file::truncate(std::uint64_t size) {
  auto& now = impl_->now();
  if (!now.is_container() && size == 0 && impl_->core.opts().convert_plain) return impl_->convert();
  return now.truncate(size);
}

std::error_code file::punch_hole(std::uint64_t off, std::uint64_t len) { return impl_->now().punch_hole(off, len); }

std::error_code file::zero_range(std::uint64_t off, std::uint64_t len, bool keep_size) {
  if (off > format::max_container_size || len > format::max_container_size - off) {
    return std::make_error_code(std::errc::file_too_large);
  }
  return impl_->now().zero_range(off, len, keep_size);
}

std::error_code file::allocate(std::uint64_t off, std::uint64_t len, bool keep_size) {
  return impl_->now().allocate(off, len, keep_size);
}

std::error_code file::seek(std::uint64_t off, int whence, std::uint64_t& out) { return impl_->now().seek(off, whence, out); }

std::error_code file::flush() { return impl_->now().flush(); }
std::error_code file::sync() { return impl_->now().sync(); }

namespace {

// One barrier of a group commit: every member with a part left is durable as far as written, or
// its part is failed and gone. `shared`: the fs_id of fs_fd's file system (0: none).
void group_barrier(std::span<file* const> files, std::vector<std::unique_ptr<group_part>>& parts, int fs_fd,
                   std::uint64_t shared, std::span<std::error_code> results) {
  bool any = false;
  for (std::size_t i = 0; i < files.size(); ++i) any = any || (parts[i] && files[i]->backing().fs_id() == shared);
  // syncfs reports a write-back failure of any file there since this descriptor's last call; on
  // one, each file's own fdatasync says whose it was.
  const bool shared_ok = shared != 0 && any && ::syncfs(fs_fd) == 0;
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (!parts[i] || (shared_ok && files[i]->backing().fs_id() == shared)) continue;
    if (auto ec = files[i]->backing().sync()) {
      results[i] = parts[i]->failed(ec);
      parts[i].reset();
    }
  }
}

}  // namespace

void file::sync_group(std::span<file* const> files, int fs_fd, std::span<std::error_code> results) {
  std::uint64_t shared = 0;
  struct stat st {};
  if (fs_fd >= 0 && ::fstat(fs_fd, &st) == 0) shared = static_cast<std::uint64_t>(st.st_dev) + 1;
  std::vector<std::unique_ptr<group_part>> parts(files.size());
  for (std::size_t i = 0; i < files.size(); ++i) results[i] = files[i]->impl_->now().begin_group(parts[i]);
  group_barrier(files, parts, fs_fd, shared, results);
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (!parts[i]) continue;
    if (auto ec = parts[i]->after_first()) {
      results[i] = ec;
      parts[i].reset();
    }
  }
  group_barrier(files, parts, fs_fd, shared, results);
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (!parts[i]) continue;
    const bool compact = parts[i]->after_second();
    parts[i].reset();  // the file's commit locks go
    if (compact) results[i] = files[i]->sync();
  }
}

std::uint64_t file::size() const noexcept { return impl_->now().size(); }

std::uint64_t file::physical_size() const noexcept {
  std::uint64_t s = 0;
  return impl_->core.backing().allocated(s) ? 0 : s;
}

file_stats file::stats() const { return impl_->now().stats(); }
std::uint64_t file::commits() const noexcept { return impl_->now().commits(); }
std::uint64_t file::log_syncs() const noexcept { return impl_->now().log_syncs(); }
void file::close_log() { impl_->now().close_log(); }
std::uint64_t file::log_replayed() const noexcept { return impl_->now().log_replayed(); }
std::error_code file::check(std::vector<damage>& found) { return impl_->now().check(found); }
std::error_code file::rewrite(std::uint64_t off, std::uint64_t len, rewrite_tally& tally) {
  return impl_->now().rewrite(off, len, tally);
}
void file::set_compressor(engine::engine& e) noexcept { impl_->core.set_compressor(&e); }
engine::engine* file::compressor() const noexcept { return impl_->core.compressor(); }
bool file::clean() const { return impl_->now().clean(); }

std::uint64_t file::error_seq() const noexcept { return impl_->core.error_seq(); }
std::error_code file::last_error() const { return impl_->core.last_error(); }

std::uint64_t file::charged() const noexcept { return impl_->now().charged(); }
void file::shed() { impl_->now().shed(); }

io& file::backing() noexcept { return impl_->core.backing(); }

}  // namespace qzfs::store
