#include <mutex>

#include "qzfs/codec/workspace.h"
#include "qzfs/offload/device.h"

namespace qzfs::offload {
namespace {

class software_session final : public device_session {
 public:
  explicit software_session(std::size_t max_record) : ws_(max_record) {}
  codec::compress_result compress(int level, std::span<const std::byte> in, std::span<std::byte> out) noexcept override {
    // The spec of a level is looked up once per change of level, not per record.
    if (level != spec_.level) {
      const auto s = codec::spec::gzip(level);
      if (!codec::is_valid(s)) return {codec::status::error, 0};
      spec_ = s;
    }
    iovec v{const_cast<std::byte*>(in.data()), in.size()};
    try {
      return ws_.compress(spec_, {&v, 1}, out);
    } catch (...) {
      return {codec::status::error, 0};
    }
  }
  codec::compress_result decompress(std::span<const std::byte> in, std::span<std::byte> out) noexcept override {
    try {
      const auto st = ws_.decompress(codec::payload_format::gzip, in, out);
      return {st, st == codec::status::ok ? out.size() : 0};
    } catch (...) {
      return {codec::status::error, 0};
    }
  }

 private:
  codec::workspace ws_;
  codec::spec spec_{};  // level 0: none looked up yet
};

class software_device final : public device {
 public:
  explicit software_device(std::size_t max_record) : max_record_(max_record) {}
  std::string_view name() const noexcept override { return "software"; }
  codec::producer_id producer() const noexcept override { return codec::producer_id::isal; }
  bool decompresses() const noexcept override { return true; }
  open_result open_session() noexcept override {
    try {
      return {std::make_unique<software_session>(max_record_), "", false};
    } catch (...) {
      return {nullptr, "out of memory", false};
    }
  }

 private:
  std::size_t max_record_;
};

}  // namespace

std::unique_ptr<device> make_software_device(std::size_t max_record) {
  return std::make_unique<software_device>(max_record);
}

}  // namespace qzfs::offload
