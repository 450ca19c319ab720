// Round trips for every codec and level, sizes around page and record boundaries, contiguous
// and scattered input, four data classes; the capacity rule; hostile input to every decoder.
#include <gtest/gtest.h>
#include <malloc.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "qzfs/codec/codec.h"
#include "qzfs/codec/table.h"
#include "qzfs/codec/workspace.h"
#include "test_data.h"

namespace qzfs::codec {
namespace {

using test::data_class;

// The levels of a name worth a round trip: all of them for up to 24, else the ends, the default
// and a spread between.
std::vector<int> levels_to_test(level_range r, int def) {
  std::vector<int> v;
  if (r.max - r.min < 24) {
    for (int l = r.min; l <= r.max; ++l) v.push_back(l);
    return v;
  }
  v = {r.min, def, r.max};
  for (int k = 1; k < 5; ++k) v.push_back(r.min + (r.max - r.min) * k / 5);
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

// Every spec the table offers software for: each codec name and each implementation's own name
// at its levels (min, default and max always among them), once each.
std::vector<spec> table_specs() {
  std::vector<spec> v;
  auto add = [&](spec s) {
    if (std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
  };
  for (const auto& c : codecs()) {
    for (int l : levels_to_test(c.levels(), c.default_level)) add(spec::of(c.id, l));
    for (const auto& i : c.impls) {
      if (i.name.empty() || i.make == nullptr) continue;
      for (int l : levels_to_test(i.levels, i.default_level)) add(spec{c.id, i.id, i.sign * l});
    }
  }
  return v;
}

std::string test_name(const spec& s) {
  std::string n = to_string(s);
  for (auto& ch : n)
    if (ch == '-') ch = '_';
  return n;
}

constexpr std::size_t sizes[] = {0, 1, 4095, 4096, 4097, 128 * 1024, 1024 * 1024};
constexpr data_class classes[] = {data_class::text, data_class::binary, data_class::zeros, data_class::random};
constexpr std::byte canary{0xC3};

class every_codec : public ::testing::TestWithParam<spec> {
 protected:
  spec s_ = GetParam();
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

INSTANTIATE_TEST_SUITE_P(levels, every_codec, ::testing::ValuesIn(table_specs()),
                         [](const auto& info) { return test_name(info.param); });

// The table's own rules, row by row.
TEST(table, every_row_is_complete_and_its_decoder_can_be_made) {
  ASSERT_EQ(codecs().size(), payload_format_count);
  for (std::size_t f = 0; f < codecs().size(); ++f) {
    const auto& c = codecs()[f];
    SCOPED_TRACE(std::string(c.name));
    EXPECT_EQ(static_cast<std::size_t>(c.id), f);
    EXPECT_EQ(find(c.id), &c);
    EXPECT_EQ(to_string(c.id), c.name);
    EXPECT_TRUE(c.levels().contains(c.default_level));
    EXPECT_TRUE(is_valid(spec::of(c.decoder)));
    EXPECT_EQ(spec::of(c.decoder).format, c.id);
    for (const auto& i : c.impls) {
      if (i.name.empty()) continue;
      EXPECT_NE(find(i.id), nullptr);
      EXPECT_EQ(spec::of(i.id).format, c.id) << i.name;
    }
  }
  for (std::uint8_t e = 0; e < producer_count; ++e) EXPECT_NE(find(static_cast<producer_id>(e)), nullptr) << int(e);
  EXPECT_EQ(find(static_cast<payload_format>(payload_format_count)), nullptr);
  EXPECT_EQ(find(static_cast<producer_id>(producer_count)), nullptr);
}

TEST(table, zstd_levels_are_the_librarys) {
  const auto& z = *find(payload_format::zstd);
  EXPECT_EQ(z.levels().max, ZSTD_maxCLevel());
  for (const auto& i : z.impls)
    if (!i.name.empty() && i.sign < 0) {
      EXPECT_GE(-i.levels.max, ZSTD_minCLevel()) << i.name;
    }
}

// parse(name(spec)) == spec for every name and level of every row; each name's canonical form
// parses to the same spec; the name alone is its default.
TEST(spec, every_name_and_level_of_the_table_round_trips) {
  std::size_t checked = 0;
  auto check = [&](const std::string& name, const spec& want) {
    SCOPED_TRACE(name);
    auto s = parse_spec(name);
    ASSERT_TRUE(s);
    EXPECT_EQ(*s, want);
    EXPECT_TRUE(is_valid(*s));
    EXPECT_EQ(parse_spec(to_string(*s)), s) << to_string(*s);
    EXPECT_EQ(parse_spec_or_throw(name), want);
    ++checked;
  };
  for (const auto& c : codecs()) {
    const std::string n(c.name);
    check(n, spec::of(c.id));
    EXPECT_EQ(spec::of(c.id).level, c.default_level) << n;
    if (!c.alias.empty()) check(std::string(c.alias), spec::of(c.id));
    if (!c.levels().single())
      for (int l = c.levels().min; l <= c.levels().max; ++l) {
        check(n + "-" + std::to_string(l), spec::of(c.id, l));
        EXPECT_EQ(to_string(spec::of(c.id, l)), n + "-" + std::to_string(l)) << "the codec's name is canonical";
      }
    for (const auto& i : c.impls) {
      if (i.name.empty() || i.make == nullptr) continue;
      const std::string in(i.name);
      check(in, spec{c.id, i.id, i.sign * i.default_level});
      if (!i.levels.single())
        for (int l = i.levels.min; l <= i.levels.max; ++l) check(in + "-" + std::to_string(l), spec{c.id, i.id, i.sign * l});
    }
  }
  EXPECT_GT(checked, 150u);
}

// Unknown names and levels: refused, with a message naming the name and what it takes.
TEST(spec, unknown_names_and_levels_are_refused_with_clear_messages) {
  auto message = [](const std::string& name) -> std::string {
    EXPECT_FALSE(parse_spec(name)) << name;
    try {
      (void)parse_spec_or_throw(name);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    ADD_FAILURE() << name << " was accepted";
    return {};
  };
  for (const auto& c : codecs()) {
    const std::string n(c.name);
    const auto r = c.levels();
    for (int l : {r.min - 1, r.max + 1}) {
      if (l < 0) continue;  // "gzip--1" is no level at all, below
      const std::string bad = n + "-" + std::to_string(l);
      const auto m = message(bad);
      EXPECT_NE(m.find("unknown codec '" + bad + "'"), std::string::npos) << m;
      const std::string what = r.single() ? n + " takes no level"
                                          : "levels " + std::to_string(r.min) + "-" + std::to_string(r.max);
      EXPECT_NE(m.find(what), std::string::npos) << m;
    }
    for (const auto& i : c.impls) {
      if (i.name.empty()) continue;
      const std::string in(i.name);
      if (i.make == nullptr) {  // the accelerator's id: not a codec to choose
        for (const std::string& bad : {in, in + "-1"}) {
          const auto m = message(bad);
          EXPECT_NE(m.find("choose " + n + "-N"), std::string::npos) << m;
        }
        continue;
      }
      const std::string bad = in + "-" + std::to_string(i.levels.max + 1);
      const auto m = message(bad);
      EXPECT_NE(m.find("unknown codec '" + bad + "'"), std::string::npos) << m;
      if (!i.levels.single()) {
        EXPECT_NE(m.find(std::to_string(i.levels.max)), std::string::npos) << m;
      }
    }
  }
  for (const char* bad : {"", "gzip-0", "gzip-13", "gzip-", "gzip-x", "gzip--1", "zstd-0", "zstd-23", "zstd-fast-0",
                          "zstd-fast-101", "lz4-1", "lz4-2", "lz4hc-13", "zlib-10", "isal-0", "isal-4", "libdeflate-13",
                          "none-0", "off-0", "qat", "qat-gzip-1", "brotli", "gzip-6 ", "GZIP-6", "gzip-99999999999"})
    (void)message(bad);
  EXPECT_NE(message("brotli").find("known: none"), std::string::npos);
  EXPECT_NE(message("gzip-x").find("gzip takes levels 1-12 (gzip = gzip-1)"), std::string::npos);
  EXPECT_NE(message("zstd-fast-x").find("zstd-fast takes levels 1-100"), std::string::npos);
  EXPECT_THROW((void)make_context(spec{payload_format::gzip, producer_id::zlib, 42}), std::invalid_argument);
  EXPECT_THROW((void)make_context(spec{payload_format::zstd, producer_id::zlib, 6}), std::invalid_argument);
  EXPECT_THROW((void)make_context(spec::of(producer_id::qat, 1)), std::invalid_argument);
  EXPECT_FALSE(is_valid(spec::gzip(13)));
  EXPECT_FALSE(is_valid(spec::zstd(0)));
}

TEST(spec, named_constructors_are_the_tables_names) {
  EXPECT_EQ(spec::gzip(), *parse_spec("gzip"));
  EXPECT_EQ(spec::gzip(), spec::gzip(1)) << "gzip alone is gzip-1 (docs/decisions/0008)";
  EXPECT_EQ(spec::gzip(1).producer, producer_id::isal);
  EXPECT_EQ(spec::gzip(3).producer, producer_id::isal);
  EXPECT_EQ(spec::gzip(4).producer, producer_id::libdeflate);
  EXPECT_EQ(spec::gzip(12), *parse_spec("gzip-12"));
  EXPECT_EQ(spec::zstd(), *parse_spec("zstd-3"));
  EXPECT_EQ(spec::zstd(19), *parse_spec("zstd-19"));
  EXPECT_EQ(spec::zstd(-5), *parse_spec("zstd-fast-5"));
  EXPECT_EQ(spec::lz4(), *parse_spec("lz4"));
  EXPECT_EQ(spec::lz4hc(9), *parse_spec("lz4hc"));
  EXPECT_EQ(spec::zlib(6), *parse_spec("zlib"));
  EXPECT_EQ(spec::none(), *parse_spec("off"));
  EXPECT_EQ(spec::of(producer_id::libdeflate), *parse_spec("libdeflate-6"));
  EXPECT_EQ(to_string(spec::of(producer_id::libdeflate, 2)), "libdeflate-2");
  EXPECT_EQ(to_string(spec::of(producer_id::libdeflate, 6)), "gzip-6");
  EXPECT_EQ(to_string(spec::of(producer_id::isal, 2)), "gzip-2");
  EXPECT_EQ(to_string(producer_id::qat), "qat");
  EXPECT_EQ(default_levels(), "gzip = gzip-1, zstd = zstd-3");
}

TEST(spec, help_names_every_row_and_what_each_name_alone_means) {
  const std::string h = spec_help();
  for (const auto& c : codecs()) {
    EXPECT_NE(h.find(std::string(c.name)), std::string::npos) << h;
    if (!c.levels().single()) {
      EXPECT_NE(h.find(std::string(c.name) + " = " + to_string(spec::of(c.id))), std::string::npos) << h;
    }
    for (const auto& i : c.impls)
      if (!i.name.empty() && i.make != nullptr) {
        EXPECT_NE(h.find(std::string(i.name)), std::string::npos) << h;
      }
  }
  EXPECT_NE(h.find("gzip = gzip-1"), std::string::npos) << h;
}

TEST(spec, names_round_trip_and_bad_names_are_refused) {
  for (const auto& s : table_specs()) {
    EXPECT_EQ(parse_spec(to_string(s)), s) << to_string(s);
  }
  EXPECT_EQ(parse_spec("gzip")->level, 1);
  EXPECT_EQ(parse_spec("gzip-1")->producer, producer_id::isal);
  EXPECT_EQ(parse_spec("gzip-4")->producer, producer_id::libdeflate);
  EXPECT_EQ(parse_spec("zstd")->level, 3);
  EXPECT_EQ(parse_spec("zstd-fast-7")->level, -7);
  for (const char* bad : {"", "gzip-0", "gzip-13", "gzip-", "gzip-x", "zstd-0", "zstd-23", "zstd-fast-0",
                          "zstd-fast-101", "lz4-2", "lz4hc-13", "zlib-10", "brotli", "gzip-6 ", "GZIP-6"})
    EXPECT_FALSE(parse_spec(bad)) << bad;
  EXPECT_THROW((void)make_context(spec{payload_format::gzip, producer_id::zlib, 42}), std::invalid_argument);
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
  auto r = ws.compress(spec::zstd(3), test::scatter(data), out);
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
  auto c = make_context(spec::lz4(), 4096);
  auto data = test::make_data(data_class::text, 4097);
  std::vector<std::byte> out(8192);
  EXPECT_EQ(c->compress(test::contiguous(data), out).st, status::error);
}

}  // namespace
}  // namespace qzfs::codec
