// QAT through QATzip, loaded with dlopen so that neither the build nor the tests need it.
// One QATzip session per device session (QATzip sessions belong to a thread); gzip members
// (QZ_DEFLATE_GZIP, not the extended header) of one record each; no QATzip software backup:
// qzfs falls back to its own, faster, CPU codecs.
#include <dlfcn.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>

#include "qatzip_abi.h"
#include "qzfs/offload/device.h"

namespace qzfs::offload {
namespace {

struct qatzip_api {
  void* handle = nullptr;
  qzInit_fn init = nullptr;
  qzSetupSession_fn setup = nullptr;
  qzCompress_fn compress = nullptr;
  qzDecompress_fn decompress = nullptr;  // optional: without it, records are decoded on the CPU
  qzTeardownSession_fn teardown = nullptr;
  qzClose_fn close = nullptr;
  qzGetDefaults_fn defaults = nullptr;  // optional
};

std::string rc_name(int rc) {
  switch (rc) {
    case qatzip::params: return "QZ_PARAMS";
    case qatzip::fail: return "QZ_FAIL";
    case qatzip::buf_error: return "QZ_BUF_ERROR";
    case qatzip::data_error: return "QZ_DATA_ERROR";
    case qatzip::timeout: return "QZ_TIMEOUT";
    case qatzip::no_hw: return "QZ_NO_HW";
    case qatzip::no_mdrv: return "QZ_NO_MDRV";
    case qatzip::no_inst_attach: return "QZ_NO_INST_ATTACH";
    case qatzip::low_mem: return "QZ_LOW_MEM";
    case qatzip::nosw_no_hw: return "QZ_NOSW_NO_HW";
    case qatzip::nosw_no_mdrv: return "QZ_NOSW_NO_MDRV";
    case qatzip::nosw_no_inst_attach: return "QZ_NOSW_NO_INST_ATTACH";
    case qatzip::nosw_low_mem: return "QZ_NOSW_LOW_MEM";
    case qatzip::no_sw_avail: return "QZ_NO_SW_AVAIL";
    default: return "QATzip error " + std::to_string(rc);
  }
}

// The device, the driver or an instance is missing: nothing to retry.
bool is_permanent(int rc) {
  return rc == qatzip::no_hw || rc == qatzip::no_mdrv || rc == qatzip::nosw_no_hw || rc == qatzip::nosw_no_mdrv ||
         rc == qatzip::no_sw_avail;
}

class qat_session final : public device_session {
 public:
  qat_session(const qatzip_api& api, const qat_options& o) : api_(api), o_(o) {}
  ~qat_session() override {
    if (setup_) api_.teardown(&s_);
  }

  // Returns "" or why it failed; `permanent` when the device is not there at all.
  std::string start(bool& permanent) {
    int rc = api_.init(&s_, 0);
    if (rc != qatzip::ok && rc != qatzip::duplicate) {
      permanent = is_permanent(rc);
      return "qzInit: " + rc_name(rc) + (permanent ? " (no QAT device)" : "");
    }
    return setup(1, permanent);
  }

  codec::compress_result compress(int level, std::span<const std::byte> in, std::span<std::byte> out) noexcept override {
    if (level != level_) {
      bool permanent = false;
      if (!setup(level, permanent).empty()) return {codec::status::error, 0};
    }
    unsigned src_len = static_cast<unsigned>(in.size()), dst_len = static_cast<unsigned>(out.size());
    int rc = api_.compress(&s_, reinterpret_cast<const unsigned char*>(in.data()), &src_len,
                           reinterpret_cast<unsigned char*>(out.data()), &dst_len, 1);
    // An overflow is a normal "does not fit", and whatever the device wrote is ignored.
    if (rc == qatzip::buf_error) return {codec::status::does_not_fit, 0};
    if (rc != qatzip::ok || src_len != in.size() || dst_len > out.size()) return {codec::status::error, 0};
    return {codec::status::ok, dst_len};
  }

  codec::compress_result decompress(std::span<const std::byte> in, std::span<std::byte> out) noexcept override {
    if (api_.decompress == nullptr) return {codec::status::error, 0};
    unsigned src_len = static_cast<unsigned>(in.size()), dst_len = static_cast<unsigned>(out.size());
    int rc = api_.decompress(&s_, reinterpret_cast<const unsigned char*>(in.data()), &src_len,
                             reinterpret_cast<unsigned char*>(out.data()), &dst_len);
    // Not valid gzip, or more than the record: the member is the record's, so that is the
    // device's word against the payload's checksum; the CPU decides.
    if (rc == qatzip::data_error || rc == qatzip::buf_error) return {codec::status::corrupt, 0};
    if (rc != qatzip::ok || src_len != in.size() || dst_len > out.size()) return {codec::status::error, 0};
    return {codec::status::ok, dst_len};
  }

