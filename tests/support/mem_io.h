#pragma once
// A backing file in memory, for the store's tests: fast, inspectable, and able to die.
//
// mem_disk is the file's bytes plus which 4 KiB blocks are allocated (a write allocates, a
// punch frees whole blocks), so tests see what punching saves. mem_io is one open descriptor on
// it. A crash plan stops the "machine" at the k-th mutating call (write, sync, truncate,
// punch): that call fails (a write may first leave a prefix of its bytes: a torn write), and so
// does every call after it. The disk then holds what a crash at that instant leaves: with
// `lose_unsynced`, any subset of the writes since the last completed sync is lost (the page
// cache reaches the disk in no particular order), else writes reach it in order (a killed
// process). The test reopens it with a fresh mem_io.

#include <algorithm>
#include <array>
#include <optional>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <unistd.h>
#include <vector>

#include "qzfs/store/io.h"

namespace qzfs::test {

struct mem_disk {
  std::mutex m;
  std::vector<std::byte> bytes;
  std::vector<bool> blocks;  // allocated 4 KiB blocks
  std::uint64_t capacity = ~std::uint64_t{0};  // what statvfs would say the file system holds
  std::uint64_t bytes_read = 0, reads = 0, writes = 0, syncs = 0, punches = 0;
  // What the last completed sync made durable, and every change since, in order.
  struct change {
    enum { write, truncate, punch } kind;
    std::uint64_t off, len;
    std::vector<std::byte> data;
  };
  std::vector<std::byte> durable;
  std::optional<std::array<std::byte, 64>> marker;  // the extended attribute (metadata: not torn, not lost)
  bool markers = true;                               // false: a file system without extended attributes
  std::vector<change> since_sync;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> hints;  // will_need(off, len) calls, in order
  std::uint64_t vector_reads = 0;  // preadv_exact calls (each a list of buffers read at once)

  void resize(std::uint64_t n) {
    bytes.resize(n);
    blocks.resize((n + 4095) / 4096, false);
  }
  std::uint64_t allocated() const {
    return static_cast<std::uint64_t>(std::count(blocks.begin(), blocks.end(), true)) * 4096;
  }
};

struct crash_plan {
  std::uint64_t stop_at = 0;   // 1-based index of the mutating call that fails; 0: never
  double tear = 0.5;           // fraction of a failing write's bytes that still land
  bool lose_unsynced = false;  // at the crash, drop a random subset of the writes since the last sync
  std::uint64_t seed = 1;
  std::atomic<std::uint64_t> calls{0};  // mutating calls so far (workers write frames too)
  std::atomic<bool> dead{false};
};

class mem_io final : public store::io {
 public:
  explicit mem_io(std::shared_ptr<mem_disk> d, std::shared_ptr<crash_plan> plan = nullptr)
      : d_(std::move(d)), plan_(std::move(plan)) {}

