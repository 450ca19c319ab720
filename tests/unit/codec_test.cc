// Round trips for every codec and level, sizes around page and record boundaries, contiguous
// and scattered input, four data classes; the capacity rule; hostile input to every decoder.
#include <gtest/gtest.h>
#include <malloc.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <cstring>

#include "qzfs/codec/codec.h"
#include "qzfs/codec/workspace.h"
#include "test_data.h"

namespace qzfs::codec {
namespace {

using test::data_class;

std::vector<std::string> all_level_names() {
  std::vector<std::string> v = {"none", "lz4"};
  for (int l = 1; l <= 12; ++l) v.push_back("gzip-" + std::to_string(l));
  for (int l = 1; l <= 3; ++l) v.push_back("libdeflate-" + std::to_string(l));
  for (int l = 1; l <= 12; ++l) v.push_back("lz4hc-" + std::to_string(l));
  for (int l = 1; l <= 9; ++l) v.push_back("zlib-" + std::to_string(l));
  for (int l : {1, 3, 5, 10, 50, 100}) v.push_back("zstd-fast-" + std::to_string(l));
  for (int l = 1; l <= 22; ++l) v.push_back("zstd-" + std::to_string(l));
  return v;
}

constexpr std::size_t sizes[] = {0, 1, 4095, 4096, 4097, 128 * 1024, 1024 * 1024};
constexpr data_class classes[] = {data_class::text, data_class::binary, data_class::zeros, data_class::random};
constexpr std::byte canary{0xC3};

class every_codec : public ::testing::TestWithParam<std::string> {
 protected:
  spec s_ = *parse_spec(GetParam());
};

TEST_P(every_codec, round_trips_every_size_class_and_layout) {
  workspace ws;
  for (auto cls : classes) {
    for (std::size_t n : sizes) {
      for (bool scattered : {false, true}) {
        SCOPED_TRACE(std::string(test::name(cls)) + " size " + std::to_string(n) + (scattered ? " scattered" : " contiguous"));
        auto data = test::make_data(cls, n);
        auto iov = scattered ? test::scatter(data) : test::contiguous(data);
        const std::size_t cap = n + n / 8 + 1024;
        std::vector<std::byte> out(cap + 64, canary);
        auto r = ws.compress(s_, iov, std::span(out).first(cap));
        ASSERT_EQ(r.st, status::ok);
        ASSERT_LE(r.size, cap);
        for (std::size_t i = cap; i < out.size(); ++i) ASSERT_EQ(out[i], canary) << "wrote past the capacity";
        std::vector<std::byte> back(n, std::byte{0x5A});
        ASSERT_EQ(ws.decompress(s_.format, std::span(out).first(r.size), back), status::ok);
        ASSERT_TRUE(back == data);
        // A decoder of the same format but another context (another thread's) reads it too.
        ASSERT_EQ(make_context(s_)->decompress(std::span(out).first(r.size), back), status::ok);
        ASSERT_TRUE(back == data);
      }
    }
  }
}

TEST_P(every_codec, random_data_under_the_ten_percent_cap_does_not_fit) {
  workspace ws;
  for (std::size_t n : sizes) {
    if (n == 0) continue;
    for (bool scattered : {false, true}) {
      auto data = test::make_data(data_class::random, n, n);
      auto iov = scattered ? test::scatter(data) : test::contiguous(data);
      const std::size_t cap = n * 9 / 10;
      std::vector<std::byte> out(cap + 64, canary);
      auto r = ws.compress(s_, iov, std::span(out).first(cap));
      EXPECT_EQ(r.st, status::does_not_fit) << "size " << n << (scattered ? " scattered" : "");
      for (std::size_t i = cap; i < out.size(); ++i) ASSERT_EQ(out[i], canary) << "wrote past the capacity";
      // The context stays usable after giving up halfway.
      auto text = test::make_data(data_class::text, n);
      std::vector<std::byte> out2(n + 1024);
      auto r2 = ws.compress(s_, test::contiguous(text), out2);
      ASSERT_EQ(r2.st, status::ok);
      std::vector<std::byte> back(n);
      ASSERT_EQ(ws.decompress(s_.format, std::span(out2).first(r2.size), back), status::ok);
      ASSERT_TRUE(back == text);
    }
  }
}

TEST_P(every_codec, decoder_rejects_wrong_sizes_truncation_and_garbage) {
  workspace ws;
  auto data = test::make_data(data_class::text, 20000);
  std::vector<std::byte> out(40000);
  auto r = ws.compress(s_, test::contiguous(data), out);
  ASSERT_EQ(r.st, status::ok);
  auto payload = std::span(out).first(r.size);
  std::vector<std::byte> back(data.size() + 1);
  // Expected size one short, one long.
  EXPECT_EQ(ws.decompress(s_.format, payload, std::span(back).first(data.size() - 1)), status::corrupt);
  EXPECT_EQ(ws.decompress(s_.format, payload, std::span(back).first(data.size() + 1)), status::corrupt);
  // Every truncation (a compressed payload of 20000 text bytes can never be complete early).
  for (std::size_t k = 0; k < payload.size(); k += (s_.format == payload_format::none ? 97 : 1))
    ASSERT_EQ(ws.decompress(s_.format, payload.first(k), std::span(back).first(data.size())), status::corrupt)
        << "truncated to " << k;
  // Trailing bytes after a valid payload.
  std::vector<std::byte> longer(payload.begin(), payload.end());
  longer.push_back(std::byte{0});
  if (s_.format != payload_format::none) {
    EXPECT_EQ(ws.decompress(s_.format, longer, std::span(back).first(data.size())), status::corrupt);
  }
  // Garbage never crashes and never claims success for the wrong size.
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    auto junk = test::make_data(data_class::random, 1 + seed * 37 % 3000, seed);
    auto st = ws.decompress(s_.format, junk, std::span(back).first(data.size()));
    if (s_.format != payload_format::none) {
      EXPECT_EQ(st, status::corrupt);
    }
  }
}

// Scattered input is the same record: the payload must be byte for byte what contiguous
// input gives (whether the adapter gathers or streams).
TEST_P(every_codec, scattered_input_gives_the_same_payload) {
  workspace ws;
  for (auto cls : {data_class::text, data_class::binary}) {
    auto data = test::make_data(cls, 128 * 1024);
    std::vector<std::byte> a(data.size()), b(data.size());
    auto ra = ws.compress(s_, test::contiguous(data), a);
    auto rb = ws.compress(s_, test::scatter(data), b);
    ASSERT_EQ(ra.st, status::ok);
    ASSERT_EQ(rb.st, status::ok);
    a.resize(ra.size);
    b.resize(rb.size);
    EXPECT_TRUE(a == b) << test::name(cls);
  }
}

// A payload depends on the record alone, not on what the context compressed before or on the
// prior contents of its working memory (ISA-L once read its level buffer before writing it,
// which made ratios vary from run to run).
TEST_P(every_codec, payload_depends_on_the_record_alone) {
  auto a = test::make_data(data_class::text, 128 * 1024);
  auto b = test::make_data(data_class::binary, 128 * 1024);
  // Different garbage in each context's fresh memory (glibc fills new allocations with it; under
  // ASan, which ignores this, its own malloc fill plays the same role).
  mallopt(M_MMAP_THRESHOLD, 64 << 20);  // large areas from the heap, so they get the fill too
  mallopt(M_PERTURB, 0xA5);
  auto fresh = make_context(s_);
  mallopt(M_PERTURB, 0x3C);
  auto used = make_context(s_);
  mallopt(M_PERTURB, 0);
  std::vector<std::byte> pa(a.size()), pb(a.size()), pa2(a.size());
  auto ra = fresh->compress(test::contiguous(a), pa);
  ASSERT_EQ(used->compress(test::contiguous(b), pb).st, status::ok);
  auto ra2 = used->compress(test::contiguous(a), pa2);
  ASSERT_EQ(ra.st, status::ok);
  ASSERT_EQ(ra2.st, status::ok);
  pa.resize(ra.size);
  pa2.resize(ra2.size);
  EXPECT_TRUE(pa == pa2);
}

INSTANTIATE_TEST_SUITE_P(levels, every_codec, ::testing::ValuesIn(all_level_names()),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

TEST(spec, names_round_trip_and_bad_names_are_refused) {
  for (const auto& n : all_level_names()) {
    auto s = parse_spec(n);
    ASSERT_TRUE(s) << n;
    EXPECT_EQ(parse_spec(to_string(*s)), s) << n;
  }
  EXPECT_EQ(parse_spec("gzip")->level, 6);
  EXPECT_EQ(parse_spec("gzip-1")->producer, engine::isal);
  EXPECT_EQ(parse_spec("gzip-4")->producer, engine::libdeflate);
  EXPECT_EQ(parse_spec("zstd")->level, 3);
  EXPECT_EQ(parse_spec("zstd-fast-7")->level, -7);
  for (const char* bad : {"", "gzip-0", "gzip-13", "gzip-", "gzip-x", "zstd-0", "zstd-23", "zstd-fast-0",
                          "zstd-fast-101", "lz4-2", "lz4hc-13", "zlib-10", "brotli", "gzip-6 ", "GZIP-6"})
    EXPECT_FALSE(parse_spec(bad)) << bad;
  EXPECT_THROW((void)make_context(spec{payload_format::gzip, engine::zlib, 42}), std::invalid_argument);
}

// gzip records are standard RFC 1952 members: zlib's inflate and gzip(1) decode them.
TEST(gzip_payload, is_a_standard_gzip_member) {
  auto data = test::make_data(data_class::text, 128 * 1024);
  for (const char* name : {"gzip-1", "gzip-3", "gzip-6", "gzip-12", "zlib-6", "libdeflate-1"}) {
    SCOPED_TRACE(name);
    workspace ws;
    std::vector<std::byte> out(data.size());
    auto r = ws.compress(*parse_spec(name), test::contiguous(data), out);
    ASSERT_EQ(r.st, status::ok);

    z_stream z{};
    ASSERT_EQ(inflateInit2(&z, 15 + 16), Z_OK);
    std::vector<std::byte> back(data.size() + 16);
    z.next_in = reinterpret_cast<Bytef*>(out.data());
    z.avail_in = static_cast<uInt>(r.size);
    z.next_out = reinterpret_cast<Bytef*>(back.data());
    z.avail_out = static_cast<uInt>(back.size());
    EXPECT_EQ(inflate(&z, Z_FINISH), Z_STREAM_END);
    EXPECT_EQ(z.total_out, data.size());
    EXPECT_EQ(z.avail_in, 0u);
    inflateEnd(&z);
    back.resize(data.size());
    EXPECT_TRUE(back == data);

    char path[] = "/tmp/qzfs-gzip-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, out.data(), r.size), static_cast<ssize_t>(r.size));
    close(fd);
    FILE* p = popen(("gzip -dc < " + std::string(path)).c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::vector<std::byte> via_gzip(data.size() + 1);
    std::size_t got = fread(via_gzip.data(), 1, via_gzip.size(), p);
    EXPECT_EQ(pclose(p), 0) << "gzip -d refused the payload";
    unlink(path);
    via_gzip.resize(got);
    EXPECT_TRUE(via_gzip == data);
  }
}

TEST(zstd_payload, is_a_standard_zstd_frame) {
  auto data = test::make_data(data_class::text, 100000);
  workspace ws;
  std::vector<std::byte> out(data.size());
  auto r = ws.compress(*parse_spec("zstd-3"), test::scatter(data), out);
  ASSERT_EQ(r.st, status::ok);
  char path[] = "/tmp/qzfs-zstd-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, out.data(), r.size), static_cast<ssize_t>(r.size));
  close(fd);
  FILE* p = popen(("zstd -dc < " + std::string(path)).c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::vector<std::byte> back(data.size() + 1);
  std::size_t got = fread(back.data(), 1, back.size(), p);
  EXPECT_EQ(pclose(p), 0) << "zstd -d refused the payload";
  unlink(path);
  back.resize(got);
  EXPECT_TRUE(back == data);
}

TEST(context, refuses_input_over_its_maximum) {
  auto c = make_context(*parse_spec("lz4"), 4096);
  auto data = test::make_data(data_class::text, 4097);
  std::vector<std::byte> out(8192);
  EXPECT_EQ(c->compress(test::contiguous(data), out).st, status::error);
}

}  // namespace
}  // namespace qzfs::codec
