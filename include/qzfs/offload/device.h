#pragma once
// offload/: an accelerator device, seen through sessions. A session compresses one whole record
// (contiguous input: QATzip takes no scatter-gather list, and the accelerator backend works on
// private copies anyway, see job.h) into one gzip member, and (when the device decompresses)
// decodes one such member back into the record.
//
// Devices: QAT through QATzip loaded with dlopen (qat_device.cc), a software device (the codec
// layer dressed as an accelerator, for tests and rehearsals), a modelled QAT card (model_device.cc:
// a card's service time and parallel instances, real gzip output computed on the caller's thread),
// and the fault-injecting device that wraps any other.
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
  /// ok + size (bytes decoded), or error (the device failed: the caller decodes it elsewhere),
  /// or corrupt (the device says the member is not valid gzip). `in` is one gzip member. Only
  /// called when the device's decompresses() is true.
  [[nodiscard]] virtual codec::compress_result decompress(std::span<const std::byte> in, std::span<std::byte> out) noexcept {
    (void)in;
    (void)out;
    return {codec::status::error, 0};
  }
  /// Wakes a compress() or decompress() that hangs (teardown after a timeout). May do nothing.
  virtual void abort() noexcept {}
  /// How much longer the last compress() took than the device itself would have: non-zero only
  /// for a modelled card whose output this machine computed slower than the modelled service
  /// time (an overrun, on busy cores). The backend's routing and its device time leave it out:
  /// they judge the card, not the machine that stands in for it. 0 for real devices.
  [[nodiscard]] virtual std::chrono::nanoseconds emulation_excess() const noexcept { return {}; }
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
  [[nodiscard]] virtual codec::producer_id producer() const noexcept = 0;
  [[nodiscard]] virtual open_result open_session() noexcept = 0;
  /// Its sessions decode gzip members too (QATzip's qzDecompress; the software, modelled and
  /// fault devices).
  [[nodiscard]] virtual bool decompresses() const noexcept { return false; }
  /// CPU time the device's own threads have spent (CLOCK_THREAD_CPUTIME_ID): non-zero only for a
  /// modelled card, whose work runs on this machine's cores but stands for a card's. Reports
  /// subtract it from the process's CPU to get the host's.
  [[nodiscard]] virtual std::uint64_t cpu_ns() const noexcept { return 0; }
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
/// (a member of the wrong bytes with their own right checksum; a decompression: bytes that are
/// not the record's), with a wrong CRC-32 footer (badcrc, the failure OpenZFS's QAT path
/// shipped; a decompression: one bit of the record flipped), or late (slow). set() changes the faults
/// while it runs (a test heals the device and watches traffic come back).
class fault_device final : public device {
 public:
  fault_device(std::unique_ptr<device> inner, fault_spec spec);
  ~fault_device() override;
  std::string_view name() const noexcept override { return name_; }
  codec::producer_id producer() const noexcept override { return inner_->producer(); }
  open_result open_session() noexcept override;
  bool decompresses() const noexcept override { return inner_->decompresses(); }
  std::uint64_t cpu_ns() const noexcept override { return inner_->cpu_ns(); }
  void set(const fault_spec& spec);
  [[nodiscard]] fault_spec get() const;

  struct shared;  // state the sessions share with the device

 private:
  std::unique_ptr<device> inner_;
  std::string name_;
  std::shared_ptr<shared> st_;
};

/// A modelled QAT card (docs/QAT.md, "The modelled card"). `instances` work in parallel; a job
/// waits for a free one (FIFO), then takes latency + size / (gbps / instances): the card's
/// throughput `gbps` is reached when every instance is busy. The session's calling thread really
/// compresses the record (ISA-L for gzip levels 1-3, libdeflate above), as a card works while its
/// caller waits, so the output is a real member that verifies; the job completes when the
/// modelled time is up, or when the compression is done if this machine could not compute it
/// that fast (an overrun, reported by the session's emulation_excess()). The compression's CPU
/// time is counted apart (cpu_ns()), as a card's would be.
struct model_spec {
  double gbps = 24;                       // Intel QuickAssist Adapter 8950: 24 Gbps compression
  std::chrono::microseconds latency{40};  // per job: PCIe round trip, rings, completion polling
  unsigned instances = 4;
};
/// A model spec with the faults to inject in front of it ("model:gbps=24+error=0.1").
struct model_accel_spec {
  model_spec model;
  fault_spec faults;
  bool has_faults = false;  // any fault key was given: wrap the model in a fault_device
};
/// Parses "gbps=24+latency=40us+instances=4" and any key of parse_fault_spec, items joined by
/// '+' (',' also accepted outside mount options). latency takes us, ms or s (bare: us).
/// Throws std::invalid_argument naming the bad key or value.
model_accel_spec parse_model_spec(std::string_view text);

class model_device final : public device {
 public:
  explicit model_device(model_spec spec, std::size_t max_record = codec::default_max_input);
  ~model_device() override;  // sessions still at work answer error
  model_device(const model_device&) = delete;
  model_device& operator=(const model_device&) = delete;
  std::string_view name() const noexcept override { return "model"; }
  codec::producer_id producer() const noexcept override { return codec::producer_id::isal; }
  open_result open_session() noexcept override;
  bool decompresses() const noexcept override { return true; }
  std::uint64_t cpu_ns() const noexcept override;
  [[nodiscard]] const model_spec& spec() const noexcept { return spec_; }
  /// The modelled time of one job of `bytes` on one instance.
  [[nodiscard]] std::chrono::nanoseconds service_time(std::size_t bytes) const noexcept;
  /// Jobs done; of which overran the modelled time (this machine compressed them slower).
  [[nodiscard]] std::uint64_t jobs() const noexcept;
  [[nodiscard]] std::uint64_t overruns() const noexcept;
  /// The most jobs that were in service at once (never above instances).
  [[nodiscard]] unsigned peak_busy() const noexcept;

  struct shared;  // state the sessions and instances share

 private:
  model_spec spec_;
  std::shared_ptr<shared> st_;
};

}  // namespace qzfs::offload
