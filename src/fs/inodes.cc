// fs/: inodes and their descriptors, the registry of open store files, stat.
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <fcntl.h>
#include <sys/xattr.h>
#include <syslog.h>
#include <unistd.h>

#include <cstring>

#include "boundary.h"
#include "inodes.h"
#include "qzfs/fs/policy.h"
#include "service.h"

namespace qzfs::fs::detail {

owned_fd::~owned_fd() {
  if (fd >= 0) ::close(fd);
}

void fs_state::log(const std::string& m) {
  std::lock_guard lk(log_m);
  if (o.foreground) {
    std::fprintf(err, "qzfs: %s\n", m.c_str());
    std::fflush(err);
  } else {
    ::syslog(LOG_ERR, "%s", m.c_str());  // detached: stderr is /dev/null
  }
}

inode& fs_state::get(std::uint64_t ino) {
  if (ino == FUSE_ROOT_ID) return root;
  // Cheap enough for every request (one load), as passthrough_hp's check of its inode's fd.
  auto* in = reinterpret_cast<inode*>(ino);
  if (in == nullptr || ino % alignof(inode) != 0 || in->mark != inode::live_mark) {
    QZFS_INTERNAL_ERROR("unknown inode number " + std::to_string(ino));
  }
  return *in;
}

// ---------------------------------------------------------------------------------------------
// Descriptors

void fd_cache::touch_locked(inode& in) {
  if (in.in_lru) lru_.splice(lru_.begin(), lru_, in.lru);
}

void fd_cache::insert_locked(inode& in) {
  lru_.push_front(&in);
  in.lru = lru_.begin();
  in.in_lru = true;
  while (lru_.size() > capacity_) {
    inode* victim = lru_.back();
    lru_.pop_back();
    victim->in_lru = false;
    victim->fd.reset();  // closed when its last user lets go
  }
}

fd_ptr fd_cache::get(inode& in, int& err) {
  std::lock_guard lk(m_);
  if (in.fd) {
    touch_locked(in);
    return in.fd;
  }
  if (in.handle.empty()) {
    err = ESTALE;  // a pinned descriptor is never dropped while the inode lives
    return {};
  }
  const int fd = ::open_by_handle_at(mount_fd_, reinterpret_cast<file_handle*>(in.handle.data()), O_PATH | O_CLOEXEC);
  if (fd < 0) {
    err = errno;
    return {};
  }
  in.fd = std::make_shared<owned_fd>(fd);
  fd_ptr out = in.fd;
  insert_locked(in);
  return out;
}

void fd_cache::put(inode& in, fd_ptr fd) {
  std::lock_guard lk(m_);
  in.fd = std::move(fd);
  if (in.handle.empty()) return;  // pinned
  if (in.in_lru) {
    touch_locked(in);
  } else {
    insert_locked(in);
  }
}

void fd_cache::drop(inode& in) {
  std::lock_guard lk(m_);
  if (in.in_lru) lru_.erase(in.lru);
  in.in_lru = false;
  in.fd.reset();
}

std::size_t fd_cache::open_count() const {
  std::lock_guard lk(m_);
  return lru_.size();
}

fd_ptr path_fd(fs_state& s, inode& in, int& err) {
  if (&in == &s.root) return s.root_fd;
  return s.fds.get(in, err);
}

// ---------------------------------------------------------------------------------------------
// The registry of open store files

int open_file::fd() const {
  auto* io = dynamic_cast<store::fd_io*>(&file->backing());
  return io != nullptr ? io->fd() : -1;
}

file_ptr registry::find(const key& k) {
  std::lock_guard lk(m_);
  auto it = files_.find(k);
  return it == files_.end() ? file_ptr{} : it->second;
}

std::vector<file_ptr> registry::all() {
  std::lock_guard lk(m_);
  std::vector<file_ptr> v;
  v.reserve(files_.size());
  for (auto& [k, f] : files_) v.push_back(f);
  return v;
}

bool registry::let_go_if_idle(const file_ptr& f) {
  std::lock_guard lk(m_);
  auto it = files_.find(f->k);
  // Held by the map and by the caller alone: no handle, no operation in progress, and none can
  // start (every acquisition goes through this lock). The store file goes when the caller lets
  // go of `f`, outside the lock.
  if (it == files_.end() || it->second != f || f.use_count() != 2 || !f->file->clean()) return false;
  files_.erase(it);
  return true;
}

std::size_t registry::size() const {
  std::lock_guard lk(m_);
  return files_.size();
}

std::string proc_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

int open_store(fs_state& s, inode& in, file_ptr& out) {
  if (in.type != S_IFREG) return EINVAL;
  return s.files.get({in.dev, in.ino}, out, [&](file_ptr& made) {
    int err = 0;
    auto pfd = path_fd(s, in, err);
    if (!pfd) return err;
    const std::string path = proc_path(pfd->fd);
    bool read_only = s.o.read_only;
    int fd = ::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0 && (errno == EACCES || errno == EROFS || errno == EPERM)) {
      read_only = true;
      fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    }
    if (fd < 0) return errno;
    auto o = s.store_opts;
    // Its own policy (qzfs set, inherited when it was made): another engine, a record size for
    // a container still to be made.
    const auto pol = read_policy_attr(fd);
    if (!pol.empty()) {
      if (!pol.compression.empty()) o.compressor = &s.svc->engine_for(pol.compression);
      if (pol.record_size != 0) o.record_size = pol.record_size;
    }
    // The mark of a recompression (qzfs recompress) under another policy than the one this open
    // writes by: what it says of the records may stop being true, so it goes.
    if (!read_only) {
      char mark[512];
      if (const ssize_t m = ::fgetxattr(fd, store::recompressed_xattr, mark, sizeof mark); m > 0) {
        std::string_view text(mark, static_cast<std::size_t>(m));
        text = text.substr(0, text.rfind(" @"));
        const auto was = parse_file_policy(text);
        if (!was || was->compression != s.svc->policy_name(pol.compression)) (void)::fremovexattr(fd, store::recompressed_xattr);
      }
    }
    char target[4096];
    const ssize_t n = ::readlink(path.c_str(), target, sizeof target - 1);
    o.name = n > 0 ? std::string(target, static_cast<std::size_t>(n)) : path;
    std::unique_ptr<store::file> f;
    if (auto ec = store::file::open(std::make_unique<store::fd_io>(fd), o, f)) return ec.value();
    if (const auto n = f->log_replayed()) s.log_recovered.fetch_add(n, std::memory_order_relaxed);
    made = std::make_shared<open_file>();
    made->file = std::move(f);
    made->k = {in.dev, in.ino};
    made->name = o.name;
    made->read_only = read_only;
    if (!made->file->is_container()) (void)::fstat(made->fd(), &made->seen);
    // Its share of the counters as the scan saw it, or will (the committed state on disk).
    struct stat st {};
    if (::fstat(made->fd(), &st) == 0) made->seen_allocated = static_cast<std::int64_t>(st.st_blocks) * 512;
    made->seen_logical = static_cast<std::int64_t>(made->file->size());
    made->seen_container = made->file->is_container() && st.st_size > 0;  // an empty file counts as plain
    return 0;
  });
}

