// The record store: containers through the real engine and codecs, on a memory disk that can
// crash and on real files. A model (a plain byte vector) is the reference for every byte read.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <thread>

#include "store_rig.h"
#include "qzfs/engine/engine.h"
#include "qzfs/format/container.h"
#include "qzfs/format/frame.h"
#include "qzfs/store/file.h"
#include "qzfs/store/io.h"
#include "test_data.h"

namespace qzfs::store {
namespace {

using namespace test_rig;

// Where the frame of the record holding `logical` lies in a container's bytes (found by its
// logical hash), parsed into `v`; npos when no frame holds it.
std::size_t find_frame(std::span<const std::byte> image, std::span<const std::byte> logical, format::frame_view& v) {
  const auto h = format::hash(logical);
  for (std::size_t at = format::container_header_size; at + 40 < image.size(); ++at) {
    if (format::parse_frame(image.subspan(at), v) == format::frame_error::ok && v.header.logical_hash == h) return at;
  }
  return std::string::npos;
}

// ---------------------------------------------------------------------------------------------
// Basics, per policy

class store_policy : public ::testing::TestWithParam<std::string> {};

TEST_P(store_policy, round_trip_through_reopen) {
  auto disk = std::make_shared<mem_disk>();
  const auto o = opts(GetParam(), 16 * KiB);
  std::vector<std::byte> model;
  {
    auto f = open_mem(disk, o);
    ASSERT_TRUE(f->is_container());
    std::mt19937_64 rng(7);
    for (int i = 0; i < 40; ++i) {
      const std::uint64_t off = rng() % (300 * KiB);
      auto d = some_data(rng, 1 + rng() % (40 * KiB));
      ASSERT_FALSE(f->pwrite(d, off));
      if (model.size() < off + d.size()) model.resize(off + d.size());
      std::copy(d.begin(), d.end(), model.begin() + static_cast<std::ptrdiff_t>(off));
    }
    EXPECT_EQ(read_all(*f), model);
    ASSERT_FALSE(f->sync());
    EXPECT_EQ(read_all(*f), model);
  }
  auto f = open_mem(disk, o);
  ASSERT_TRUE(f->is_container());
  EXPECT_EQ(f->size(), model.size());
  EXPECT_EQ(read_all(*f), model);
  std::vector<damage> bad;
  ASSERT_FALSE(f->check(bad));
  EXPECT_TRUE(bad.empty());
  const auto st = f->stats();
  EXPECT_EQ(st.records, (model.size() + 16 * KiB - 1) / (16 * KiB));
  EXPECT_GT(st.holes + st.raw, 0u);  // zeros and random data were written
  std::uint64_t compressed = 0;
  for (auto n : st.per_format) compressed += n;
  if (GetParam() == "off") {
    EXPECT_EQ(compressed, 0u);
  } else {
    EXPECT_GT(compressed, 0u);
  }
}

TEST_P(store_policy, gzip_records_are_standard_members) {
  if (GetParam().rfind("gzip", 0) != 0) GTEST_SKIP() << "gzip policies only";
  auto disk = std::make_shared<mem_disk>();
  auto f = open_mem(disk, opts(GetParam(), 64 * KiB));
  auto text = test::make_data(test::data_class::text, 64 * KiB);
  ASSERT_FALSE(f->pwrite(text, 0));
  ASSERT_FALSE(f->sync());
  // Find the frame after the header and hand its payload to gzip(1).
  format::frame_view v;
  bool found = false;
  for (std::size_t at = format::container_header_size; at + 40 < disk->bytes.size() && !found; ++at) {
    found = format::parse_frame(std::span(disk->bytes).subspan(at), v) == format::frame_error::ok;
  }
  ASSERT_TRUE(found);
  ASSERT_EQ(v.header.format, codec::payload_format::gzip);
  const auto dir = std::filesystem::temp_directory_path() / ("qzfs-gz-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  {
    FILE* out = std::fopen((dir / "r.gz").c_str(), "wb");
    std::fwrite(v.payload.data(), 1, v.payload.size(), out);
    std::fclose(out);
  }
  ASSERT_EQ(std::system(("gzip -dc " + (dir / "r.gz").string() + " > " + (dir / "r").string()).c_str()), 0);
  EXPECT_EQ(test::read_file(dir / "r"), text);
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(policies, store_policy, ::testing::Values("off", "lz4", "gzip-1", "gzip-6", "zstd-3", "auto"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& c : n) c = c == '-' ? '_' : c;
                           return n;
                         });

// ---------------------------------------------------------------------------------------------
// Layout and the bugs other compressing file systems shipped

TEST(store, small_file_costs_a_small_header_not_a_record) {
  auto disk = std::make_shared<mem_disk>();
  auto f = open_mem(disk, opts("gzip-1", 128 * KiB));
  auto d = test::make_data(test::data_class::text, 300);
  ASSERT_FALSE(f->pwrite(d, 0));
  ASSERT_FALSE(f->sync());
  // header 128 + one frame (40 + payload) + two map copies of one entry (2 x 40).
  EXPECT_LE(disk->bytes.size(), 300u + 128 + 40 + 80) << "container of a 300-byte file";
  EXPECT_EQ(read_all(*f), d);
}

TEST(store, empty_file_writes_nothing_until_it_has_data) {
  auto disk = std::make_shared<mem_disk>();
  {
    auto f = open_mem(disk, opts("gzip-1", 128 * KiB));
    EXPECT_TRUE(f->is_container());
    ASSERT_FALSE(f->sync());
  }
  EXPECT_EQ(disk->bytes.size(), 0u);
}

TEST(store, sequential_page_writes_merge_in_memory) {
  auto disk = std::make_shared<mem_disk>();
  auto f = open_mem(disk, opts("gzip-1", 128 * KiB));
  auto d = test::make_data(test::data_class::text, 4 << 20);
  for (std::size_t off = 0; off < d.size(); off += 4096) {
    ASSERT_FALSE(f->pwrite(std::span(d).subspan(off, 4096), off));
  }
  ASSERT_FALSE(f->sync());
  const auto st = f->stats();
  EXPECT_EQ(st.rmw_reads, 0u) << "a page-sized write re-read its record";
  EXPECT_EQ(st.per_format[1], 32u);
  EXPECT_LE(st.flushes, 32u / 4 + 1) << "records go to the engine in batches";
  // 32 frames, the header, two map copies, the slot and its copy.
  EXPECT_LE(disk->writes, 32u + 5) << "a record was written more than once";
  EXPECT_EQ(read_all(*f), d);
}

// Recompression (file::rewrite): every record with data is compressed again by the engine the
// file has now, while writers keep writing; what they wrote is never undone by the rewrite, the
// bytes read the same after a reopen, holes stay holes, and a damaged record is left as it is and
// counted (never replaced).
TEST(store, rewrite_compresses_again_under_a_new_engine_beside_writers) {
  auto disk = std::make_shared<mem_disk>();
  const auto o = opts("gzip-1", 64 * KiB);
  auto f = open_mem(disk, o);
  auto d = test::make_data(test::data_class::text, 8 << 20);
  std::fill(d.begin() + (1 << 20), d.begin() + (2 << 20), std::byte{0});  // 16 records of holes
  ASSERT_FALSE(f->pwrite(d, 0));
  ASSERT_FALSE(f->sync());
  ASSERT_EQ(f->stats().per_format[1], 112u);
  f->set_compressor(the_rig().get("zstd-3"));
  std::mutex m;  // orders the writer's bytes in `d` with its writes
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::mt19937_64 rng(7);
    while (!stop.load()) {
      const std::size_t off = rng() % (d.size() - 5000), n = 1 + rng() % 5000;
      const auto bytes = test::make_data(test::data_class::text, n, rng());
      std::lock_guard lk(m);
      ASSERT_FALSE(f->pwrite(bytes, off));
      std::copy(bytes.begin(), bytes.end(), d.begin() + static_cast<std::ptrdiff_t>(off));
    }
  });
  store::rewrite_tally tally;
  for (std::uint64_t off = 0; off < d.size(); off += 1 << 20) ASSERT_FALSE(f->rewrite(off, 1 << 20, tally));
  stop = true;
  writer.join();
  ASSERT_FALSE(f->sync());
  EXPECT_EQ(tally.damaged, 0u);
  EXPECT_GE(tally.records + tally.buffered + tally.holes, 128u);
  EXPECT_EQ(read_all(*f), d) << "a write racing with the rewrite was lost";
  const auto st = f->stats();
  EXPECT_EQ(st.per_format[1], 0u) << "gzip records left after the rewrite";
  EXPECT_GE(st.per_format[2], 112u);
  f.reset();
  f = open_mem(disk, o);
  EXPECT_EQ(read_all(*f), d);

