// The compression service engine: policies, the compressibility checker on real data classes,
// the result cap, holes, and per-file learning.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "qzfs/codec/workspace.h"
#include "qzfs/engine/engine.h"
#include "qzfs/offload/scheduler.h"
#include "test_data.h"

namespace qzfs::engine {
namespace {

using test::data_class;

std::vector<std::byte> run_tool(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  std::vector<std::byte> out;
  std::vector<std::byte> buf(65536);
  for (std::size_t n; p && (n = fread(buf.data(), 1, buf.size(), p)) > 0;)
    out.insert(out.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
  if (p) {
    EXPECT_EQ(pclose(p), 0) << cmd;
  }
  return out;
}

// Already-compressed data made by Debian's own tools from real text, and the man pages'
// .gz files Debian ships.
std::vector<std::byte> compressed_by(const std::string& tool) {
  const std::string src = "/usr/share/common-licenses/GPL-3 /usr/share/common-licenses/Apache-2.0 "
                          "/usr/share/common-licenses/GPL-2 /usr/share/common-licenses/LGPL-2.1 " +
                          std::filesystem::read_symlink("/proc/self/exe").string();  // this test binary
  return test::fill_from(run_tool("cat " + src + " | head -c 3000000 | " + tool), 128 * 1024);
}

std::vector<std::byte> shipped_gz() {
  std::vector<std::byte> all;
  for (auto& e : std::filesystem::recursive_directory_iterator("/usr/share/man")) {
    if (e.path().extension() != ".gz" || !e.is_regular_file()) continue;
    auto f = test::read_file(e.path());
    all.insert(all.end(), f.begin(), f.end());
    if (all.size() >= 128 * 1024) break;
  }
  all.resize(std::min<std::size_t>(all.size(), 128 * 1024));
  return all;
}

// PNG wallpapers from Debian's sway-backgrounds package (installed by scripts/setup.sh).
std::vector<std::byte> shipped_png() {
  std::vector<std::byte> all;
  const std::filesystem::path dir = "/usr/share/backgrounds/sway";
  EXPECT_TRUE(std::filesystem::is_directory(dir)) << "install sway-backgrounds (scripts/setup.sh)";
  if (!std::filesystem::is_directory(dir)) return all;
  for (auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".png") continue;
    auto f = test::read_file(e.path());
    // Past the PNG header and palette: the deflate-compressed image data.
    all.insert(all.end(), f.begin() + std::min<std::size_t>(f.size(), 4096), f.end());
    if (all.size() >= 128 * 1024) break;
  }
  all.resize(std::min<std::size_t>(all.size(), 128 * 1024));
  return all;
}

// Uniform bytes over `values` distinct values: weak data that passes the checker and still
// does not save 10% (200 values: 7.64 bits a byte).
std::vector<std::byte> narrow_random(std::size_t n, unsigned values, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> v(n);
  for (auto& b : v) b = std::byte(rng() % values);
  return v;
}

compressibility verdict_of(std::vector<std::byte>& d, bool scattered = false) {
  auto iov = scattered ? test::scatter(d) : test::contiguous(d);
  return sample(iov).verdict;
}

TEST(checker, zeros) {
  std::vector<std::byte> z(128 * 1024);
  EXPECT_TRUE(is_zero(test::scatter(z)));
  z[128 * 1024 - 1] = std::byte{1};
  EXPECT_FALSE(is_zero(test::contiguous(z)));
  z[128 * 1024 - 1] = std::byte{0};
  z[0] = std::byte{1};
  EXPECT_FALSE(is_zero(test::scatter(z)));
  EXPECT_TRUE(is_zero({}));
}


// The documented rule, byte by byte: 16 bytes from every 256 of the record (all of it below
// 16 KiB). The checker's fast path must look at exactly these bytes, however the record is cut.
TEST(checker, samples_exactly_the_documented_bytes) {
  for (std::size_t n : {std::size_t{100}, std::size_t{16383}, std::size_t{16384}, std::size_t{128 * 1024 + 77}}) {
    for (auto cls : {data_class::text, data_class::binary, data_class::random}) {
      auto d = test::make_data(cls, n);
      std::array<std::uint32_t, 256> hist{};
      std::uint32_t sampled = 0;
      for (std::size_t i = 0; i < n; ++i) {
        if (n < 16384 || i % 256 < 16) {
          ++hist[static_cast<unsigned char>(d[i])];
          ++sampled;
        }
      }
      double h = 0;
      unsigned set = 0;
      for (auto c : hist) {
        if (c == 0) continue;
        ++set;
        h -= static_cast<double>(c) / sampled * std::log2(static_cast<double>(c) / sampled);
      }
      for (bool sc : {false, true}) {
        auto iov = sc ? test::scatter(d) : test::contiguous(d);
        const auto r = sample(iov);
        EXPECT_EQ(r.sampled, sampled) << n << (sc ? " scattered" : "");
        EXPECT_EQ(r.byte_set, set) << n << (sc ? " scattered" : "");
        EXPECT_NEAR(r.entropy_bits, h, 1e-9) << n << (sc ? " scattered" : "");
      }
    }
  }
}
TEST(checker, judges_real_data_classes) {
  const std::size_t n = 128 * 1024;
  auto text = test::make_data(data_class::text, n);
  auto bin = test::make_data(data_class::binary, n);
  auto rnd = test::make_data(data_class::random, n);
  auto gz = compressed_by("gzip -6"), xz = compressed_by("xz -6"), zst = compressed_by("zstd -3"), man = shipped_gz(),
       png = shipped_png();
  ASSERT_EQ(png.size(), n);
  ASSERT_EQ(gz.size(), n);
  ASSERT_EQ(xz.size(), n);
  ASSERT_EQ(man.size(), n);
  for (bool sc : {false, true}) {
    EXPECT_EQ(verdict_of(text, sc), compressibility::compressible);
    EXPECT_NE(verdict_of(bin, sc), compressibility::incompressible);
    EXPECT_EQ(verdict_of(rnd, sc), compressibility::incompressible);
    EXPECT_EQ(verdict_of(gz, sc), compressibility::incompressible);
    EXPECT_EQ(verdict_of(xz, sc), compressibility::incompressible);
    EXPECT_EQ(verdict_of(zst, sc), compressibility::incompressible);
    EXPECT_EQ(verdict_of(man, sc), compressibility::incompressible);
    EXPECT_EQ(verdict_of(png, sc), compressibility::incompressible);
  }
  // Records that mix classes and would still save 10% must not be skipped.
  auto half = [&](const std::vector<std::byte>& a, const std::vector<std::byte>& b) {
    std::vector<std::byte> v(n);
    std::memcpy(v.data(), a.data(), n / 2);
    std::memcpy(v.data() + n / 2, b.data(), n / 2);
    return v;
  };
  auto text_rnd = half(text, rnd), rnd_text = half(rnd, text), bin_gz = half(bin, gz);
  std::vector<std::byte> text_zeros = half(text, std::vector<std::byte>(n));
  EXPECT_NE(verdict_of(text_rnd), compressibility::incompressible);
  EXPECT_NE(verdict_of(rnd_text), compressibility::incompressible);
  EXPECT_NE(verdict_of(text_zeros), compressibility::incompressible);
  EXPECT_NE(verdict_of(bin_gz), compressibility::incompressible);
  // And the checker agrees with the codecs: every record it skips really does not save 10%.
  codec::workspace ws;
  for (auto* d : {&rnd, &gz, &xz, &zst, &man, &png}) {
    std::vector<std::byte> out(n * 9 / 10);
    EXPECT_EQ(ws.compress(codec::spec::zstd(19), test::contiguous(*d), out).st, codec::status::does_not_fit);
  }
}

TEST(policy, names_parse_and_refuse) {
  for (const char* ok : {"off", "lz4", "gzip", "gzip-1", "gzip-9", "gzip-12", "zstd", "zstd-1", "zstd-19", "zstd-fast-3", "auto"}) {
    auto p = parse_policy(ok);
    ASSERT_TRUE(p) << ok;
    EXPECT_EQ(to_string(*p), ok);
  }
  for (const char* bad : {"", "gzip-0", "gzip-13", "zstd-20", "brotli", "lz4hc-9", "none", "zlib-6", "Auto"})
    EXPECT_FALSE(parse_policy(bad)) << bad;
}

// One meaning per name (docs/decisions/0008): a policy's gzip and zstd are the codec table's, as
// in `qzfs bench --codecs`; gzip alone is gzip-1 in both.
TEST(policy, codec_names_mean_what_they_mean_in_bench) {
  for (const char* n : {"lz4", "gzip", "gzip-1", "gzip-6", "gzip-12", "zstd", "zstd-1", "zstd-19", "zstd-fast-3"}) {
    auto p = parse_policy(n);
    ASSERT_TRUE(p) << n;
    EXPECT_EQ(spec_of(*p), *codec::parse_spec(n)) << n;
  }
  EXPECT_EQ(spec_of(*parse_policy("gzip")), codec::spec::gzip(1));
  EXPECT_EQ(spec_of(*parse_policy("zstd")), codec::spec::zstd(3));
  EXPECT_EQ(spec_of(*parse_policy("off")), codec::spec::none());
  EXPECT_EQ(describe(*parse_policy("gzip")), "gzip, which is gzip-1");
  EXPECT_EQ(describe(*parse_policy("zstd-5")), "zstd-5");
  EXPECT_NE(policy_help().find("gzip = gzip-1"), std::string::npos) << policy_help();
}

struct fixture {
  offload::cpu_backend cpu{{.workers = 2}};
  offload::scheduler sched{cpu, nullptr};
};

struct records {
  std::vector<std::vector<std::byte>> data, payload;
  std::vector<std::vector<iovec>> iov;
  std::vector<record> recs;
  void add(std::vector<std::byte> d) { data.push_back(std::move(d)); }
  std::span<record> build() {
    payload.clear();
    iov.clear();
    recs.clear();
    for (auto& d : data) {
      payload.emplace_back(d.size());
      iov.push_back(test::scatter(d));
    }
    for (std::size_t i = 0; i < data.size(); ++i) recs.push_back({.in = iov[i], .payload = payload[i]});
    return recs;
  }
  void check_round_trip() {
    codec::workspace ws;
    for (std::size_t i = 0; i < recs.size(); ++i) {
      if (recs[i].result != outcome::compressed) continue;
      std::vector<std::byte> back(data[i].size());
      ASSERT_EQ(ws.decompress(recs[i].spec.format, std::span(payload[i]).first(recs[i].payload_size), back),
                codec::status::ok);
      ASSERT_TRUE(back == data[i]) << i;
      ASSERT_LE(recs[i].payload_size, data[i].size() * 9 / 10) << "the result cap was not applied";
    }
  }
};

TEST(engine, every_policy_round_trips_and_skips_what_does_not_pay) {
  for (const char* pol : {"off", "lz4", "gzip", "gzip-6", "zstd", "zstd-fast-1", "auto"}) {
    SCOPED_TRACE(pol);
    fixture f;
    engine e(f.sched, {.pol = *parse_policy(pol)});
    records r;
    r.add(test::make_data(data_class::text, 128 * 1024));
    r.add(std::vector<std::byte>(128 * 1024));  // zeros
    r.add(test::make_data(data_class::random, 128 * 1024));
    r.add(test::make_data(data_class::binary, 128 * 1024));
    r.add(test::make_data(data_class::text, 1000));  // a file's short tail
    r.add(narrow_random(128 * 1024, 200, 3));        // passes the checker, does not save 10%
    auto batch = r.build();
    e.compress(batch);
    r.check_round_trip();
    EXPECT_EQ(batch[1].result, outcome::hole);
    if (std::string(pol) == "off") {
      for (std::size_t i : {0u, 2u, 3u, 4u, 5u}) EXPECT_EQ(batch[i].result, outcome::raw);
      EXPECT_EQ(f.cpu.stats().submitted, 0u);
      continue;
    }
    EXPECT_EQ(batch[0].result, outcome::compressed);
    EXPECT_EQ(batch[2].result, outcome::raw);
    EXPECT_EQ(batch[2].reason, record::why::checker) << "random data must be skipped before any codec runs";
    EXPECT_EQ(batch[5].result, outcome::raw);
    EXPECT_EQ(batch[5].reason, record::why::cap);
    EXPECT_EQ(f.cpu.stats().submitted, 4u) << "zeros and random never reach a codec";
    auto s = e.stats();
    EXPECT_EQ(s.records, 6u);
    EXPECT_EQ(s.holes + s.raw + s.compressed, 6u);
  }
}

TEST(engine, without_the_checker_random_data_costs_a_full_compression) {
  fixture f;
  engine e(f.sched, {.pol = *parse_policy("gzip-6"), .checker = false});
  records r;
  r.add(test::make_data(data_class::random, 128 * 1024));
  auto b = r.build();
  e.compress(b);
  EXPECT_EQ(b[0].result, outcome::raw);
  EXPECT_EQ(b[0].reason, record::why::cap);
  EXPECT_EQ(f.cpu.stats().submitted, 1u);
}

// Eight measurements of 1000-byte records for each of auto's candidates (lz4, gzip-1, zstd-1,
// zstd-3): {bytes stored, ns} each; the file's estimates when `fl` is given.
void feed(engine& e, const std::array<std::pair<std::size_t, std::uint64_t>, 4>& costs, file_learning* fl = nullptr) {
  const std::array<codec::spec, 4> specs{codec::spec::lz4(), codec::spec::gzip(1), codec::spec::zstd(1), codec::spec::zstd(3)};
  for (int i = 0; i < 8; ++i)
    for (std::size_t k = 0; k < 4; ++k) e.note_cost(compressibility::compressible, specs[k], 1000, costs[k].first, costs[k].second, fl);
}

// auto: gzip-1 when an accelerator is up; otherwise each candidate is tried once, then the one
// whose measured cost (CPU per byte + what its stored bytes are worth) is lowest, with every
// 16th record trying the candidate measured least recently; classes are measured apart.
TEST(engine, auto_picks_the_cheapest_measured_codec_and_keeps_measuring) {
  fixture f;
  engine e(f.sched, {.pol = *parse_policy("auto")});
  std::set<std::string> first;
  for (int i = 0; i < 4; ++i) first.insert(codec::to_string(e.choose(compressibility::compressible)));
  EXPECT_EQ(first, (std::set<std::string>{"lz4", "gzip-1", "zstd-1", "zstd-3"})) << "each candidate is tried first";
  // Measurements: lz4 fast but large, zstd-3 small but slow, gzip-1 and zstd-1 in between with
  // zstd-1 the cheapest at 20 ns per stored byte.
  feed(e, {{{450, 1400}, {330, 2900}, {300, 2500}, {280, 5500}}});
  std::map<std::string, int> picks;
  for (int i = 0; i < 160; ++i) ++picks[codec::to_string(e.choose(compressibility::compressible))];
  EXPECT_EQ(picks["zstd-1"], 150) << "the cheapest, but for every 16th record";
  EXPECT_EQ(picks["lz4"] + picks["gzip-1"] + picks["zstd-3"], 10);
  EXPECT_GE(std::min({picks["lz4"], picks["gzip-1"], picks["zstd-3"]}), 3) << "each other candidate stays measured";
  // The data changes: zstd-1 turns out costly; the estimates follow within a few records.
  for (int i = 0; i < 12; ++i) e.note_cost(compressibility::compressible, codec::spec::zstd(1), 1000, 900, 9000);
  EXPECT_EQ(e.choose(compressibility::compressible), codec::spec::gzip(1));
  // Weak records are measured apart: nothing is known of them yet.
  const auto weak = e.auto_estimates(compressibility::weak);
  for (const auto& w : weak) EXPECT_EQ(w.samples, 0u);

  offload::accel_backend accel(offload::make_software_device(), {});
  offload::scheduler with_accel(f.cpu, &accel);
  engine e2(with_accel, {.pol = *parse_policy("auto")});
  EXPECT_EQ(e2.choose(compressibility::compressible), codec::spec::gzip(1));
}

// A file past its first 8 records decides by its own estimates (a large file is one kind of
// data), measured on its own records; the mount's estimates serve small files and first records.
TEST(engine, auto_lets_a_large_file_decide_by_its_own_records) {
  fixture f;
  engine e(f.sched, {.pol = *parse_policy("auto")});
  const auto cc = compressibility::compressible;
  // The mount: zstd-1 cheapest.
  feed(e, {{{450, 1400}, {330, 2900}, {300, 2500}, {280, 5500}}});
  file_learning fl;
  for (int i = 0; i < 8; ++i) EXPECT_EQ(e.choose(cc, &fl), codec::spec::zstd(1)) << "first records: the mount's choice";
  // Its next records try each candidate on the file itself.
  std::set<std::string> tried;
  for (int i = 0; i < 4; ++i) tried.insert(codec::to_string(e.choose(cc, &fl)));
  EXPECT_EQ(tried, (std::set<std::string>{"lz4", "gzip-1", "zstd-1", "zstd-3"}));
  // This file is binary-like: lz4 barely compresses it, zstd-3 is worth its time.
  feed(e, {{{900, 1400}, {700, 4000}, {650, 3500}, {500, 5000}}}, &fl);
  std::map<std::string, int> picks;
  for (int i = 0; i < 32; ++i) ++picks[codec::to_string(e.choose(cc, &fl))];
  EXPECT_EQ(picks["zstd-3"], 30) << "the file's cheapest, but for every 16th record";
  // The mount's estimates were left as they were: another file still gets zstd-1.
  EXPECT_EQ(e.choose(cc), codec::spec::zstd(1));
}

// While the CPU workers idle, a stored byte is worth more CPU: auto moves to a denser candidate
// with the same estimates (at most 5x the busy weight).
TEST(engine, auto_values_stored_bytes_more_while_the_workers_idle) {
  fixture f;
  engine e(f.sched, {.pol = *parse_policy("auto")});
  const auto cc = compressibility::compressible;
  feed(e, {{{450, 1400}, {330, 2900}, {300, 2500}, {250, 5500}}});
  EXPECT_DOUBLE_EQ(e.stored_weight(), 20.0) << "busy until measured otherwise";
  for (int i = 0; i < 6; ++i) (void)e.choose(cc);
  EXPECT_EQ(e.choose(cc), codec::spec::zstd(1));
  // Idle workers for a while: the weight climbs to its cap.
  for (int i = 0; i < 6; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(110));
    (void)e.stored_weight();
  }
  EXPECT_GT(e.stored_weight(), 60.0);
  EXPECT_LE(e.stored_weight(), 100.0);
  std::map<std::string, int> picks;
  for (int i = 0; i < 15; ++i) ++picks[codec::to_string(e.choose(cc))];
  EXPECT_GE(picks["zstd-3"], 14) << "denser once CPU is cheap";
}

// On real records the engine measures every candidate by itself (CPU workers' times) and settles
// on one: the estimates it keeps are what the records cost.
TEST(engine, auto_measures_real_records_through_the_workers) {
  fixture f;
  engine e(f.sched, {.pol = *parse_policy("auto")});
  records r;
  for (int i = 0; i < 96; ++i) {
    auto d = test::make_data(data_class::text, 128 * 1024, 200 + i);
    d[i] = std::byte(i);
    r.add(std::move(d));
  }
  auto b = r.build();
  for (auto& rec : b) e.compress({&rec, 1});
  for (const auto& est : e.auto_estimates(compressibility::compressible)) {
    EXPECT_GT(est.samples, 0u) << codec::to_string(est.spec);
    EXPECT_GT(est.ns_per_byte, 0.0) << codec::to_string(est.spec);
    EXPECT_GT(est.stored_per_byte, 0.05) << codec::to_string(est.spec);
    EXPECT_LT(est.stored_per_byte, 0.9) << codec::to_string(est.spec);
  }
  for (auto& rec : b) {
    ASSERT_EQ(rec.result, outcome::compressed);
    const auto name = codec::to_string(rec.spec);
    EXPECT_TRUE(name == "lz4" || name == "gzip-1" || name == "zstd-1" || name == "zstd-3") << name;
  }
}

TEST(engine, learns_per_file_and_never_gives_up) {
  fixture f;
  engine e(f.sched, {.pol = *parse_policy("gzip-6")});
  file_learning fl;
  // 40 records that pass the checker but never save 10%.
  records weak;
  for (int i = 0; i < 40; ++i) weak.add(narrow_random(128 * 1024, 200, 100 + i));
  for (auto& rec : weak.build()) e.compress({&rec, 1}, &fl);
  EXPECT_EQ(fl.raw_cap.load(), file_learning::probe_after) << "full-cost attempts before learning";
  EXPECT_EQ(fl.raw_probe.load(), 40u - file_learning::probe_after) << "then the lz4 probe says no cheaply";
  const auto cpu_jobs = f.cpu.stats().submitted;
  EXPECT_EQ(cpu_jobs, file_learning::probe_after);
  // The file turns compressible: the first such record is compressed at full strength.
  records text;
  for (int i = 0; i < 3; ++i) text.add(test::make_data(data_class::text, 128 * 1024, i));
  auto tb = text.build();
  e.compress(tb.first(1), &fl);
  EXPECT_EQ(tb[0].result, outcome::compressed);
  EXPECT_EQ(tb[0].spec, codec::spec::gzip(6));
  EXPECT_EQ(fl.streak.load(), 0u);
  e.compress(tb.subspan(1), &fl);
  EXPECT_EQ(fl.probes.load(), 40u - file_learning::probe_after + 1) << "no probe once records fit again";
  text.check_round_trip();
  EXPECT_EQ(fl.records.load(), 43u);
  EXPECT_EQ(fl.compressed.load(), 3u);
}

}  // namespace
}  // namespace qzfs::engine
