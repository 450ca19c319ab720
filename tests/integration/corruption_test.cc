// Damage injected into the backing files of a real mount:
// random single-bit flips and zeroed 4 KiB blocks in every region of a container (both slots,
// both record map copies, frame headers, payloads, anywhere), read back through a fresh mount.
// Every read must give the right bytes or EIO: 0 wrong bytes served. CI runs
// QZFS_CORRUPT_TRIALS (default 300, about 2 s) trials; scripts/corrupt-trials.sh runs 1000.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "mount_fixture.h"
#include "qzfs/format/container.h"
#include "qzfs/format/frame.h"
#include "test_data.h"

namespace {

using namespace qzfs::mount_rig;
namespace fs = std::filesystem;
namespace format = qzfs::format;

struct extent {
  std::uint64_t off, len;
};

// Where each region of a container lies, from its newest slot (format layer alone).
struct regions {
  std::vector<extent> slots, maps, headers, payloads;
};
regions regions_of(const std::vector<std::byte>& disk) {
  regions r;
  format::container_slot best;
  for (int i = 0; i < 2; ++i) {
    format::container_slot s;
    r.slots.push_back({static_cast<std::uint64_t>(i) * 64, 64});
    if (format::parse_slot(std::span(disk).subspan(i * 64, 64), s) == format::container_error::ok && s.generation > best.generation) best = s;
  }
  if (best.map_records == 0) return r;
  const std::uint64_t mlen = format::map_bytes(best);
  r.maps = {{best.map_offset[0], mlen}, {best.map_offset[1], mlen}};
  std::vector<format::indexed_entry> entries;
  EXPECT_TRUE(format::decode_map(std::span(disk).subspan(best.map_offset[0]), best, entries));
  for (const auto& x : entries) {
    if (!x.e.frame()) continue;
    r.headers.push_back({x.e.offset, format::frame_header_size});
    r.payloads.push_back({x.e.offset + format::frame_header_size, x.e.length - format::frame_header_size});
  }
  return r;
}

std::string marker_of(const fs::path& p) {
  std::string v(64, '\0');
  const ssize_t n = ::getxattr(p.c_str(), "user.qzfs.slot", v.data(), v.size());
  v.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  return v;
}

// Trials of 4 KiB records (read record by record) and of 32 KiB records (the kernel's read-ahead
// asks for many at once: the reads of several records, decoded in a batch), the latter read
// through a failing accelerator that decodes (the records it takes are handed to it).
class corruption_trials : public mount_test, public ::testing::WithParamInterface<std::pair<const char*, const char*>> {};

TEST_P(corruption_trials, damaged_containers_give_the_right_bytes_or_eio_never_wrong_ones) {
  const char* env = std::getenv("QZFS_CORRUPT_TRIALS");
  const int trials = env != nullptr ? std::atoi(env) : 300;
  const std::string write_opts = GetParam().first, read_opts = GetParam().second;
  // Originals of several shapes: one small record, a few records with a hole and a raw one, many
  // records (several map chunks are not needed: each region is hit by rotation), and raw records
  // only.
  struct original {
    std::string name;
    std::vector<std::byte> data;
  };
  std::vector<original> originals;
  {
    auto small = qzfs::test::make_data(qzfs::test::data_class::text, 1800, 3);
    auto mixed = qzfs::test::make_data(qzfs::test::data_class::text, 10 * 4096, 4);
    std::fill(mixed.begin() + 4 * 4096, mixed.begin() + 5 * 4096, std::byte{0});
    auto rnd = qzfs::test::make_data(qzfs::test::data_class::random, 4096, 5);
    std::copy(rnd.begin(), rnd.end(), mixed.begin() + 7 * 4096);
    auto big = qzfs::test::make_data(qzfs::test::data_class::text, 300 * 4096 + 77, 6);
    // Incompressible: every record raw, their frames back to back (read as runs, one preadv).
    auto raw = qzfs::test::make_data(qzfs::test::data_class::random, 40 * 4096 + 500, 7);
    originals = {{"small", small}, {"mixed", mixed}, {"big", big}, {"raw", raw}};
  }
  mount(write_opts);
  for (const auto& o : originals) put(mnt_ / o.name, o.data);
  unmount();
  std::vector<std::vector<std::byte>> pristine;
  std::vector<std::string> markers;
  for (const auto& o : originals) {
    pristine.push_back(qzfs::test::read_file(backing_ / o.name));
    markers.push_back(marker_of(backing_ / o.name));
    ASSERT_TRUE(format::has_container_magic(pristine.back())) << o.name;
  }

  // Each trial: one damaged copy of one original, as a file of its own (marker included).
  std::mt19937_64 rng(2026);
  struct trial {
    std::size_t orig;
    std::string what;
  };
  std::vector<trial> plan;
  const char* region_names[] = {"slot", "map", "frame header", "payload", "anywhere"};
  for (int t = 0; t < trials; ++t) {
    const std::size_t o = static_cast<std::size_t>(t) % originals.size();
    auto disk = pristine[o];
    const auto r = regions_of(disk);
    const int kind = (t / static_cast<int>(originals.size())) % 5;
    const std::vector<extent>* pool = kind == 0 ? &r.slots : kind == 1 ? &r.maps : kind == 2 ? &r.headers : kind == 3 ? &r.payloads : nullptr;
    std::uint64_t at;
    if (pool == nullptr || pool->empty()) {
      at = rng() % disk.size();
    } else {
      const auto& e = (*pool)[rng() % pool->size()];
      at = e.off + rng() % e.len;
    }
    const bool zero_block = rng() % 3 == 0;
    std::string what = std::string(region_names[kind]) + (zero_block ? ", zeroed block at " : ", bit flip at ") + std::to_string(at);
    if (zero_block) {
      const std::uint64_t b = at / 4096 * 4096;
      std::fill(disk.begin() + static_cast<std::ptrdiff_t>(b), disk.begin() + static_cast<std::ptrdiff_t>(std::min<std::uint64_t>(b + 4096, disk.size())), std::byte{0});
    } else {
      disk[at] ^= std::byte(1u << (rng() % 8));
    }
    const fs::path p = backing_ / ("t" + std::to_string(t));
    put(p, disk);
    if (!markers[o].empty()) {
      ASSERT_EQ(::setxattr(p.c_str(), "user.qzfs.slot", markers[o].data(), markers[o].size(), 0), 0);
    }
    plan.push_back({o, what});
  }

  mount(read_opts);
  std::size_t wrong = 0, eio = 0, right = 0;
  for (int t = 0; t < trials; ++t) {
    const auto& expect = originals[plan[static_cast<std::size_t>(t)].orig].data;
    const fs::path p = mnt_ / ("t" + std::to_string(t));
    const int fd = ::open(p.c_str(), O_RDONLY);
    if (fd < 0) {
      EXPECT_EQ(errno, EIO) << plan[static_cast<std::size_t>(t)].what;
      ++eio;
      continue;
    }
    // Record by record (4 KiB), as pread sees it; a record either reads right or fails.
    std::vector<std::byte> buf(4096);
    for (std::uint64_t off = 0; off < expect.size(); off += 4096) {
      const ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(off));
      if (n < 0) {
        EXPECT_EQ(errno, EIO) << plan[static_cast<std::size_t>(t)].what;
        ++eio;
        continue;
      }
      const std::size_t want = std::min<std::size_t>(4096, expect.size() - off);
      if (static_cast<std::size_t>(n) != want ||
          !std::equal(buf.begin(), buf.begin() + n, expect.begin() + static_cast<std::ptrdiff_t>(off))) {
        ADD_FAILURE() << "wrong bytes at " << off << " (" << n << " read) after " << plan[static_cast<std::size_t>(t)].what;
        ++wrong;
        continue;
      }
      ++right;
    }
    struct stat st {};
    ASSERT_EQ(::fstat(fd, &st), 0);
    if (static_cast<std::size_t>(st.st_size) > expect.size()) {
      ADD_FAILURE() << "size " << st.st_size << " after " << plan[static_cast<std::size_t>(t)].what;
      ++wrong;
    }
    ::close(fd);
  }
  EXPECT_EQ(wrong, 0u);
  EXPECT_GT(eio, 0u) << "no damage was found: the trials hit nothing";
  if (read_opts.find("accel=fault") != std::string::npos) {
    std::string out;
    ASSERT_EQ(run({QZFS_BINARY, "stats", "--json", mnt_.string()}, &out), 0) << out;
    EXPECT_GT(json_number(out, "decompressed", "accel"), 0u) << "no record went to the accelerator: " << out;
  }
  EXPECT_GT(right, 0u);
  std::printf("corruption trials (%s): %d, records read right %zu, EIO %zu, wrong %zu\n", write_opts.c_str(), trials, right,
              eio, wrong);
}

INSTANTIATE_TEST_SUITE_P(records, corruption_trials,
                         ::testing::Values(std::make_pair("commit=1,recordsize=4K", "commit=1"),
                                           std::make_pair("commit=1,recordsize=32K,accel=cpu",
                                                          "commit=1,accel=fault:error=0.05+garbage=0.05+badcrc=0.05+seed=9")),
                         [](const auto& info) { return info.index == 0 ? std::string("records_4k") : std::string("records_32k_accel"); });

}  // namespace
