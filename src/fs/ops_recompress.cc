// fs/: recompression through the mount (qzfs recompress; docs/FS.md "Recompression"), by the
// attribute user.qzfs.recompress of a regular file:
//  - getxattr: where the file stands, as JSON: the policy its records are compressed by from now
//    on (its own attribute's, else the mount's, with its record size), its size, and how far a
//    recompression under that policy has come ("done", from the backing file's
//    user.qzfs.recompressed mark);
//  - setxattr "OFFSET LENGTH": the records of that range compressed again by that policy and
//    committed (store::file::rewrite), the mark moved on. The kernel has checked that the caller
//    may write the file (user.* attributes of a regular file); steps are the file owner's, root's
//    and the mount owner's (EACCES for other writers), one at a time per mount (EBUSY: the tool
//    waits and asks again), at most 64 MiB each, so a step holds one request thread for a
//    bounded time. A step that meets a damaged record answers EBADMSG and leaves the mark where
//    it was (the next run meets it again and says so); one that ran across a policy change
//    answers EAGAIN and leaves the mark too.
// The file's atime and mtime stay as they were: a recompression changes no byte of it.
#include <sys/stat.h>
#include <sys/xattr.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "committer.h"
#include "ops.h"
#include "qzfs/fs/policy.h"
#include "service.h"

namespace qzfs::fs::detail {
namespace {

constexpr std::uint64_t max_step = 64u << 20;

// The backing file's mark: the policy text it was recompressed under, and how far (whole: all).
struct mark {
  std::string policy;
  std::uint64_t at = 0;
  bool whole = false;
};

mark read_mark(int fd) {
  char buf[512];
  const ssize_t n = ::fgetxattr(fd, store::recompressed_xattr, buf, sizeof buf);
  if (n <= 0) return {};
  const std::string_view v(buf, static_cast<std::size_t>(n));
  mark m;
  if (const auto p = v.rfind(" @"); p != std::string_view::npos) {
    const char* first = v.data() + p + 2;
    if (std::from_chars(first, v.data() + v.size(), m.at).ec != std::errc{}) return {};
    m.policy = std::string(v.substr(0, p));
  } else {
    m.policy = std::string(v);
    m.whole = true;
  }
  return m;
}

// What a recompression of `f` aims at now: the engine of its policy and the text of the mark.
struct target {
  engine::engine* e;
  std::string text;
};

target target_of_file(fs_state& s, open_file& f) {
  const file_policy own = read_policy_attr(f.fd());
  auto& e = s.svc->engine_for(own.compression);
  return {&e, to_string(file_policy{s.svc->policy_name(own.compression), f.file->record_size()})};
}

std::uint64_t done_of(const mark& m, const std::string& target, std::uint64_t size) {
  if (m.policy != target) return 0;
  return m.whole ? size : std::min(m.at, size);
}

// The file the attribute is asked of, opened as a store file (EISDIR etc. for the rest).
int store_of(fuse_req_t req, fuse_ino_t ino, file_ptr& f) {
  auto& s = state(req);
  inode& in = s.get(ino);
  if (in.type != S_IFREG) return ENODATA;
  return open_store(s, in, f);
}

}  // namespace

bool recompress_attr(const char* name) { return std::strcmp(name, "user.qzfs.recompress") == 0; }

void follow_policy(fs_state& s, open_file& f) {
  const file_policy own = read_policy_attr(f.fd());
  auto& e = s.svc->engine_for(own.compression);
  if (f.file->compressor() != &e) f.file->set_compressor(e);
}

void policy_changed(fs_state& s, inode& in, const std::string& path) {
  auto f = in.type == S_IFREG ? s.files.find({in.dev, in.ino}) : file_ptr{};
  if (!f) return (void)::removexattr(path.c_str(), store::recompressed_xattr);
  std::lock_guard lk(f->policy_m);
  (void)::fremovexattr(f->fd(), store::recompressed_xattr);
  follow_policy(s, *f);
  ++f->policy_gen;
}

void get_recompress(fuse_req_t req, fuse_ino_t ino, size_t size) {
  guard(req, "getxattr", [&](bool& replied) {
    auto& s = state(req);
    replied = true;
    file_ptr f;
    if (int r = store_of(req, ino, f)) return (void)fuse_reply_err(req, r);
    const bool container = f->file->is_container();
    const std::uint64_t logical = f->file->size();
    nlohmann::json j{{"container", container}, {"size", logical}, {"read_only", f->read_only || s.o.read_only}};
    if (container) {
      const target t = target_of_file(s, *f);
      j["policy"] = t.text;
      j["done"] = done_of(read_mark(f->fd()), t.text, logical);
    }
    const std::string text = j.dump();
    if (size == 0) return (void)fuse_reply_xattr(req, text.size() + 64);  // it may grow by the next call
    if (size < text.size()) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, text.data(), text.size());
  });
}

