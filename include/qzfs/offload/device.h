#pragma once
// offload/: an accelerator device, seen through sessions. A session compresses one whole record
// (contiguous input: QATzip takes no scatter-gather list, and the accelerator backend works on
// private copies anyway, see job.h) into one gzip member.
//
// Devices: QAT through QATzip loaded with dlopen (qat_device.cc), a software device (the codec
// layer dressed as an accelerator, for tests and rehearsals), and the fault-injecting device
// that wraps any other.
//
// Thread-safety: a device is shared; each session is used by one thread at a time, except
// abort(), which any thread may call to wake a call that is stuck.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "qzfs/codec/codec.h"

namespace qzfs::offload {

class device_session {
 public:
  virtual ~device_session() = default;
  /// ok + size, does_not_fit (the member would exceed out.size(); nothing in `out` is valid),
  /// or error (the device failed: the caller redoes the record elsewhere).
  [[nodiscard]] virtual codec::compress_result compress(int level, std::span<const std::byte> in,
                                                        std::span<std::byte> out) noexcept = 0;
  /// Wakes a compress() that hangs (teardown after a timeout). May do nothing.
  virtual void abort() noexcept {}
};

struct open_result {
  std::unique_ptr<device_session> session;  // null on failure
  std::string reason;                       // why it failed
  bool permanent = false;                   // it can never work here (no library, no device)
};

class device {
 public:
  virtual ~device() = default;
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;
  [[nodiscard]] virtual codec::engine producer() const noexcept = 0;
  [[nodiscard]] virtual open_result open_session() noexcept = 0;
};

/// Intel QAT through QATzip, loaded at run time with dlopen. `library` names the shared object
/// ("" = $QZFS_QATZIP_LIB, else libqatzip.so.3). When the library or the device is missing,
/// open_session() fails permanently with the reason ("unavailable: ..."). hw_buffer is the
/// QATzip buffer size: records up to it are compressed into exactly one gzip member.
struct qat_options {
  std::string library;
  unsigned hw_buffer = 128 * 1024;
  unsigned min_input = 4096;  // QATzip's own input_sz_thrshold
};
std::unique_ptr<device> make_qat_device(const qat_options& o);

/// The codec layer's gzip (ISA-L for levels 1-3, libdeflate above) behind the device interface.
std::unique_ptr<device> make_software_device(std::size_t max_record = codec::default_max_input);

/// Faults to inject, by rate (0..1, drawn per job from a seeded generator) or by pattern (every
/// n-th job). Parsed from "error=0.1,timeout=0.01,garbage=0.05,badcrc=0.05,slow=0.5,delay=2ms,
/// every=0,init=ok|fail|unavailable,seed=1"; "every=N" makes the listed kinds hit every N-th job
/// instead of at random.
struct fault_spec {
  double error = 0, timeout = 0, garbage = 0, badcrc = 0, slow = 0;
  std::chrono::microseconds delay{2000};  // how long a slow job takes extra
  unsigned every = 0;
  enum class init_mode : std::uint8_t { ok, fail, unavailable } init = init_mode::ok;
  std::uint64_t seed = 1;
};
/// Throws std::invalid_argument naming the bad key or value.
fault_spec parse_fault_spec(std::string_view text);

/// Wraps `inner`: jobs fail (error), hang until aborted (timeout), come back as garbage
/// (a member of the wrong bytes with their own right checksum), with a wrong CRC-32 footer
/// (badcrc, the failure OpenZFS's QAT path shipped), or late (slow). set() changes the faults
/// while it runs (a test heals the device and watches traffic come back).
class fault_device final : public device {
 public:
  fault_device(std::unique_ptr<device> inner, fault_spec spec);
  ~fault_device() override;
  std::string_view name() const noexcept override { return name_; }
  codec::engine producer() const noexcept override { return inner_->producer(); }
  open_result open_session() noexcept override;
  void set(const fault_spec& spec);
  [[nodiscard]] fault_spec get() const;

  struct shared;  // state the sessions share with the device

 private:
  std::unique_ptr<device> inner_;
  std::string name_;
  std::shared_ptr<shared> st_;
};

}  // namespace qzfs::offload