 private:
  std::string setup(int level, bool& permanent) {
    if (setup_) {
      api_.teardown(&s_);
      setup_ = false;
    }
    QzSessionParams_T p{};
    if (api_.defaults != nullptr) api_.defaults(&p);
    p.huffman_hdr = QZ_DYNAMIC_HDR;
    p.direction = QZ_DIR_BOTH;
    p.data_fmt = QZ_DEFLATE_GZIP;  // a plain RFC 1952 member, no QATzip extension header
    p.comp_lvl = static_cast<unsigned>(level);
    p.comp_algorithm = qatzip::deflate;
    p.sw_backup = 0;
    p.hw_buff_sz = o_.hw_buffer;
    if (p.strm_buff_sz == 0) p.strm_buff_sz = o_.hw_buffer;
    p.input_sz_thrshold = o_.min_input;
    int rc = api_.setup(&s_, &p);
    if (rc != qatzip::ok) {
      permanent = is_permanent(rc);
      return "qzSetupSession: " + rc_name(rc);
    }
    setup_ = true;
    level_ = level;
    return "";
  }

  const qatzip_api& api_;
  qat_options o_;
  QzSession_T s_{};
  bool setup_ = false;
  int level_ = 0;
};

class qat_device final : public device {
 public:
  explicit qat_device(qat_options o) : o_(std::move(o)) {
    if (o_.library.empty()) {
      // secure_getenv: a root daemon started from a set-user-ID or capability-raising context must
      // not load a library that the starting user's environment names.
      const char* env = ::secure_getenv("QZFS_QATZIP_LIB");
      o_.library = env != nullptr && *env != '\0' ? env : "libqatzip.so.3";
    }
    unsigned b = 4096;
    while (b < o_.hw_buffer && b < qatzip::hw_buff_max) b *= 2;  // QATzip wants a power of two
    o_.hw_buffer = b;
    api_.handle = dlopen(o_.library.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (api_.handle == nullptr) {
      const char* e = dlerror();
      why_ = "cannot load " + o_.library + ": " + (e != nullptr ? e : "unknown error");
      return;
    }
    auto sym = [&](const char* n) { return dlsym(api_.handle, n); };
    api_.init = reinterpret_cast<qzInit_fn>(sym("qzInit"));
    api_.setup = reinterpret_cast<qzSetupSession_fn>(sym("qzSetupSession"));
    api_.compress = reinterpret_cast<qzCompress_fn>(sym("qzCompress"));
    api_.decompress = reinterpret_cast<qzDecompress_fn>(sym("qzDecompress"));
    api_.teardown = reinterpret_cast<qzTeardownSession_fn>(sym("qzTeardownSession"));
    api_.close = reinterpret_cast<qzClose_fn>(sym("qzClose"));
    api_.defaults = reinterpret_cast<qzGetDefaults_fn>(sym("qzGetDefaults"));
    if (!api_.init || !api_.setup || !api_.compress || !api_.teardown || !api_.close)
      why_ = o_.library + " lacks the QATzip API (qzInit, qzSetupSession, qzCompress, qzTeardownSession, qzClose)";
  }
  ~qat_device() override {
    if (api_.handle == nullptr) return;
    if (why_.empty() && opened_) {
      QzSession_T s{};
      api_.close(&s);  // process-wide in QATzip: once, when the last session is gone
    }
    dlclose(api_.handle);
  }

  std::string_view name() const noexcept override { return "qat"; }
  codec::producer_id producer() const noexcept override { return codec::producer_id::qat; }
  bool decompresses() const noexcept override { return why_.empty() && api_.decompress != nullptr; }

  open_result open_session() noexcept override {
    if (!why_.empty()) return {nullptr, "unavailable: " + why_, true};
    try {
      auto s = std::make_unique<qat_session>(api_, o_);
      bool permanent = false;
      std::string err = s->start(permanent);
      if (!err.empty()) return {nullptr, (permanent ? "unavailable: " : "") + err, permanent};
      opened_ = true;
      return {std::move(s), "", false};
    } catch (...) {
      return {nullptr, "out of memory", false};
    }
  }

 private:
  qat_options o_;
  qatzip_api api_;
  std::string why_;
  std::atomic<bool> opened_{false};
};

}  // namespace

std::unique_ptr<device> make_qat_device(const qat_options& o) { return std::make_unique<qat_device>(o); }

}  // namespace qzfs::offload