  [[nodiscard]] const std::shared_ptr<mem_disk>& disk() const noexcept { return d_; }
  void will_need(std::uint64_t off, std::uint64_t len) noexcept override {
    std::lock_guard lk(d_->m);
    d_->hints.emplace_back(off, len);
  }
  std::error_code preadv_exact(std::span<const iovec> bufs, std::uint64_t off) noexcept override {
    {
      std::lock_guard lk(d_->m);
      ++d_->vector_reads;
    }
    return io::preadv_exact(bufs, off);
  }
  std::error_code pread(std::span<std::byte> out, std::uint64_t off, std::size_t& got) noexcept override {
    std::lock_guard lk(d_->m);
    if (plan_ && plan_->dead) return err(EIO);
    got = off >= d_->bytes.size() ? 0 : std::min<std::uint64_t>(out.size(), d_->bytes.size() - off);
    if (got) std::memcpy(out.data(), d_->bytes.data() + off, got);
    d_->bytes_read += got;
    ++d_->reads;
    return {};
  }
  std::error_code pwritev(std::span<const iovec> in, std::uint64_t off) noexcept override {
    std::lock_guard lk(d_->m);
    std::size_t total = 0;
    for (auto& v : in) total += v.iov_len;
    const auto s = step();
    if (s == state::dead) return err(EIO);
    const std::size_t land = s == state::stop ? static_cast<std::size_t>(static_cast<double>(total) * plan_->tear) : total;
    put(in, off, land);
    ++d_->writes;
    if (plan_) {
      mem_disk::change c{mem_disk::change::write, off, land, {}};
      c.data.assign(d_->bytes.begin() + static_cast<std::ptrdiff_t>(off),
                    d_->bytes.begin() + static_cast<std::ptrdiff_t>(off + land));
      d_->since_sync.push_back(std::move(c));
    }
    if (s == state::stop) crash();
    return s == state::stop ? err(EIO) : std::error_code{};
  }
  std::error_code sync() noexcept override {
    std::lock_guard lk(d_->m);
    if (auto s = step(); s != state::ok) {
      if (s == state::stop) crash();
      return err(EIO);
    }
    ++d_->syncs;
    if (plan_) {
      d_->durable = d_->bytes;
      d_->since_sync.clear();
    }
    return {};
  }
  std::error_code truncate(std::uint64_t size) noexcept override {
    std::lock_guard lk(d_->m);
    if (auto s = step(); s != state::ok) {
      if (s == state::stop) crash();
      return err(EIO);
    }
    d_->resize(size);
    if (plan_) d_->since_sync.push_back({mem_disk::change::truncate, size, 0, {}});
    return {};
  }
  std::error_code punch(std::uint64_t off, std::uint64_t len) noexcept override {
    std::lock_guard lk(d_->m);
    if (auto s = step(); s != state::ok) {
      if (s == state::stop) crash();
      return err(EIO);
    }
    if (plan_) d_->since_sync.push_back({mem_disk::change::punch, off, len, {}});
    ++d_->punches;
    const std::uint64_t end = std::min<std::uint64_t>(off + len, d_->bytes.size());
    if (off < end) std::memset(d_->bytes.data() + off, 0, end - off);
    for (std::uint64_t b = (off + 4095) / 4096; (b + 1) * 4096 <= end; ++b) d_->blocks[b] = false;
    return {};
  }
  std::error_code allocate(std::uint64_t off, std::uint64_t len, bool keep_size) noexcept override {
    std::lock_guard lk(d_->m);
    if (step() != state::ok) return err(EIO);
    if (!keep_size && off + len > d_->bytes.size()) d_->resize(off + len);
    return {};
  }
  std::error_code size(std::uint64_t& out) noexcept override {
    std::lock_guard lk(d_->m);
    out = d_->bytes.size();
    return {};
  }
  std::error_code get_marker(std::span<std::byte, 64> out, bool& found) noexcept override {
    std::lock_guard lk(d_->m);
    found = false;
    if (!d_->markers) return err(EOPNOTSUPP);
    if (d_->marker) std::memcpy(out.data(), d_->marker->data(), 64), found = true;
    return {};
  }
  std::error_code set_marker(std::span<const std::byte, 64> in) noexcept override {
    std::lock_guard lk(d_->m);
    if (!d_->markers) return err(EOPNOTSUPP);
    if (plan_ && plan_->dead) return err(EIO);
    d_->marker.emplace();
    std::memcpy(d_->marker->data(), in.data(), 64);
    return {};
  }
  std::error_code allocated(std::uint64_t& out) noexcept override {
    std::lock_guard lk(d_->m);
    out = d_->allocated();
    return {};
  }
  std::error_code available(std::uint64_t& out) noexcept override {
    std::lock_guard lk(d_->m);
    const std::uint64_t used = d_->allocated();
    out = d_->capacity > used ? d_->capacity - used : 0;
    return {};
  }
  std::error_code seek(std::uint64_t off, int whence, std::uint64_t& out) noexcept override {
    std::lock_guard lk(d_->m);
    if (off >= d_->bytes.size()) return err(ENXIO);
    out = whence == SEEK_HOLE ? d_->bytes.size() : off;
    return {};
  }

 private:
  static std::error_code err(int e) { return {e, std::generic_category()}; }
  // The crash itself: with lose_unsynced, the disk becomes the last synced image plus a random
  // subset (in order) of what came after it; the torn write, if any, is among the candidates.
  void crash() {
    if (!plan_->lose_unsynced) return;
    std::mt19937_64 rng(plan_->seed * 7919 + plan_->stop_at);
    std::vector<std::byte> img = d_->durable;
    for (const auto& c : d_->since_sync) {
      if (c.kind == mem_disk::change::truncate) {
        img.resize(c.off);
      } else if (c.kind == mem_disk::change::punch) {
        const std::uint64_t end = std::min<std::uint64_t>(c.off + c.len, img.size());
        if (c.off < end) std::memset(img.data() + c.off, 0, end - c.off);
      } else if (c.len > 0 && rng() % 2 == 0) {
        if (img.size() < c.off + c.len) img.resize(c.off + c.len);
        if (c.len) std::memcpy(img.data() + c.off, c.data.data(), c.len);
      }
    }
    d_->bytes = std::move(img);
    d_->blocks.assign((d_->bytes.size() + 4095) / 4096, true);
  }

  enum class state { ok, stop, dead };
  // Counts a mutating call: `stop` for the planned one, `dead` for every call after it.
  state step() {
    if (!plan_) return state::ok;
    if (plan_->dead) return state::dead;
    if (++plan_->calls == plan_->stop_at) {
      plan_->dead = true;
      return state::stop;
    }
    return state::ok;
  }
  void put(std::span<const iovec> in, std::uint64_t off, std::size_t land) {
    if (land > 0 && off + land > d_->bytes.size()) d_->resize(off + land);  // nothing landed: no growth
    for (std::uint64_t b = off / 4096; b * 4096 < off + land; ++b) d_->blocks[b] = true;
    for (auto& v : in) {
      if (land == 0) break;
      const std::size_t n = std::min(land, v.iov_len);
      std::memcpy(d_->bytes.data() + off, v.iov_base, n);
      off += v.iov_len;
      land -= n;
      if (land == 0) break;
    }
  }

  std::shared_ptr<mem_disk> d_;
  std::shared_ptr<crash_plan> plan_;
};

}  // namespace qzfs::test
