// A stand-in for libqatzip: exports QATzip's documented C API (qzInit, qzSetupSession,
// qzCompress, qzDecompress, qzTeardownSession, qzClose, qzGetDefaults) with its return codes,
// on top of zlib, with switchable failures. Tests load it through the same dlopen path as the
// real library and steer it with qzfs_standin_control() (looked up with dlsym).
//
// Control string, comma-separated:
//   init=ok|nohw|fail      qzInit answers QZ_OK, QZ_NOSW_NO_HW, or QZ_FAIL
//   setup=ok|fail          qzSetupSession answers QZ_OK or QZ_FAIL
//   error_at=N             the N-th qzCompress (counting from 1 after this control) fails, QZ_FAIL
//   garbage=1              qzCompress answers QZ_OK with a member of other bytes (right CRC of those)
//   badcrc=1               qzCompress answers QZ_OK with a wrong CRC-32 in the footer
//   hang=1                 qzCompress blocks until the control changes
//   dirty_overflow=1       on overflow, write partial output into dest before QZ_BUF_ERROR
//   derror=1               qzDecompress answers QZ_FAIL
//   dgarbage=1             qzDecompress answers QZ_OK with bytes of the record changed
// An empty string resets to "everything works". qzfs_standin_calls() counts qzCompress calls,
// qzfs_standin_decompress_calls() qzDecompress calls (also since the library was loaded).
#include <zlib.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>

#include "offload/qatzip_abi.h"