  // A damaged record: counted, left as it is (still EIO to read), the others rewritten.
  f.reset();
  format::frame_view v;
  const std::size_t at = find_frame(disk->bytes, std::span(d).subspan(3 * 64 * KiB, 64 * KiB), v);
  ASSERT_NE(at, std::string::npos) << "no frame of record 3";
  disk->bytes[at + 40 + v.payload.size() / 2] ^= std::byte{0xff};
  f = open_mem(disk, o);
  f->set_compressor(the_rig().get("lz4"));
  store::rewrite_tally t2;
  EXPECT_FALSE(f->rewrite(0, d.size(), t2));
  EXPECT_EQ(t2.damaged, 1u);
  ASSERT_FALSE(f->sync());
  std::vector<std::byte> rec(64 * KiB);
  std::size_t got = 0;
  EXPECT_EQ(f->pread(rec, 3 * 64 * KiB, got), std::errc::io_error) << "the damaged record stays damaged";
  EXPECT_GE(f->stats().per_format[3], 100u);
  EXPECT_FALSE(f->pread(rec, 10 * 64 * KiB, got));
  EXPECT_TRUE(std::equal(rec.begin(), rec.end(), d.begin() + 10 * 64 * KiB));
}

// A raw record is read straight into the reader's buffer beside its header (store/
// container_read.cc): damage in its header or its payload is still EIO there, and the record's
// neighbours still read right.
TEST(store, raw_records_read_in_place_are_checked_as_frames_are) {
  for (const std::size_t flip_at : {std::size_t{3}, std::size_t{20}, std::size_t{40 + 5000}}) {
    auto disk = std::make_shared<mem_disk>();
    const auto o = opts("off", 64 * KiB);
    auto f = open_mem(disk, o);
    const auto d = test::make_data(test::data_class::random, 4 * 64 * KiB, 11);
    ASSERT_FALSE(f->pwrite(d, 0));
    ASSERT_FALSE(f->sync());
    EXPECT_EQ(read_all(*f), d);
    f.reset();
    // The frame of record 2, found by its logical hash (raw: the payload's too).
    format::frame_view v;
    const std::size_t at = find_frame(disk->bytes, std::span(d).subspan(2 * 64 * KiB, 64 * KiB), v);
    ASSERT_NE(at, std::string::npos);
    ASSERT_EQ(v.header.format, codec::payload_format::none);
    disk->bytes[at + flip_at] ^= std::byte{0x10};
    f = open_mem(disk, o);
    std::vector<std::byte> rec(64 * KiB);
    std::size_t got = 0;
    EXPECT_EQ(f->pread(rec, 2 * 64 * KiB, got), std::errc::io_error) << "flip at " << flip_at;
    EXPECT_EQ(f->pread(std::span(rec).first(100), 2 * 64 * KiB + 10, got), std::errc::io_error) << "a part of it too";
    for (std::size_t r : {0, 1, 3}) {
      ASSERT_FALSE(f->pread(rec, r * 64 * KiB, got));
      EXPECT_TRUE(std::equal(rec.begin(), rec.end(), d.begin() + static_cast<std::ptrdiff_t>(r * 64 * KiB))) << r;
    }
  }
}

