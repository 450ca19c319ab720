// libFuzzer: any bytes as a backing file. Opening, reading, checking and then writing and
// committing must end in data or an error: never a crash, a hang, an overrun or an abort.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "mem_io.h"
#include "qzfs/store/file.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto disk = std::make_shared<qzfs::test::mem_disk>();
  disk->resize(size);
  if (size > 0) std::memcpy(disk->bytes.data(), data, size);
  qzfs::store::options o;
  o.record_size = 4096;
  o.log = [](std::string_view) {};
  std::unique_ptr<qzfs::store::file> f;
  if (qzfs::store::file::open(std::make_unique<qzfs::test::mem_io>(disk), o, f)) return 0;
  std::vector<std::byte> buf(1 << 16);
  std::size_t got = 0;
  for (std::uint64_t off = 0; off < std::min<std::uint64_t>(f->size(), 1 << 20); off += buf.size()) {
    (void)f->pread(buf, off, got);
  }
  std::vector<qzfs::store::damage> bad;
  (void)f->check(bad);
  (void)f->stats();
  std::uint64_t at = 0;
  (void)f->seek(0, SEEK_DATA, at);
  (void)f->seek(0, SEEK_HOLE, at);
  // Writing over what was parsed exercises the space map rebuilt from untrusted extents.
  std::vector<std::byte> w(5000, std::byte{'x'});
  (void)f->pwrite(w, 3000);
  (void)f->sync();
  return 0;
}
