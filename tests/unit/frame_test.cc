// The record frame: round trips through every codec family, every single-bit flip and every
// truncation rejected, frozen frames of format version 1 still read.
#include <gtest/gtest.h>

#define XXH_STATIC_LINKING_ONLY  // the layout of XXH3_state_t, to leave a stale one on the stack
#include <xxhash.h>

#include <array>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "qzfs/codec/workspace.h"
#include "qzfs/format/container.h"
#include "qzfs/format/frame.h"
#include "test_data.h"

namespace qzfs::format {
namespace {

using codec::status;

// Compresses `data` with `name` into a sealed frame (raw when it does not fit), as the store will.
std::vector<std::byte> make_frame(codec::workspace& ws, const std::string& name, std::vector<std::byte>& data) {
  auto s = *codec::parse_spec(name);
  std::vector<std::byte> frame(frame_header_size + data.size());
  auto iov = test::scatter(data);
  frame_header h{s.format, s.producer, static_cast<std::int8_t>(s.level),
                 static_cast<std::uint32_t>(data.size()), 0, hash(iov), 0};
  auto r = ws.compress(s, iov, std::span(frame).subspan(frame_header_size, data.size() * 9 / 10));
  if (r.st == status::ok) {
    h.physical_size = static_cast<std::uint32_t>(r.size);
  } else {
    EXPECT_EQ(r.st, status::does_not_fit);
    h.format = codec::payload_format::none;
    h.producer = codec::producer_id::none;
    h.level = 0;
    h.physical_size = h.logical_size;
    if (!data.empty()) std::memcpy(frame.data() + frame_header_size, data.data(), data.size());
  }
  frame.resize(frame_header_size + h.physical_size);
  seal_frame(h, frame);
  return frame;
}

// The whole read path: parse, decode, verify. ok only when the logical bytes are proven right.
frame_error read_frame(codec::workspace& ws, std::span<const std::byte> bytes, std::vector<std::byte>& out) {
  frame_view v;
  if (auto e = parse_frame(bytes, v); e != frame_error::ok) return e;
  out.assign(v.header.logical_size, std::byte{0});
  if (ws.decompress(v.header.format, v.payload, out) != status::ok) return frame_error::payload_checksum;
  return verify_logical(v.header, out);
}

const char* const families[] = {"none", "gzip-1", "gzip-6", "zlib-6", "zstd-3", "zstd-fast-5", "lz4", "lz4hc-9"};

TEST(frame, round_trips_for_every_codec_family) {
  codec::workspace ws;
  for (const char* name : families) {
    for (auto cls : {test::data_class::text, test::data_class::random, test::data_class::zeros}) {
      for (std::size_t n : {0u, 1u, 4096u, 131072u}) {
        auto data = test::make_data(cls, n);
        auto frame = make_frame(ws, name, data);
        std::vector<std::byte> back;
        ASSERT_EQ(read_frame(ws, frame, back), frame_error::ok) << name;
        ASSERT_TRUE(back == data);
        // Bytes after the frame are not part of it.
        frame.push_back(std::byte{1});
        frame_view v;
        ASSERT_EQ(parse_frame(frame, v), frame_error::ok);
        EXPECT_EQ(v.frame_size, frame.size() - 1);
      }
    }
  }
}

TEST(frame, every_single_bit_flip_is_rejected) {
  codec::workspace ws;
  for (const char* name : families) {
    auto data = test::make_data(test::data_class::text, 3000);
    auto frame = make_frame(ws, name, data);
    std::vector<std::byte> back;
    ASSERT_EQ(read_frame(ws, frame, back), frame_error::ok);
    for (std::size_t bit = 0; bit < frame.size() * 8; ++bit) {
      frame[bit / 8] ^= std::byte(1u << (bit % 8));
      ASSERT_NE(read_frame(ws, frame, back), frame_error::ok) << name << " bit " << bit;
      frame[bit / 8] ^= std::byte(1u << (bit % 8));
    }
  }
}

TEST(frame, every_truncation_is_rejected) {
  codec::workspace ws;
  for (const char* name : families) {
    auto data = test::make_data(test::data_class::binary, 5000);
    auto frame = make_frame(ws, name, data);
    std::vector<std::byte> back;
    for (std::size_t k = 0; k < frame.size(); ++k)
      ASSERT_EQ(read_frame(ws, std::span(frame).first(k), back), frame_error::truncated) << name << " at " << k;
  }
}

TEST(frame, header_fields_are_checked) {
  codec::workspace ws;
  auto data = test::make_data(test::data_class::text, 1000);
  auto good = make_frame(ws, "zstd-1", data);
  frame_view v;
  {
    auto f = good;
    f[2] = std::byte{2};
    EXPECT_EQ(parse_frame(f, v), frame_error::bad_version);
  }
  {
    auto f = good;
    f[0] = std::byte{'X'};
    EXPECT_EQ(parse_frame(f, v), frame_error::bad_magic);
  }
  {
    frame_header h{codec::payload_format::zstd, codec::producer_id::zstd, 1, 1000, 10, 0, 0};
    std::vector<std::byte> f(frame_header_size + 10);
    h.format = static_cast<codec::payload_format>(9);
    seal_frame(h, f);
    EXPECT_EQ(parse_frame(f, v), frame_error::bad_codec);
  }
  {
    frame_header h{codec::payload_format::none, codec::producer_id::none, 0, 1000, 999, 0, 0};
    std::vector<std::byte> f(frame_header_size + 999);
    seal_frame(h, f);
    EXPECT_EQ(parse_frame(f, v), frame_error::bad_sizes) << "a raw payload must be the logical size";
  }
  {
    // A raw payload is its logical bytes: a header whose two hashes differ describes no record
    // (readers rely on this to hash raw records once).
    std::vector<std::byte> f(frame_header_size + 1000, std::byte{7});
    frame_header h{codec::payload_format::none, codec::producer_id::none, 0, 1000, 1000, 0, 0};
    h.logical_hash = hash(std::span(f).subspan(frame_header_size));
    h.payload_hash = h.logical_hash;
    encode_header(h, std::span(f).first<frame_header_size>());
    ASSERT_EQ(parse_frame(f, v), frame_error::ok);
    h.logical_hash ^= 1;
    encode_header(h, std::span(f).first<frame_header_size>());
    EXPECT_EQ(parse_frame(f, v), frame_error::bad_header);
  }
  {
    frame_header h{codec::payload_format::gzip, codec::producer_id::isal, 1, max_logical_size + 1, 10, 0, 0};
    std::vector<std::byte> f(frame_header_size + 10);
    seal_frame(h, f);
    EXPECT_EQ(parse_frame(f, v), frame_error::bad_sizes);
  }
}

// A payload that decodes cleanly to the wrong bytes (an accelerator bug) is caught by the
// logical checksum, not returned.
// A raw record is written as its header and the record's own bytes where they lie: the header
// seal_raw_header makes from the scattered pieces is the one seal_frame makes for the same bytes
// laid out contiguously, and the frame parses with one hash for payload and logical bytes.
TEST(frame, a_raw_header_over_scattered_bytes_seals_like_the_contiguous_frame) {
  const auto data = test::make_data(test::data_class::text, 10000);
  std::vector<iovec> pieces;
  for (std::size_t at = 0; at < data.size(); at += 777) {
    pieces.push_back(iovec{const_cast<std::byte*>(data.data() + at), std::min<std::size_t>(777, data.size() - at)});
  }
  std::array<std::byte, frame_header_size> hdr{};
  const frame_header h = seal_raw_header(pieces, hdr);
  EXPECT_EQ(h.format, codec::payload_format::none);
  EXPECT_EQ(h.logical_size, data.size());
  EXPECT_EQ(h.physical_size, data.size());
  EXPECT_EQ(h.payload_hash, h.logical_hash);
  EXPECT_EQ(h.logical_hash, hash(std::span<const std::byte>(data)));

  std::vector<std::byte> contiguous(frame_header_size + data.size());
  std::memcpy(contiguous.data() + frame_header_size, data.data(), data.size());
  frame_header c;
  c.logical_size = c.physical_size = static_cast<std::uint32_t>(data.size());
  c.logical_hash = hash(std::span<const std::byte>(data));
  seal_frame(c, contiguous);
  EXPECT_TRUE(std::equal(hdr.begin(), hdr.end(), contiguous.begin()));
  frame_view v;
  ASSERT_EQ(parse_frame(contiguous, v), frame_error::ok);
  EXPECT_EQ(v.payload.size(), data.size());
}

TEST(frame, wrong_logical_bytes_are_caught_after_decoding) {
  codec::workspace ws;
  auto data = test::make_data(test::data_class::text, 4096);
  auto other = test::make_data(test::data_class::binary, 4096);
  auto frame = make_frame(ws, "gzip-1", other);
  frame_view v;
  ASSERT_EQ(parse_frame(frame, v), frame_error::ok);
  frame_header h = v.header;
  h.logical_hash = hash(std::span<const std::byte>(data));  // claims to hold `data`
  seal_frame(h, frame);
  std::vector<std::byte> back;
  EXPECT_EQ(read_frame(ws, frame, back), frame_error::logical_checksum);
}

TEST(frame, scattered_and_contiguous_hashes_agree) {
  auto data = test::make_data(test::data_class::text, 200000);
  EXPECT_EQ(hash(test::scatter(data)), hash(std::span<const std::byte>(data)));
  EXPECT_EQ(hash(test::contiguous(data)), hash(std::span<const std::byte>(data)));
}

// Frozen frames of format version 1, one per codec family (tests/golden/v1/). Every future
// build must read them. QZFS_REGEN_GOLDEN=1 writes them anew (only when the format version
// changes, into a new folder).
TEST(frame, golden_v1_frames_still_read) {
  const std::string dir = QZFS_SOURCE_DIR "/tests/golden/v1/";
  codec::workspace ws;
  auto data = test::fill_from(test::read_file(dir + "input.txt"), 65536);
  ASSERT_EQ(data.size(), 65536u);
  for (const char* name : families) {
    const std::string path = dir + name + ".frame";
    if (std::getenv("QZFS_REGEN_GOLDEN") != nullptr) {
      auto frame = make_frame(ws, name, data);
      std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(frame.data()),
                                                  static_cast<std::streamsize>(frame.size()));
    }
    auto frame = test::read_file(path);
    ASSERT_FALSE(frame.empty()) << path;
    std::vector<std::byte> back;
    ASSERT_EQ(read_frame(ws, frame, back), frame_error::ok) << path;
    EXPECT_TRUE(back == data) << path;
  }
}

// A sync log entry's hash is a function of its bytes alone. A seeded XXH3 state on the stack
// that is not initialised first takes a stale state's secret when the stale seed matches: the
// hash then depended on what earlier calls left on the stack (under ASan about one run in two
// of the sync log's tests wrote entries that failed their own check). Here the stack is first
// filled with stale states of the very seed the entry uses and a garbage secret, at every
// 64-byte alignment, as a previous call would have left them.
[[gnu::noinline]] void leave_stale_hash_states(std::uint64_t seed) {
  alignas(64) unsigned char stack[64 << 10];
  constexpr std::size_t seed_at = offsetof(XXH3_state_t, seed) % 64, ext_at = offsetof(XXH3_state_t, extSecret) % 64;
  static_assert(seed_at + 8 <= 64 && ext_at + 8 <= 64 && seed_at != ext_at);
  for (std::size_t at = 0; at < sizeof(stack); at += 64) {
    std::memset(stack + at, 0xA5, 64);
    std::memcpy(stack + at + seed_at, &seed, 8);
    std::memset(stack + at + ext_at, 0, 8);
  }
  asm volatile("" : : "r"(stack) : "memory");  // the stores are kept
}

TEST(log_entry, its_hash_depends_on_its_bytes_alone) {
  auto data = test::make_data(test::data_class::text, 3000);
  log_entry e;
  e.flags = log_end;
  e.base_generation = 7;
  e.seq = 3;
  e.offset = 4096;
  e.logical_size = 8192;
  e.length = static_cast<std::uint32_t>(data.size());
  std::array<std::byte, log_header_size> hdr{};
  leave_stale_hash_states(e.base_generation * 0x9E3779B97F4A7C15ull);
  encode_log_entry(e, data, hdr);
  // The same hash computed in one go over the header's first 48 bytes and the data.
  std::vector<std::byte> whole(hdr.begin(), hdr.begin() + 48);
  whole.insert(whole.end(), data.begin(), data.end());
  std::uint64_t stored = 0;  // little-endian, like every field
  for (int i = 0; i < 8; ++i) stored |= static_cast<std::uint64_t>(hdr[48 + i]) << (8 * i);
  EXPECT_EQ(stored, XXH3_64bits_withSeed(whole.data(), whole.size(), e.base_generation * 0x9E3779B97F4A7C15ull))
      << "the stored hash is not XXH3 of the entry's bytes";
  leave_stale_hash_states(e.base_generation * 0x9E3779B97F4A7C15ull);
  EXPECT_TRUE(log_data_matches(hdr, data));
  log_entry back;
  ASSERT_TRUE(parse_log_header(hdr, back));
  EXPECT_EQ(back.seq, 3u);
}

}  // namespace
}  // namespace qzfs::format