void set_recompress(fuse_req_t req, fuse_ino_t ino, const char* value, size_t size) {
  guard(req, "setxattr", [&](bool& replied) {
    auto& s = state(req);
    replied = true;
    // "OFFSET LENGTH", decimal, nothing else.
    const std::string_view v(value, size);
    const char* end = v.data() + v.size();
    std::uint64_t off = 0, len = 0;
    const auto a = std::from_chars(v.data(), end, off);
    if (a.ec != std::errc{} || a.ptr == end || *a.ptr != ' ') return (void)fuse_reply_err(req, EINVAL);
    const auto b = std::from_chars(a.ptr + 1, end, len);
    if (b.ec != std::errc{} || b.ptr != end) return (void)fuse_reply_err(req, EINVAL);
    // A step holds this request's thread: 64 MiB at most (the tool asks for less).
    len = std::min<std::uint64_t>(len, max_step);
    file_ptr f;
    if (int r = store_of(req, ino, f)) return (void)fuse_reply_err(req, r);
    if (f->read_only || s.o.read_only) return (void)fuse_reply_err(req, EROFS);
    const uid_t uid = fuse_req_ctx(req)->uid;
    struct stat st {};
    if (::fstat(f->fd(), &st) != 0) return (void)fuse_reply_err(req, errno);
    // Spending the shared workers on a file's records again is its owner's choice (and root's,
    // and the mount owner's), not every writer's.
    if (uid != 0 && uid != s.owner && uid != st.st_uid) return (void)fuse_reply_err(req, EACCES);
    if (!f->file->is_container()) return (void)fuse_reply_err(req, f->file->size() == 0 ? 0 : ENOTSUP);
    // One step at a time per mount: others are told to come back (none waits on a thread).
    if (s.recompress_steps.fetch_add(1) != 0) {
      s.recompress_steps.fetch_sub(1);
      return (void)fuse_reply_err(req, EBUSY);
    }
    struct step_done {
      fs_state& s;
      ~step_done() { s.recompress_steps.fetch_sub(1); }
    } one{s};
    target t{nullptr, {}};
    std::uint64_t gen = 0, done = 0;
    {
      std::lock_guard lk(f->policy_m);
      t = target_of_file(s, *f);
      if (f->file->compressor() != t.e) f->file->set_compressor(*t.e);
      gen = f->policy_gen;
      done = done_of(read_mark(f->fd()), t.text, f->file->size());
    }
    // The times shown stay what they are: the commit's writes move the backing file's, and
    // after_commit puts these back (a write meanwhile sets its own, as always).
    {
      std::lock_guard lk(f->m);
      if (!f->atime) f->atime = st.st_atim;
      if (!f->mtime) f->mtime = st.st_mtim;
    }
    store::rewrite_tally tally;
    const auto before = f->file->commits();
    const std::error_code ec = f->file->rewrite(off, len, tally);
    if (f->file->commits() != before) after_commit(s, *f);
    {
      std::lock_guard lk(f->m);
      if (f->opens == 0) wake_committer(s);  // let go of it soon, as of a closed file
    }
    if (ec) return (void)fuse_reply_err(req, err_of(ec));
    // A damaged record stays as it is (never replaced by a guess): the caller hears of it, and
    // the mark does not pass it.
    if (tally.damaged != 0) return (void)fuse_reply_err(req, EBADMSG);
    std::lock_guard lk(f->policy_m);
    if (f->policy_gen != gen) return (void)fuse_reply_err(req, EAGAIN);  // records of two policies
    // The mark moves on only from where it stands (a step further on leaves a gap behind).
    const std::uint64_t now = f->file->size();
    const std::uint64_t stop = off >= now ? now : off + std::min(len, now - off);
    const std::uint64_t reached = off <= done ? std::max(done, stop) : done;
    const std::string text = reached >= now ? t.text : t.text + " @" + std::to_string(reached);
    (void)::fsetxattr(f->fd(), store::recompressed_xattr, text.data(), text.size(), 0);
    fuse_reply_err(req, 0);
  });
}

}  // namespace qzfs::fs::detail