// Whole raw records whose frames lie back to back are read with one preadv (store/
// container_read.cc, read_raw_run): a damaged record in the middle of such a run is EIO for a
// read that covers it and is reported once, the records before and after it read right, and a
// record written since (buffered) inside a run reads as written.
TEST(store, runs_of_raw_records_are_read_together_and_checked_one_by_one) {
  for (const bool real : {false, true}) {
    auto disk = std::make_shared<mem_disk>();
    log_sink sink;
    const auto o = opts("off", 16 * KiB, &sink);
    const auto path = std::filesystem::temp_directory_path() / ("qzfs-runs-" + std::to_string(::getpid()));
    auto open = [&](bool create) {
      std::unique_ptr<file> f;
      if (!real) return open_mem(disk, o);
      const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | (create ? O_TRUNC : 0), 0600);
      EXPECT_GE(fd, 0);
      EXPECT_FALSE(create ? file::create(std::make_unique<fd_io>(fd), o, f) : file::open(std::make_unique<fd_io>(fd), o, f));
      return f;
    };
    auto f = open(true);
    auto d = test::make_data(test::data_class::random, 40 * 16 * KiB, 31);
    ASSERT_FALSE(f->pwrite(d, 0));  // one write: the frames lie in order, back to back
    ASSERT_FALSE(f->sync());
    f.reset();
    std::vector<std::byte> image = real ? test::read_file(path.string()) : disk->bytes;
    format::frame_view v;
    const std::size_t at = find_frame(image, std::span(d).subspan(21 * 16 * KiB, 16 * KiB), v);
    ASSERT_NE(at, std::string::npos);
    if (real) {
      const int fd = ::open(path.c_str(), O_RDWR);
      std::byte b{};
      ASSERT_EQ(::pread(fd, &b, 1, static_cast<off_t>(at + 40 + 700)), 1);
      b ^= std::byte{1};
      ASSERT_EQ(::pwrite(fd, &b, 1, static_cast<off_t>(at + 40 + 700)), 1);
      ::close(fd);
    } else {
      disk->bytes[at + 40 + 700] ^= std::byte{1};
    }
    f = open(false);
    const std::size_t lines_before = sink.lines->size();
    std::vector<std::byte> buf(40 * 16 * KiB);
    std::size_t got = 0;
    if (!real) {
      // Undamaged, records 0..20 are one run (one preadv), not 21 reads.
      const std::uint64_t before = disk->vector_reads;
      ASSERT_FALSE(f->pread(std::span(buf).first(21 * 16 * KiB), 0, got));
      EXPECT_EQ(disk->vector_reads - before, 1u);
    }
    EXPECT_EQ(f->pread(buf, 0, got), std::errc::io_error) << real;
    EXPECT_EQ(sink.lines->size(), lines_before + 1) << "the damaged record is reported once";
    EXPECT_EQ(f->stats().damaged_reads, 1u);
    for (auto [from, to] : {std::pair{0, 21}, std::pair{22, 40}, std::pair{3, 20}}) {
      const auto part = std::span(buf).first(static_cast<std::size_t>(to - from) * 16 * KiB);
      ASSERT_FALSE(f->pread(part, static_cast<std::uint64_t>(from) * 16 * KiB, got)) << from;
      EXPECT_TRUE(std::equal(part.begin(), part.end(), d.begin() + from * 16 * KiB)) << real << " " << from;
    }
    // Record 30 buffered (a new version, not written back) inside a run.
    const auto fresh = test::make_data(test::data_class::random, 16 * KiB, 99);
    ASSERT_FALSE(f->pwrite(fresh, 30 * 16 * KiB));
    std::copy(fresh.begin(), fresh.end(), d.begin() + 30 * 16 * KiB);
    const auto part = std::span(buf).first(18 * 16 * KiB);
    ASSERT_FALSE(f->pread(part, 22 * 16 * KiB, got));
    EXPECT_TRUE(std::equal(part.begin(), part.end(), d.begin() + 22 * 16 * KiB)) << real;
    if (real) {
      // The backing file cut inside record 35's frame (from outside): a run over it fails as a
      // read, the records are then read one by one, and the cut one is EIO; before it, all read.
      const std::size_t at35 = find_frame(image, std::span(d).subspan(35 * 16 * KiB, 16 * KiB), v);
      ASSERT_NE(at35, std::string::npos);
      ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(at35 + 40 + 5000)), 0);
      EXPECT_EQ(f->pread(std::span(buf).first(8 * 16 * KiB), 32 * 16 * KiB, got), std::errc::io_error);
      const auto before = std::span(buf).first(8 * 16 * KiB);
      ASSERT_FALSE(f->pread(before, 22 * 16 * KiB, got));
      EXPECT_TRUE(std::equal(before.begin(), before.end(), d.begin() + 22 * 16 * KiB));
    }
    f.reset();
    if (real) std::filesystem::remove(path);
  }
}

// A read of several whole records decodes them in parallel (the reading thread the first, CPU
// workers the rest, straight into the caller's buffer), each checked against its checksum: a
// damaged record in the middle of a read makes the read EIO and is reported alone; reads that
// mix a partial record, buffered records, holes and frames give exactly the file's bytes.
TEST(store, records_of_one_read_are_decoded_in_parallel_and_each_is_checked) {
  // Records are handed out when an accelerator decodes (a software device here), to it and to
  // the CPU workers as the scheduler routes them.
  offload::cpu_backend cpu({.workers = 2});
  offload::accel_backend accel(offload::make_software_device(), {.sessions = 2, .timeout = std::chrono::seconds(5)});
  offload::scheduler sched(cpu, &accel, {.accel_bias = 4.0});
  engine::engine eng(sched, {.pol = *engine::parse_policy("gzip-6")});
  ASSERT_TRUE(eng.decodes_offloaded(64 * KiB));
  auto disk = std::make_shared<mem_disk>();
  log_sink sink;
  auto o = opts("gzip-6", 64 * KiB, &sink);
  o.compressor = &eng;
  auto f = open_mem(disk, o);
  std::vector<std::byte> d;
  for (std::uint64_t r = 0; r < 40; ++r) {
    auto rec = test::make_data(r % 3 == 2 ? test::data_class::binary : test::data_class::text, 64 * KiB, r + 1);
    rec[r] = std::byte(r);
    if (r == 12 || r == 13) std::fill(rec.begin(), rec.end(), std::byte{0});  // holes
    d.insert(d.end(), rec.begin(), rec.end());
  }
  ASSERT_FALSE(f->pwrite(d, 0));
  ASSERT_FALSE(f->sync());
  f.reset();
  f = open_mem(disk, o);
  EXPECT_EQ(read_all(*f), d);
  EXPECT_GT(cpu.stats().decompressed + accel.stats().decompressed, 0u) << "no record of the read went to a backend";
  // Buffered records and a partial head and tail in one read.
  auto fresh = test::make_data(test::data_class::text, 64 * KiB, 99);
  ASSERT_FALSE(f->pwrite(fresh, 20 * 64 * KiB));
  std::copy(fresh.begin(), fresh.end(), d.begin() + 20 * 64 * KiB);
  std::vector<std::byte> part(25 * 64 * KiB + 777);
  std::size_t got = 0;
  ASSERT_FALSE(f->pread(part, 3 * 64 * KiB + 1000, got));
  EXPECT_EQ(got, part.size());
  EXPECT_TRUE(std::equal(part.begin(), part.end(), d.begin() + 3 * 64 * KiB + 1000));
  ASSERT_FALSE(f->sync());
  f.reset();

  // A bit flipped inside record 7's payload.
  format::frame_view v;
  const std::size_t at = find_frame(disk->bytes, std::span(d).subspan(7 * 64 * KiB, 64 * KiB), v);
  ASSERT_NE(at, std::string::npos);
  ASSERT_EQ(v.header.format, codec::payload_format::gzip);
  disk->bytes[at + format::frame_header_size + v.payload.size() / 2] ^= std::byte{0x08};
  f = open_mem(disk, o);
  sink.lines->clear();
  std::vector<std::byte> many(10 * 64 * KiB, std::byte{0x77});
  EXPECT_EQ(f->pread(many, 2 * 64 * KiB, got), std::errc::io_error);
  ASSERT_EQ(sink.lines->size(), 1u);
  EXPECT_NE(sink.lines->front().find("record 7 "), std::string::npos) << sink.lines->front();
  for (std::uint64_t first : {0, 8, 30}) {
    std::vector<std::byte> ok(7 * 64 * KiB);
    ASSERT_FALSE(f->pread(ok, first * 64 * KiB, got)) << first;
    EXPECT_TRUE(std::equal(ok.begin(), ok.end(), d.begin() + static_cast<std::ptrdiff_t>(first * 64 * KiB))) << first;
  }
}