// ---------------------------------------------------------------------------------------------
// stat

namespace {
bool same_time(const timespec& a, const timespec& b) noexcept { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; }
}  // namespace

bool size_memo::find(const struct stat& now, std::uint64_t& logical, bool& container) {
  std::lock_guard lk(m_);
  auto it = map_.find({now.st_dev, now.st_ino});
  if (it == map_.end()) return false;
  const entry& e = it->second;
  if (e.backing != now.st_size || !same_time(e.mtime, now.st_mtim) || !same_time(e.ctime, now.st_ctim)) {
    map_.erase(it);
    return false;
  }
  logical = e.logical;
  container = e.container;
  return true;
}

void size_memo::put(const struct stat& backing, std::uint64_t logical, bool container) {
  std::lock_guard lk(m_);
  if (map_.size() >= most) map_.clear();
  map_[{backing.st_dev, backing.st_ino}] = entry{backing.st_size, backing.st_mtim, backing.st_ctim, logical, container};
}

int stat_of(fs_state& s, inode& in, struct stat& st, bool* plain) {
  if (plain != nullptr) *plain = false;
  if (in.type == S_IFREG) {
    if (auto f = s.files.find({in.dev, in.ino})) {
      // Open, or closed with changes not yet committed: its size and times are the store's and
      // the mount's, not yet the backing file's.
      if (::fstat(f->fd(), &st) != 0) return errno;
      st.st_size = static_cast<off_t>(f->file->size());
      st.st_blksize = preferred_io_size;
      if (plain != nullptr) *plain = !f->file->is_container();
      std::lock_guard lk(f->m);
      if (f->atime) st.st_atim = *f->atime;
      if (f->mtime) st.st_mtim = *f->mtime;
      if (f->ctime && (f->ctime->tv_sec > st.st_ctim.tv_sec ||
                       (f->ctime->tv_sec == st.st_ctim.tv_sec && f->ctime->tv_nsec > st.st_ctim.tv_nsec))) {
        st.st_ctim = *f->ctime;
      }
      return 0;
    }
  }
  int err = 0;
  auto pfd = path_fd(s, in, err);
  if (!pfd) return err;
  if (::fstatat(pfd->fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno;
  if (!S_ISREG(st.st_mode)) return 0;
  // The I/O size that pays here is the largest the kernel sends in one request: every write(2)
  // to a FUSE file costs the writer a round trip to the daemon, so cp, stdio and friends, which
  // size their buffers by st_blksize, should write 1 MiB at a time, not 4 KiB or 128 KiB.
  st.st_blksize = preferred_io_size;
  std::uint64_t logical = 0;
  bool container = false;
  if (s.sizes.find(st, logical, container)) {
    st.st_size = static_cast<off_t>(logical);
    if (plain != nullptr) *plain = !container;
    return 0;
  }
  const int fd = ::open(proc_path(pfd->fd).c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    // Unreadable to the daemon (a non-root daemon, a file it did not make): it cannot be one of
    // its containers, so its own size is its size. Any other failure (no descriptors left, no
    // memory) is an error, never a guess: the backing size of a container is its stored size.
    if (errno == EACCES || errno == EPERM) {
      if (plain != nullptr) *plain = true;
      return 0;
    }
    return errno;
  }
  const auto ec = store::peek_logical_size(fd, static_cast<std::uint64_t>(st.st_size), logical, &container);
  ::close(fd);
  if (!ec) s.sizes.put(st, logical, container);
  if (ec) {
    // A container whose header is damaged: its size is unknown. It is listed (so it can be
    // renamed or removed) with size 0; opening it fails with EIO and says why.
    s.log("stat: a container with no valid slot (damaged header)");
    logical = 0;
  }
  st.st_size = static_cast<off_t>(logical);
  if (plain != nullptr) *plain = !container;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Lookup and forget

namespace {

std::vector<unsigned char> handle_of(int fd) {
  std::vector<unsigned char> h(sizeof(file_handle) + MAX_HANDLE_SZ);
  auto* fh = reinterpret_cast<file_handle*>(h.data());
  fh->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (::name_to_handle_at(fd, "", fh, &mount_id, AT_EMPTY_PATH) != 0) return {};
  h.resize(sizeof(file_handle) + fh->handle_bytes);
  return h;
}

}  // namespace

inode* remember(fs_state& s, fd_ptr fd, const struct stat& st) {
  std::vector<unsigned char> h;
  if (s.handles && st.st_dev == s.root.dev) h = handle_of(fd->fd);
  std::lock_guard lk(s.table_m);
  auto& slot = s.table[{st.st_dev, st.st_ino}];
  if (!slot) {
    slot = std::make_unique<inode>();
    slot->dev = st.st_dev;
    slot->ino = st.st_ino;
    slot->type = st.st_mode & S_IFMT;
    slot->handle = std::move(h);
    s.fds.put(*slot, std::move(fd));
  } else if (!h.empty() && h != slot->handle) {
    // The same (st_dev, st_ino) for another object: the one the kernel still knows was removed
    // and its inode number reused. The new object is what the name means now.
    slot->handle = std::move(h);
    slot->type = st.st_mode & S_IFMT;
    s.fds.put(*slot, std::move(fd));
  }
  ++slot->nlookup;
  return slot.get();
}

int entry_of(fs_state& s, fd_ptr fd, fuse_entry_param* e) {
  std::memset(e, 0, sizeof *e);
  struct stat st {};
  if (::fstatat(fd->fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno;
  inode* in = remember(s, std::move(fd), st);
  e->ino = reinterpret_cast<fuse_ino_t>(in);
  bool plain = false;
  if (int r = stat_of(s, *in, e->attr, &plain)) {
    forget_one(s, e->ino, 1);
    return r;
  }
  e->generation = 0;
  // A plain file can be changed beside the mount (it is the backing directory's own): its size
  // is asked for each time. Everything else changes only through this mount.
  e->attr_timeout = plain ? 0.0 : 1.0;
  e->entry_timeout = 1.0;
  return 0;
}

int do_lookup(fs_state& s, fuse_ino_t parent, const char* name, fuse_entry_param* e) {
  int err = 0;
  auto pfd = path_fd(s, s.get(parent), err);
  if (!pfd) return err;
  const int fd = ::openat(pfd->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno;
  return entry_of(s, std::make_shared<owned_fd>(fd), e);
}

void forget_one(fs_state& s, std::uint64_t ino, std::uint64_t n) {
  if (ino == FUSE_ROOT_ID) return;
  std::unique_ptr<inode> gone;
  {
    std::lock_guard lk(s.table_m);
    inode& in = s.get(ino);
    if (n > in.nlookup) {
      QZFS_INTERNAL_ERROR("negative lookup count: inode " + std::to_string(ino) + " forgotten " + std::to_string(n) +
                          " times, known " + std::to_string(in.nlookup));
    }
    in.nlookup -= n;
    if (in.nlookup != 0) return;
    auto it = s.table.find({in.dev, in.ino});
    if (it == s.table.end() || it->second.get() != &in) return;
    gone = std::move(it->second);
    s.table.erase(it);
    s.fds.drop(*gone);
  }
  // A store file of this inode (open, or with changes to commit) lives on in the registry: a
  // later lookup finds the same one.
}

}  // namespace qzfs::fs::detail