namespace {
namespace qz = qzfs::offload::qatzip;

struct control {
  std::string init = "ok", setup = "ok";
  long error_at = 0;
  bool garbage = false, badcrc = false, hang = false, dirty_overflow = false;
  bool derror = false, dgarbage = false;
};

std::mutex m;
std::condition_variable changed;
control ctl;
long calls_since = 0;
std::atomic<long> calls{0}, decompress_calls{0};
std::atomic<int> live_sessions{0};

struct session_state {
  int level = 1;
  QzDataFormat_T fmt = QZ_DEFLATE_GZIP;
  unsigned hw_buff = 64 * 1024;
};

int deflate_gzip(const unsigned char* src, unsigned n, unsigned char* dst, unsigned* dst_len, int level) {
  z_stream z{};
  if (deflateInit2(&z, level, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) return qz::fail;
  z.next_in = const_cast<unsigned char*>(src);
  z.avail_in = n;
  z.next_out = dst;
  z.avail_out = *dst_len;
  int r = deflate(&z, Z_FINISH);
  unsigned produced = static_cast<unsigned>(z.total_out);
  deflateEnd(&z);
  if (r != Z_STREAM_END) return qz::buf_error;
  *dst_len = produced;
  return qz::ok;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void qzfs_standin_control(const char* spec) {
  std::lock_guard lk(m);
  ctl = control{};
  calls_since = 0;
  std::string s = spec != nullptr ? spec : "";
  std::size_t pos = 0;
  while (pos < s.size()) {
    auto comma = s.find(',', pos);
    std::string item = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? s.size() : comma + 1;
    auto eq = item.find('=');
    std::string k = item.substr(0, eq), v = eq == std::string::npos ? "1" : item.substr(eq + 1);
    if (k == "init") ctl.init = v;
    else if (k == "setup") ctl.setup = v;
    else if (k == "error_at") ctl.error_at = std::stol(v);
    else if (k == "garbage") ctl.garbage = v == "1";
    else if (k == "badcrc") ctl.badcrc = v == "1";
    else if (k == "hang") ctl.hang = v == "1";
    else if (k == "dirty_overflow") ctl.dirty_overflow = v == "1";
    else if (k == "derror") ctl.derror = v == "1";
    else if (k == "dgarbage") ctl.dgarbage = v == "1";
  }
  changed.notify_all();
}

__attribute__((visibility("default"))) long qzfs_standin_calls() { return calls.load(); }
__attribute__((visibility("default"))) long qzfs_standin_decompress_calls() { return decompress_calls.load(); }
__attribute__((visibility("default"))) int qzfs_standin_live_sessions() { return live_sessions.load(); }

__attribute__((visibility("default"))) int qzInit(QzSession_T* sess, unsigned char /*sw_backup*/) {
  if (sess == nullptr) return qz::params;
  std::lock_guard lk(m);
  if (ctl.init == "nohw") return qz::nosw_no_hw;
  if (ctl.init == "fail") return qz::fail;
  return qz::ok;
}

__attribute__((visibility("default"))) int qzGetDefaults(QzSessionParams_T* p) {
  if (p == nullptr) return qz::params;
  *p = QzSessionParams_T{QZ_DYNAMIC_HDR, QZ_DIR_BOTH, QZ_DEFLATE_GZIP_EXT, 1, qz::deflate, 3, 1, 64 * 1024, 64 * 1024, 1024, 4, 8};
  return qz::ok;
}

__attribute__((visibility("default"))) int qzSetupSession(QzSession_T* sess, QzSessionParams_T* p) {
  if (sess == nullptr) return qz::params;
  {
    std::lock_guard lk(m);
    if (ctl.setup == "fail") return qz::fail;
  }
  if (p != nullptr && (p->comp_lvl < 1 || p->comp_lvl > 9 || p->hw_buff_sz < 1024 || p->hw_buff_sz > qz::hw_buff_max ||
                       (p->hw_buff_sz & (p->hw_buff_sz - 1)) != 0 || p->comp_algorithm != qz::deflate))
    return qz::params;
  auto* st = static_cast<session_state*>(sess->internal);
  if (st == nullptr) {
    st = new session_state;
    sess->internal = st;
    live_sessions.fetch_add(1);
  }
  if (p != nullptr) {
    st->level = static_cast<int>(p->comp_lvl);
    st->fmt = p->data_fmt;
    st->hw_buff = p->hw_buff_sz;
  }
  sess->hw_session_stat = qz::ok;
  return qz::ok;
}

__attribute__((visibility("default"))) int qzCompress(QzSession_T* sess, const unsigned char* src, unsigned* src_len,
                                                      unsigned char* dest, unsigned* dest_len, unsigned /*last*/) {
  if (sess == nullptr || sess->internal == nullptr || src_len == nullptr || dest_len == nullptr) return qz::params;
  auto* st = static_cast<session_state*>(sess->internal);
  if (st->fmt != QZ_DEFLATE_GZIP || *src_len > st->hw_buff) return qz::params;  // one member per call only
  const long n = calls.fetch_add(1) + 1;
  control c;
  {
    std::unique_lock lk(m);
    const long k = ++calls_since;
    if (ctl.hang) changed.wait(lk, [] { return !ctl.hang; });
    c = ctl;
    if (c.error_at != 0 && k == c.error_at) return qz::fail;
  }
  (void)n;
  const unsigned cap = *dest_len;
  int rc;
  if (c.garbage && *src_len > 0) {
    std::string other(reinterpret_cast<const char*>(src), *src_len);
    other[other.size() / 2] ^= 0x20;
    rc = deflate_gzip(reinterpret_cast<const unsigned char*>(other.data()), *src_len, dest, dest_len, st->level);
  } else {
    rc = deflate_gzip(src, *src_len, dest, dest_len, st->level);
  }
  if (rc == qz::buf_error) {
    if (c.dirty_overflow) std::memset(dest, 0x1f, cap);
    *dest_len = 0;
    return qz::buf_error;
  }
  if (rc == qz::ok && c.badcrc && *dest_len >= 8) dest[*dest_len - 8] ^= 0x01;
  sess->total_in += *src_len;
  sess->total_out += *dest_len;
  return rc;
}

__attribute__((visibility("default"))) int qzDecompress(QzSession_T* sess, const unsigned char* src, unsigned* src_len,
                                                        unsigned char* dest, unsigned* dest_len) {
  if (sess == nullptr || sess->internal == nullptr || src_len == nullptr || dest_len == nullptr) return qz::params;
  decompress_calls.fetch_add(1);
  control c;
  {
    std::lock_guard lk(m);
    c = ctl;
  }
  if (c.derror) return qz::fail;
  z_stream z{};
  if (inflateInit2(&z, 31) != Z_OK) return qz::fail;
  z.next_in = const_cast<unsigned char*>(src);
  z.avail_in = *src_len;
  z.next_out = dest;
  z.avail_out = *dest_len;
  int r = inflate(&z, Z_FINISH);
  *src_len = static_cast<unsigned>(z.total_in);
  *dest_len = static_cast<unsigned>(z.total_out);
  inflateEnd(&z);
  if (r == Z_STREAM_END && c.dgarbage && *dest_len > 0) dest[*dest_len / 2] ^= 0x42;
  return r == Z_STREAM_END ? qz::ok : r == Z_BUF_ERROR ? qz::buf_error : qz::data_error;
}

__attribute__((visibility("default"))) int qzTeardownSession(QzSession_T* sess) {
  if (sess == nullptr) return qz::params;
  delete static_cast<session_state*>(sess->internal);
  if (sess->internal != nullptr) live_sessions.fetch_sub(1);
  sess->internal = nullptr;
  return qz::ok;
}

__attribute__((visibility("default"))) int qzClose(QzSession_T* sess) { return sess == nullptr ? qz::params : qz::ok; }

}  // extern "C"