// Read-ahead follows the access pattern: a stream of reads each starting where the last ended
// gets the backing file told about the frames ahead (a window that doubles up to 16 MiB of
// records), in aligned 2 MiB chunks of the backing file, none named twice; reads elsewhere
// (random) get none.
TEST(store, sequential_readers_get_read_ahead_and_random_readers_none) {
  auto disk = std::make_shared<mem_disk>();
  const auto o = opts("gzip", 32 * KiB);
  auto f = open_mem(disk, o);
  const auto d = test::make_data(test::data_class::text, 512 * 32 * KiB, 5);
  ASSERT_FALSE(f->pwrite(d, 0));
  ASSERT_FALSE(f->sync());
  f.reset();
  f = open_mem(disk, o);
  std::vector<std::byte> buf(64 * KiB);
  std::size_t got = 0;
  // Random 4 KiB reads: nothing is read ahead.
  std::mt19937_64 rng(3);
  for (int i = 0; i < 50; ++i) {
    std::vector<std::byte> small(4096);
    ASSERT_FALSE(f->pread(small, (rng() % (d.size() / 4096 - 1)) * 4096 + 1, got));
  }
  EXPECT_TRUE(disk->hints.empty()) << disk->hints.size() << " hints for random reads";
  // A stream of 64 KiB reads (two records each) from the start.
  std::uint64_t hinted = 0, last_end = 0;
  for (std::uint64_t off = 0; off < d.size(); off += buf.size()) {
    ASSERT_FALSE(f->pread(buf, off, got));
    ASSERT_TRUE(std::equal(buf.begin(), buf.end(), d.begin() + static_cast<std::ptrdiff_t>(off))) << off;
  }
  ASSERT_FALSE(disk->hints.empty()) << "a sequential reader got no read-ahead";
  std::uint64_t biggest = 0;
  auto hints = disk->hints;
  std::sort(hints.begin(), hints.end());  // frames lie in the order their batches finished
  for (auto [off, len] : hints) {
    EXPECT_EQ(off % (2u << 20), 0u) << "an aligned chunk of the backing file, not a frame";
    EXPECT_GE(off, last_end) << "a chunk hinted twice";
    last_end = off + len;
    hinted += len;
    biggest = std::max(biggest, len);
  }
  const std::uint64_t stored = disk->bytes.size();
  EXPECT_GT(hinted, stored / 2) << "most of the stream's frames were read ahead";
  EXPECT_LE(hinted, stored);
  EXPECT_LE(biggest, 2u << 20) << "named in chunks of 2 MiB of the backing file, never the whole window at once";
  EXPECT_GE(biggest, 1u << 20) << "large reads for the disk, not a hint per frame";
}

// The same through a real file (fd_io's preadv): a container cut off inside a raw record's
// payload reads that record as EIO (a short read, never the bytes it has), the others right.
TEST(store, a_raw_record_cut_short_in_a_real_file_is_eio) {
  const auto path = std::filesystem::temp_directory_path() / ("qzfs-raw-" + std::to_string(::getpid()));
  const auto d = test::make_data(test::data_class::random, 3 * 64 * KiB, 12);
  {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    ASSERT_GE(fd, 0);
    std::unique_ptr<file> f;
    ASSERT_FALSE(file::create(std::make_unique<fd_io>(fd), opts("off", 64 * KiB), f));
    ASSERT_FALSE(f->pwrite(d, 0));
    ASSERT_FALSE(f->sync());
    EXPECT_EQ(read_all(*f), d) << "through preadv";
  }
  // The last raw frame's payload, found by its hash, cut in the middle.
  std::vector<std::byte> bytes = test::read_file(path.string());
  format::frame_view v;
  const std::size_t at = find_frame(bytes, std::span(d).subspan(2 * 64 * KiB, 64 * KiB), v);
  ASSERT_NE(at, std::string::npos);
  // Its bytes made unreadable past the middle: the file is cut there (the map and slots were
  // read at open, from copies that lie before or are read first).
  const int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  std::unique_ptr<file> f;
  ASSERT_FALSE(file::open(std::make_unique<fd_io>(fd), opts("off", 64 * KiB), f));
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(at + 40 + 32 * KiB)), 0);
  std::vector<std::byte> rec(64 * KiB);
  std::size_t got = 0;
  EXPECT_EQ(f->pread(rec, 2 * 64 * KiB, got), std::errc::io_error);
  if (at > 2 * 64 * KiB) {  // the frames of records 0 and 1 lie before the cut
    ASSERT_FALSE(f->pread(rec, 0, got));
    EXPECT_TRUE(std::equal(rec.begin(), rec.end(), d.begin()));
  }
  f.reset();
  std::filesystem::remove(path);
}

// One worker on a machine with more cores: the writer's thread builds and writes the frames of
// whole-record writes while the worker compresses (the store's "helper" path).
TEST(store, whole_record_writes_with_a_core_to_spare) {
  offload::cpu_backend cpu({.workers = 1});
  offload::scheduler sched(cpu, nullptr);
  engine::engine compressor(sched, {.pol = *engine::parse_policy("gzip-1")});
  options o;
  o.compressor = &compressor;
  o.record_size = 64 * KiB;
  auto disk = std::make_shared<mem_disk>();
  std::mt19937_64 rng(5);
  std::vector<std::byte> model;
  {
    std::unique_ptr<file> f;
    ASSERT_FALSE(file::open(std::make_unique<mem_io>(disk), o, f));
    for (int i = 0; i < 6; ++i) {
      auto d = some_data(rng, (1 << 20) + 3 * 4096);  // whole records, and a partial one
      const std::uint64_t off = static_cast<std::uint64_t>(i) * (1 << 20);
      ASSERT_FALSE(f->pwrite(d, off));
      if (model.size() < off + d.size()) model.resize(off + d.size());
      std::copy(d.begin(), d.end(), model.begin() + static_cast<std::ptrdiff_t>(off));
    }
    EXPECT_EQ(read_all(*f), model);
  }
  std::unique_ptr<file> f;
  ASSERT_FALSE(file::open(std::make_unique<mem_io>(disk), o, f));
  EXPECT_EQ(read_all(*f), model);
  std::vector<damage> bad;
  ASSERT_FALSE(f->check(bad));
  EXPECT_TRUE(bad.empty());
}

