#pragma once
// store/ (internal): reading a sync log region (docs/STORE.md "Sync log"; the format in
// format/container.h). container_log.cc writes and recovers it; peek_logical_size reads the
// size it leads to.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

namespace qzfs::store {

/// One entry of a batch: its bytes and where they go.
struct log_write {
  std::uint64_t offset = 0;
  std::span<const std::byte> data;
};
/// Called with each complete batch, in order, and the file size it leaves; false stops the walk.
using log_batch_fn = std::function<bool(std::span<const log_write>, std::uint64_t size)>;
struct log_scan {
  std::uint64_t end = 0, seq = 0, batches = 0;  // past the last complete batch; its next seq
  std::uint64_t size = 0;                       // the size the last complete batch left (0: none)
};
/// Walks the complete batches of `generation` from the start of `region`, stopping at the
/// first entry that does not verify, belongs to another generation or is out of sequence.
[[nodiscard]] log_scan scan_log(std::span<const std::byte> region, std::uint64_t generation, const log_batch_fn& on_batch);

}  // namespace qzfs::store