TEST(store, fallocate_checks_the_space_and_keeps_compression_on) {
  // The backing file system holds 4 MiB: a range whose records could not all be stored raw is
  // refused up front (ENOSPC, as a file system that reserves); one that fits is granted, and
  // data written into it is still compressed (unlike btrfs, which writes preallocated ranges raw).
  constexpr std::uint32_t rs = 64 * KiB;
  auto d = std::make_shared<mem_disk>();
  d->capacity = 4 << 20;
  std::unique_ptr<file> f;
  ASSERT_FALSE(file::create(std::make_unique<mem_io>(d), opts("gzip", rs), f));
  EXPECT_EQ(f->allocate(0, 8 << 20, false), std::errc::no_space_on_device);
  EXPECT_EQ(f->size(), 0u) << "a refused allocation changes nothing";
  ASSERT_FALSE(f->allocate(0, 2 << 20, false));
  EXPECT_EQ(f->size(), 2u << 20);
  const auto text = test::make_data(test::data_class::text, 2 << 20);
  ASSERT_FALSE(f->pwrite(text, 0));
  ASSERT_FALSE(f->sync());
  const auto st = f->stats();
  EXPECT_EQ(st.per_format[static_cast<std::size_t>(codec::payload_format::gzip)], 32u);
  EXPECT_LT(f->physical_size(), (2u << 20) / 2);
  // Records that already hold data need nothing more: the whole file again fits.
  EXPECT_FALSE(f->allocate(0, 2 << 20, true));
  EXPECT_EQ(read_all(*f), text);
}

TEST(store, offsets_past_4_gib) {
  auto disk = std::make_shared<mem_disk>();
  const auto o = opts("gzip-1", 128 * KiB);
  const std::uint64_t far = (std::uint64_t{5} << 30) + 123;
  auto d = test::make_data(test::data_class::text, 200 * KiB);
  {
    auto f = open_mem(disk, o);
    ASSERT_FALSE(f->pwrite(d, far));
  }
  auto f = open_mem(disk, o);
  EXPECT_EQ(f->size(), far + d.size());
  EXPECT_LT(disk->bytes.size(), 2u << 20) << "a sparse 5 GiB file takes its data and its map, not 5 GiB";
  std::vector<std::byte> back(d.size());
  std::size_t got = 0;
  ASSERT_FALSE(f->pread(back, far, got));
  EXPECT_EQ(got, d.size());
  EXPECT_EQ(back, d);
  std::uint64_t at = 0;
  ASSERT_FALSE(f->seek(0, SEEK_DATA, at));
  EXPECT_EQ(at, far / (128 * KiB) * (128 * KiB));
  ASSERT_FALSE(f->truncate(far - 1000));
  EXPECT_EQ(f->size(), far - 1000);
  EXPECT_EQ(f->stats().records, (far - 1000 + 128 * KiB - 1) / (128 * KiB));
}

TEST(store, shorter_overwrite_after_truncate_leaves_no_old_tail) {
  auto disk = std::make_shared<mem_disk>();
  const auto o = opts("gzip-1", 64 * KiB);
  auto f = open_mem(disk, o);
  auto big = test::make_data(test::data_class::text, 200 * KiB);
  ASSERT_FALSE(f->pwrite(big, 0));
  ASSERT_FALSE(f->sync());
  ASSERT_FALSE(f->truncate(0));
  auto small = test::make_data(test::data_class::random, 70 * KiB + 13);
  ASSERT_FALSE(f->pwrite(small, 0));
  EXPECT_EQ(read_all(*f), small);
  // Growing again shows zeros, not the old bytes, before and after a commit and a reopen.
  ASSERT_FALSE(f->truncate(150 * KiB));
  auto expect = small;
  expect.resize(150 * KiB);
  EXPECT_EQ(read_all(*f), expect);
  ASSERT_FALSE(f->sync());
  f.reset();
  f = open_mem(disk, o);
  EXPECT_EQ(read_all(*f), expect);
  // Shrinking into a committed record, then growing, zeros its tail too.
  ASSERT_FALSE(f->truncate(10 * KiB + 1));
  ASSERT_FALSE(f->sync());
  ASSERT_FALSE(f->truncate(100 * KiB));
  expect.resize(10 * KiB + 1);
  expect.resize(100 * KiB);
  EXPECT_EQ(read_all(*f), expect);
}

TEST(store, sizes_keep_no_padding) {
  auto disk = std::make_shared<mem_disk>();
  const auto o = opts("zstd-3", 16 * KiB);
  {
    auto f = open_mem(disk, o);
    auto d = test::make_data(test::data_class::text, 5000);
    ASSERT_FALSE(f->pwrite(d, 0));
    ASSERT_FALSE(f->pwrite(d, 12345));
  }
  auto f = open_mem(disk, o);
  EXPECT_EQ(f->size(), 12345u + 5000);
}

TEST(store, zeros_are_holes_and_seek_finds_data) {
  auto disk = std::make_shared<mem_disk>();
  auto f = open_mem(disk, opts("gzip-1", 64 * KiB));
  auto text = test::make_data(test::data_class::text, 64 * KiB);
  auto zeros = std::vector<std::byte>(64 * KiB);
  ASSERT_FALSE(f->pwrite(zeros, 0));
  ASSERT_FALSE(f->pwrite(text, 128 * KiB));
  ASSERT_FALSE(f->truncate(1 << 20));  // sparse tail
  ASSERT_FALSE(f->sync());
  const auto st = f->stats();
  EXPECT_EQ(st.records, 16u);
  EXPECT_EQ(st.holes, 15u);
  EXPECT_LT(disk->bytes.size(), 64u * KiB) << "zeros took space";
  std::uint64_t at = 0;
  ASSERT_FALSE(f->seek(0, SEEK_DATA, at));
  EXPECT_EQ(at, 128u * KiB);
  ASSERT_FALSE(f->seek(128 * KiB + 5, SEEK_HOLE, at));
  EXPECT_EQ(at, 192u * KiB);
  ASSERT_FALSE(f->seek(5, SEEK_HOLE, at));
  EXPECT_EQ(at, 5u);
  EXPECT_EQ(f->seek(200 * KiB, SEEK_DATA, at), std::errc::no_such_device_or_address);
  EXPECT_EQ(f->seek(1 << 20, SEEK_HOLE, at), std::errc::no_such_device_or_address);
  // Punching the data record makes it a hole and gives its space back.
  ASSERT_FALSE(f->punch_hole(128 * KiB, 64 * KiB));
  ASSERT_FALSE(f->sync());
  EXPECT_EQ(f->stats().holes, 16u);
  EXPECT_EQ(f->size(), 1u << 20);
  EXPECT_EQ(read_all(*f), std::vector<std::byte>(1 << 20));
}

TEST(store, record_sizes_from_4k_to_1m) {
  for (std::uint32_t rs = 4 * KiB; rs <= 1024 * KiB; rs *= 4) {
    auto disk = std::make_shared<mem_disk>();
    const auto o = opts("auto", rs);
    auto d = test::make_data(test::data_class::binary, 3 * rs + 77);
    {
      auto f = open_mem(disk, o);
      ASSERT_FALSE(f->pwrite(d, 1));
    }
    auto other = opts("auto", 8 * KiB);  // the record size is the file's, not the opener's
    auto f = open_mem(disk, other);
    EXPECT_EQ(f->record_size(), rs);
    auto back = read_all(*f);
    ASSERT_EQ(back.size(), d.size() + 1) << rs;
    EXPECT_TRUE(std::equal(d.begin(), d.end(), back.begin() + 1)) << rs;
  }
  auto bad = opts("auto", 3000);
  std::unique_ptr<file> f;
  EXPECT_EQ(file::create(std::make_unique<mem_io>(std::make_shared<mem_disk>()), bad, f), std::errc::invalid_argument);
}

TEST(store, opening_reads_only_the_header_and_the_map) {
  auto disk = std::make_shared<mem_disk>();
  const auto o = opts("lz4", 4 * KiB);
  {
    auto f = open_mem(disk, o);
    std::mt19937_64 rng(3);
    // A long history: 300 commits of overwrites.
    for (int i = 0; i < 300; ++i) {
      auto d = some_data(rng, 4 * KiB);
      ASSERT_FALSE(f->pwrite(d, (rng() % 64) * 4 * KiB));
      ASSERT_FALSE(f->sync());
    }
  }
  disk->bytes_read = 0;
  auto f = open_mem(disk, o);
  EXPECT_LE(disk->bytes_read, format::container_header_size + format::map_bytes_v2(64));
}

// Every build reads the frozen container of every format version: v1 (a dense record map) and
// v2 (a sparse one). QZFS_REGEN_GOLDEN=1 writes the current version's anew (only when the format
// version changes, into a new folder).
class golden_container : public ::testing::TestWithParam<const char*> {};
INSTANTIATE_TEST_SUITE_P(versions, golden_container, ::testing::Values("v1", "v2"));
TEST_P(golden_container, still_reads) {
  const std::string path = QZFS_SOURCE_DIR "/tests/golden/" + std::string(GetParam()) + "/container-4k.qzc";
  const auto text = test::read_file(QZFS_SOURCE_DIR "/tests/golden/v1/input.txt");
  ASSERT_EQ(text.size(), 20000u);
  std::vector<std::byte> expect(32768);
  std::copy(text.begin(), text.end(), expect.begin());
  std::mt19937_64 rng(42);
  for (std::size_t i = 24576; i < 28672; ++i) expect[i] = std::byte(rng());       // raw
  std::copy(text.begin(), text.begin() + 4096, expect.begin() + 4096);            // zstd, 2nd generation
  std::copy(text.begin() + 100, text.begin() + 100 + 4096, expect.begin() + 28672);  // zstd, 2nd generation
  if (std::getenv("QZFS_REGEN_GOLDEN") != nullptr && std::string(GetParam()) == "v" + std::to_string(format::container_version)) {
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    auto disk = std::make_shared<mem_disk>();
    {
      auto f = open_mem(disk, opts("gzip-1", 4096));
      ASSERT_FALSE(f->pwrite(std::span(expect).first(28672), 0));
      ASSERT_FALSE(f->sync());
    }
    {
      auto f = open_mem(disk, opts("zstd-3", 4096));
      ASSERT_FALSE(f->pwrite(std::span(expect).subspan(4096, 4096), 4096));
      ASSERT_FALSE(f->pwrite(std::span(expect).subspan(28672, 4096), 28672));
    }
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(disk->bytes.data()),
                                                static_cast<std::streamsize>(disk->bytes.size()));
  }
  auto disk = std::make_shared<mem_disk>();
  disk->bytes = test::read_file(path);
  ASSERT_FALSE(disk->bytes.empty()) << path;
  disk->blocks.assign((disk->bytes.size() + 4095) / 4096, true);
  format::container_slot slot;
  ASSERT_EQ(format::parse_slot(std::span(disk->bytes).first(64), slot), format::container_error::ok);
  EXPECT_EQ("v" + std::to_string(slot.version), GetParam());
  auto f = open_mem(disk, opts("gzip-1", 128 * KiB));
  ASSERT_TRUE(f->is_container());
  EXPECT_EQ(f->record_size(), 4096u);
  EXPECT_EQ(read_all(*f), expect);
  const auto st = f->stats();
  EXPECT_EQ(st.holes, 1u);
  EXPECT_EQ(st.raw, 1u);
  EXPECT_GE(st.per_format[static_cast<int>(codec::payload_format::zstd)], 2u);
  EXPECT_GE(st.per_format[static_cast<int>(codec::payload_format::gzip)], 4u);
}

// ---------------------------------------------------------------------------------------------
// Plain files in the backing directory

struct temp_dir {
  std::filesystem::path path;
  int fd = -1;
  temp_dir() {
    char tmpl[] = "/tmp/qzfs-store-XXXXXX";
    path = mkdtemp(tmpl);
    fd = ::open(path.c_str(), O_DIRECTORY | O_RDONLY);
  }
  ~temp_dir() {
    ::close(fd);
    std::filesystem::remove_all(path);
  }
  void put(const char* name, const std::vector<std::byte>& d) const {
    FILE* f = std::fopen((path / name).c_str(), "wb");
    std::fwrite(d.data(), 1, d.size(), f);
    std::fclose(f);
  }
  std::unique_ptr<file> open(const char* name, const options& o) const {
    std::unique_ptr<io> backing;
    EXPECT_FALSE(open_fd_io(fd, name, O_CREAT, 0644, backing));
    std::unique_ptr<file> f;
    EXPECT_FALSE(file::open(std::move(backing), o, f));
    return f;
  }
};

// The sync log on a real file: a copy taken while the file is open (what a crash leaves) holds
// the fsyncs since the last commit in its log. Opening the copy read-only applies them in memory
// and writes nothing; stat's size (peek_logical_size) knows them too; a damaged entry stops the
// recovery at the batch before it; a read-write open and a close commit them and drop the log.
TEST(store_sync_log, a_copy_taken_while_open_recovers_its_fsyncs) {
  temp_dir dir;
  auto o = opts("gzip-1", 16 * KiB);
  o.sync_log_bytes = 64 * KiB;
  std::vector<std::byte> model;
  std::vector<std::vector<std::byte>> states;  // after each sync
  auto f = dir.open("db", o);
  std::mt19937_64 rng(5);
  for (int i = 0; i < 40; ++i) {
    const std::uint64_t off = i % 5 == 0 ? model.size() : rng() % (model.size() + 1);
    auto d = some_data(rng, 100 + rng() % 2000);
    ASSERT_FALSE(f->pwrite(d, off));
    if (model.size() < off + d.size()) model.resize(off + d.size());
    std::copy(d.begin(), d.end(), model.begin() + static_cast<std::ptrdiff_t>(off));
    ASSERT_FALSE(f->sync());
    states.push_back(model);
  }
  ASSERT_GT(f->log_syncs(), 20u);
  const auto disk = test::read_file(dir.path / "db");
  std::vector<std::byte> slots(disk.begin(), disk.begin() + 128);
  std::string marker(64, '\0');
  ASSERT_EQ(::getxattr((dir.path / "db").c_str(), "user.qzfs.slot", marker.data(), 64), 64);
  auto copy = [&](const char* name, const std::vector<std::byte>& bytes) {
    dir.put(name, bytes);
    ASSERT_EQ(::setxattr((dir.path / name).c_str(), "user.qzfs.slot", marker.data(), 64, 0), 0);
  };
  copy("crashed", disk);
  {
    // Read-only: the fsyncs are there, and not a byte of the file changes.
    const int fd = ::openat(dir.fd, "crashed", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    std::uint64_t size = 0;
    bool container = false;
    ASSERT_FALSE(peek_logical_size(fd, disk.size(), size, &container));
    EXPECT_TRUE(container);
    EXPECT_EQ(size, model.size());
    std::unique_ptr<file> ro;
    ASSERT_FALSE(file::open(std::make_unique<fd_io>(fd), o, ro));
    EXPECT_GT(ro->log_replayed(), 0u);
    EXPECT_EQ(read_all(*ro), model);
    ASSERT_FALSE(ro->sync());
    ro.reset();
    EXPECT_EQ(test::read_file(dir.path / "crashed"), disk);
  }
  // One byte of a late batch's data damaged: the batches before it, not it or those after.
  {
    auto bad = disk;
    format::container_slot s0, s1, best;
    const bool ok0 = format::parse_slot(std::span(bad).first(64), s0) == format::container_error::ok;
    const bool ok1 = format::parse_slot(std::span(bad).subspan(64, 64), s1) == format::container_error::ok;
    ASSERT_TRUE(ok0 || ok1);
    best = !ok1 || (ok0 && s0.generation > s1.generation) ? s0 : s1;
    ASSERT_NE(best.log_len, 0u) << "the newest slot names a log";
    // Walk to the last entry and flip a byte of its data.
    std::uint64_t pos = best.log_offset, last = 0, n = 0;
    for (;;) {
      format::log_entry e;
      if (!format::parse_log_header(std::span(bad).subspan(pos).first<format::log_header_size>(), e) ||
          e.base_generation != best.generation || e.seq != n) {
        break;
      }
      last = pos;
      pos += format::log_header_size + e.length;
      ++n;
    }
    ASSERT_GT(n, 1u);
    bad[last + format::log_header_size] ^= std::byte{1};
    copy("damaged", bad);
    auto g = dir.open("damaged", o);
    EXPECT_EQ(read_all(*g), states[states.size() - 2]);
  }
  // Read-write: recovered, committed at the close, and no log any more.
  {
    auto g = dir.open("crashed", o);
    EXPECT_EQ(read_all(*g), model);
  }
  const auto after = test::read_file(dir.path / "crashed");
  EXPECT_EQ(after[4], std::byte{2});
  EXPECT_EQ(after[64 + 4], std::byte{2});
  auto g = dir.open("crashed", o);
  EXPECT_EQ(read_all(*g), model);
  EXPECT_EQ(g->log_replayed(), 0u);
  f.reset();
}

TEST(store_plain, existing_files_stay_as_they_are) {
  temp_dir dir;
  auto d = test::make_data(test::data_class::text, 100 * KiB);
  dir.put("plain", d);
  const auto o = opts("gzip-1", 64 * KiB);
  {
    auto f = dir.open("plain", o);
    ASSERT_FALSE(f->is_container());
    EXPECT_EQ(read_all(*f), d);
    auto patch = test::make_data(test::data_class::random, 5000);
    ASSERT_FALSE(f->pwrite(patch, 70000));
    std::copy(patch.begin(), patch.end(), d.begin() + 70000);
    ASSERT_FALSE(f->sync());
  }
  // Still a plain file, byte for byte what was written.
  EXPECT_EQ(test::read_file(dir.path / "plain"), d);
  {
    auto f = dir.open("plain", o);
    ASSERT_FALSE(f->truncate(0));  // O_TRUNC: rewritten from scratch, as a container
    EXPECT_TRUE(f->is_container());
    ASSERT_FALSE(f->pwrite(d, 0));
  }
  auto on_disk = test::read_file(dir.path / "plain");
  EXPECT_TRUE(format::has_container_magic(on_disk));
  EXPECT_LT(on_disk.size(), d.size() / 2);
  EXPECT_EQ(read_all(*dir.open("plain", o)), d);
}

TEST(store_plain, pack_converts_atomically_and_keeps_metadata) {
  temp_dir dir;
  auto d = test::make_data(test::data_class::text, 300 * KiB);
  dir.put("data", d);
  ASSERT_EQ(::chmod((dir.path / "data").c_str(), 0640), 0);
  struct timespec times[2] = {{1000000, 5}, {2000000, 7}};
  ASSERT_EQ(::utimensat(dir.fd, "data", times, 0), 0);
  const auto o = opts("gzip-1", 128 * KiB);
  const bool xattrs = ::setxattr((dir.path / "data").c_str(), "user.origin", "lab-7", 5, 0) == 0;
  ASSERT_FALSE(pack_file(dir.fd, "data", o));
  if (xattrs) {
    char v[16] = {};
    EXPECT_EQ(::getxattr((dir.path / "data").c_str(), "user.origin", v, sizeof v), 5);
    EXPECT_STREQ(v, "lab-7");
  }
  struct stat st {};
  ASSERT_EQ(::stat((dir.path / "data").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_mtim.tv_sec, 2000000);
  EXPECT_LT(static_cast<std::size_t>(st.st_size), d.size() / 2);
  EXPECT_EQ(read_all(*dir.open("data", o)), d);
  EXPECT_EQ(pack_file(dir.fd, "data", o), std::errc::file_exists);
  // Nothing left beside it, and hard-linked files are refused.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path), std::filesystem::directory_iterator()), 1);
  dir.put("linked", d);
  ASSERT_EQ(::link((dir.path / "linked").c_str(), (dir.path / "link2").c_str()), 0);
  EXPECT_EQ(pack_file(dir.fd, "linked", o), std::errc::too_many_links);
  EXPECT_EQ(test::read_file(dir.path / "linked"), d);
}

// ---------------------------------------------------------------------------------------------
// Model-based: random operations against a byte vector

struct model_run {
  std::string policy;
  std::uint64_t seed;
};

void run_model(const std::string& policy, std::uint64_t seed, std::size_t ops) {
  std::mt19937_64 rng(seed);
  const std::uint32_t rs = 4 * KiB << (seed % 4);  // 4, 8, 16, 32 KiB
  const std::uint64_t max_size = 24 * rs;
  auto disk = std::make_shared<mem_disk>();
  auto o = opts(policy, rs);
  o.max_dirty_records = 1 + seed % 12;
  o.batch_records = 1 + seed % 5;
  o.compact_slack = seed % 2 == 0 ? 0 : 1 << 20;
  auto f = open_mem(disk, o);
  std::vector<std::byte> model;
  auto len_of = [&] {
    switch (rng() % 4) {
      case 0: return 1 + rng() % 64;
      case 1: return 1 + rng() % rs;
      case 2: return std::uint64_t{rs};
      default: return 1 + rng() % (3 * rs);
    }
  };
  auto off_of = [&] {
    std::uint64_t o2 = rng() % (model.size() + 2 * rs + 1);
    if (rng() % 3 == 0) o2 = o2 / rs * rs;  // record-aligned
    return std::min(o2, max_size);
  };
  for (std::size_t n = 0; n < ops; ++n) {
    const auto p = rng() % 100;
    SCOPED_TRACE("op " + std::to_string(n) + " kind " + std::to_string(p) + " size " + std::to_string(model.size()));
    if (p < 35) {
      const auto off = off_of();
      auto d = some_data(rng, std::min(len_of(), max_size + rs - off));
      ASSERT_FALSE(f->pwrite(d, off));
      if (model.size() < off + d.size()) model.resize(off + d.size());
      std::copy(d.begin(), d.end(), model.begin() + static_cast<std::ptrdiff_t>(off));
    } else if (p < 60) {
      const auto off = off_of();
      std::vector<std::byte> got(len_of());
      std::size_t n_got = 0;
      ASSERT_FALSE(f->pread(got, off, n_got));
      const std::uint64_t want = off >= model.size() ? 0 : std::min<std::uint64_t>(got.size(), model.size() - off);
      ASSERT_EQ(n_got, want);
      ASSERT_TRUE(std::equal(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(want),
                             model.begin() + static_cast<std::ptrdiff_t>(std::min<std::uint64_t>(off, model.size()))));
    } else if (p < 66) {
      const auto sz = rng() % 3 == 0 ? rng() % (model.size() + 1) : rng() % max_size;
      ASSERT_FALSE(f->truncate(sz));
      model.resize(sz);
    } else if (p < 72) {
      const auto off = off_of();
      const auto len = len_of();
      ASSERT_FALSE(f->punch_hole(off, len));
      for (std::uint64_t i = off; i < std::min<std::uint64_t>(off + len, model.size()); ++i) model[i] = std::byte{0};
    } else if (p < 76) {
      const auto off = off_of();
      const auto len = len_of();
      const bool keep = rng() % 2 == 0;
      ASSERT_FALSE(f->zero_range(off, len, keep));
      if (!keep && model.size() < off + len) model.resize(off + len);
      for (std::uint64_t i = off; i < std::min<std::uint64_t>(off + len, model.size()); ++i) model[i] = std::byte{0};
    } else if (p < 81) {
      ASSERT_FALSE(f->sync());
    } else if (p < 84) {
      ASSERT_FALSE(f->flush());
    } else if (p < 87) {
      f.reset();  // close: commits
      f = open_mem(disk, o);
    } else if (p < 95) {
      const auto off = off_of();
      const int whence = rng() % 2 == 0 ? SEEK_DATA : SEEK_HOLE;
      std::uint64_t at = 0;
      auto ec = f->seek(off, whence, at);
      if (off >= model.size()) {
        ASSERT_EQ(ec, std::errc::no_such_device_or_address);
        continue;
      }
      if (whence == SEEK_DATA) {
        // Everything skipped is zero; ENXIO only when the rest is zero.
        const std::uint64_t end = ec ? model.size() : at;
        ASSERT_GE(end, off);
        for (std::uint64_t i = off; i < end; ++i) ASSERT_EQ(model[i], std::byte{0}) << "SEEK_DATA skipped data at " << i;
      } else {
        ASSERT_FALSE(ec);
        ASSERT_GE(at, off);
        ASSERT_LE(at, model.size());
        // A hole reads as zeros up to its record's end (or the end of the file).
        for (std::uint64_t i = at; i < std::min<std::uint64_t>(model.size(), (at / rs + 1) * rs); ++i) {
          ASSERT_EQ(model[i], std::byte{0}) << "SEEK_HOLE at " << at << " has data at " << i;
        }
      }
    } else {
      const auto off = off_of();
      const auto len = len_of();
      const bool keep = rng() % 2 == 0;
      ASSERT_FALSE(f->allocate(off, len, keep));
      if (!keep && model.size() < off + len) model.resize(off + len);
    }
    ASSERT_EQ(f->size(), model.size());
  }
  ASSERT_EQ(read_all(*f), model);
  ASSERT_FALSE(f->sync());
  f.reset();
  f = open_mem(disk, o);
  ASSERT_EQ(read_all(*f), model);
  std::vector<damage> bad;
  ASSERT_FALSE(f->check(bad));
  ASSERT_TRUE(bad.empty()) << bad.front().what;
  // The space bound holds after the last commit.
  const auto st = f->stats();
  if (o.compact_slack == 0) {
    EXPECT_LE(st.container_size, 2 * st.live_bytes + 128);
  }
}

class store_model : public ::testing::TestWithParam<model_run> {};

TEST_P(store_model, random_operations_match_a_byte_vector) {
  const char* env = std::getenv("QZFS_MODEL_OPS");
  const std::size_t ops = env != nullptr ? std::strtoull(env, nullptr, 10) : 25000;
  run_model(GetParam().policy, GetParam().seed, ops);
}

std::vector<model_run> model_runs() {
  std::vector<model_run> v;
  for (const char* p : {"off", "lz4", "gzip-1", "gzip-6", "zstd-3", "auto"}) {
    for (std::uint64_t s = 1; s <= 8; ++s) v.push_back({p, s * 1000 + std::hash<std::string>{}(p) % 1000});
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(runs, store_model, ::testing::ValuesIn(model_runs()), [](const auto& info) {
  std::string n = info.param.policy + "_" + std::to_string(info.param.seed);
  for (auto& c : n) c = c == '-' ? '_' : c;
  return n;
});

}  // namespace
}  // namespace qzfs::store
