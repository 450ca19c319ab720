// Adapter cost: each qzfs codec adapter against its library called directly on the same
// contiguous records, and scattered input (32 unaligned iovecs per record) against
// contiguous. Run through bench/codec_compare.py, which prints the ratios.
//
//   codec_bench [benchmark flags] [FILE]     (FILE: real data; default corpus/sam/reads.sam)
#include <benchmark/benchmark.h>
#include <isa-l/igzip_lib.h>
#include <libdeflate.h>
#include <lz4.h>
#include <zlib.h>
#include <zstd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "qzfs/codec/codec.h"
#include "qzfs/engine/checker.h"

namespace {

constexpr std::size_t record_size = 128 * 1024;
constexpr std::size_t max_records = 64;  // 8 MiB of input per pass

struct data_set {
  std::vector<std::byte> bytes;
  std::size_t records = 0;
  std::size_t cap = record_size * 9 / 10;  // the 10% rule, as the file system applies it
};
data_set g;

void load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  g.bytes.resize(record_size * max_records);
  f.read(reinterpret_cast<char*>(g.bytes.data()), static_cast<std::streamsize>(g.bytes.size()));
  g.records = static_cast<std::size_t>(f.gcount()) / record_size;
  if (g.records == 0) throw std::runtime_error(path + " is smaller than one record");
  g.bytes.resize(g.records * record_size);
}

const std::byte* rec(std::size_t i) { return g.bytes.data() + i * record_size; }

// 32 pieces with unaligned boundaries.
std::vector<iovec> pieces(std::size_t i, unsigned n) {
  std::vector<iovec> v;
  std::size_t prev = 0;
  for (unsigned k = 1; k <= n; ++k) {
    std::size_t cut = k == n ? record_size : record_size * k / n + (k * 7) % 13;
    v.push_back({const_cast<std::byte*>(rec(i)) + prev, cut - prev});
    prev = cut;
  }
  return v;
}

// Runs `one(record_index, out) -> compressed size or 0` over every record per iteration.
void run(benchmark::State& st, const std::function<std::size_t(std::size_t, std::byte*)>& one) {
  std::vector<std::byte> out(record_size);
  std::size_t packed = 0;
  for (auto _ : st) {
    packed = 0;
    for (std::size_t i = 0; i < g.records; ++i) packed += one(i, out.data());
    benchmark::DoNotOptimize(packed);
  }
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * g.records * record_size));
  st.counters["ratio"] = packed ? static_cast<double>(g.records * record_size) / static_cast<double>(packed) : 0;
}

void adapter(benchmark::State& st, const std::string& name, unsigned scatter) {
  auto c = qzfs::codec::make_context(*qzfs::codec::parse_spec(name));
  std::vector<std::vector<iovec>> iovs;
  for (std::size_t i = 0; i < g.records; ++i) iovs.push_back(pieces(i, scatter));
  run(st, [&](std::size_t i, std::byte* out) {
    auto r = c->compress(iovs[i], std::span(out, g.cap));
    return r.st == qzfs::codec::status::ok ? r.size : 0;
  });
}

void direct_isal(benchmark::State& st, int level) {
  std::vector<std::uint8_t> lb(ISAL_DEF_LVL3_DEFAULT);
  auto z = std::make_unique<isal_zstream>();
  run(st, [&](std::size_t i, std::byte* out) -> std::size_t {
    isal_deflate_stateless_init(z.get());
    z->level = static_cast<std::uint32_t>(level);
    z->level_buf = lb.data();
    z->level_buf_size = static_cast<std::uint32_t>(lb.size());
    z->gzip_flag = IGZIP_GZIP;
    z->next_in = reinterpret_cast<std::uint8_t*>(const_cast<std::byte*>(rec(i)));
    z->avail_in = record_size;
    z->end_of_stream = 1;
    z->next_out = reinterpret_cast<std::uint8_t*>(out);
    z->avail_out = static_cast<std::uint32_t>(g.cap);
    return isal_deflate_stateless(z.get()) == COMP_OK ? z->total_out : 0;
  });
}

void direct_libdeflate(benchmark::State& st, int level) {
  auto* c = libdeflate_alloc_compressor(level);
  run(st, [&](std::size_t i, std::byte* out) { return libdeflate_gzip_compress(c, rec(i), record_size, out, g.cap); });
  libdeflate_free_compressor(c);
}

void direct_zlib(benchmark::State& st, int level) {
  z_stream z{};
  deflateInit2(&z, level, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
  run(st, [&](std::size_t i, std::byte* out) -> std::size_t {
    deflateReset(&z);
    z.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(rec(i)));
    z.avail_in = record_size;
    z.next_out = reinterpret_cast<Bytef*>(out);
    z.avail_out = static_cast<uInt>(g.cap);
    return deflate(&z, Z_FINISH) == Z_STREAM_END ? z.total_out : 0;
  });
  deflateEnd(&z);
}

void direct_zstd(benchmark::State& st, int level) {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
  run(st, [&](std::size_t i, std::byte* out) -> std::size_t {
    std::size_t n = ZSTD_compress2(c, out, g.cap, rec(i), record_size);
    return ZSTD_isError(n) ? 0 : n;
  });
  ZSTD_freeCCtx(c);
}

void direct_lz4(benchmark::State& st, int) {
  std::vector<std::byte> state(static_cast<std::size_t>(LZ4_sizeofState()));
  run(st, [&](std::size_t i, std::byte* out) -> std::size_t {
    int n = LZ4_compress_fast_extState(state.data(), reinterpret_cast<const char*>(rec(i)), reinterpret_cast<char*>(out),
                                       record_size, static_cast<int>(g.cap), 1);
    return n > 0 ? static_cast<std::size_t>(n) : 0;
  });
}

// Decompression: the adapter's decoder against the library's own call; for gzip also ISA-L's
// inflate on the same members (`isal`: which of the two decoders the store should use).
void decode(benchmark::State& st, const std::string& name, bool direct, bool isal = false) {
  auto c = qzfs::codec::make_context(*qzfs::codec::parse_spec(name));
  std::vector<std::vector<std::byte>> packed(g.records);
  for (std::size_t i = 0; i < g.records; ++i) {
    packed[i].resize(record_size);
    iovec v{const_cast<std::byte*>(rec(i)), record_size};
    auto r = c->compress(std::span(&v, 1), packed[i]);
    if (r.st != qzfs::codec::status::ok) throw std::runtime_error("corpus does not compress with " + name);
    packed[i].resize(r.size);
  }
  auto* ld = libdeflate_alloc_decompressor();
  ZSTD_DCtx* zd = ZSTD_createDCtx();
  const auto fmt = c->spec().format;
  std::vector<std::byte> out(record_size);
  for (auto _ : st) {
    for (std::size_t i = 0; i < g.records; ++i) {
      const auto& p = packed[i];
      bool ok;
      if (isal) {
        inflate_state in;
        isal_inflate_init(&in);
        in.crc_flag = ISAL_GZIP;  // parses the member's header and checks its CRC-32 and size
        in.next_in = reinterpret_cast<std::uint8_t*>(const_cast<std::byte*>(p.data()));
        in.avail_in = static_cast<std::uint32_t>(p.size());
        in.next_out = reinterpret_cast<std::uint8_t*>(out.data());
        in.avail_out = static_cast<std::uint32_t>(out.size());
        ok = isal_inflate_stateless(&in) == ISAL_DECOMP_OK && in.total_out == record_size;
      } else if (!direct) {
        ok = c->decompress(p, out) == qzfs::codec::status::ok;
      } else if (fmt == qzfs::codec::payload_format::gzip) {
        ok = libdeflate_gzip_decompress(ld, p.data(), p.size(), out.data(), out.size(), nullptr) == LIBDEFLATE_SUCCESS;
      } else if (fmt == qzfs::codec::payload_format::zstd) {
        ok = !ZSTD_isError(ZSTD_decompressDCtx(zd, out.data(), out.size(), p.data(), p.size()));
      } else {
        ok = LZ4_decompress_safe(reinterpret_cast<const char*>(p.data()), reinterpret_cast<char*>(out.data()),
                                 static_cast<int>(p.size()), static_cast<int>(out.size())) == static_cast<int>(record_size);
      }
      if (!ok) st.SkipWithError("decode failed");
      benchmark::DoNotOptimize(out.data());
    }
  }
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * g.records * record_size));
  libdeflate_free_decompressor(ld);
  ZSTD_freeDCtx(zd);
}

// The engine's checker: what it costs to look at a record before any codec runs.
void checker(benchmark::State& st, bool zeros_only) {
  std::vector<std::byte> zeros(record_size);
  for (auto _ : st) {
    for (std::size_t i = 0; i < g.records; ++i) {
      iovec v{zeros_only ? zeros.data() : const_cast<std::byte*>(rec(i)), record_size};
      if (zeros_only) {
        benchmark::DoNotOptimize(qzfs::engine::is_zero({&v, 1}));
      } else {
        benchmark::DoNotOptimize(qzfs::engine::sample({&v, 1}));
      }
    }
  }
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * g.records * record_size));
}

struct family {
  const char* name;
  int level;
  void (*direct)(benchmark::State&, int);
};
const family families[] = {
    {"gzip-1", 1, direct_isal},     {"gzip-3", 3, direct_isal}, {"gzip-6", 6, direct_libdeflate},
    {"zlib-6", 6, direct_zlib},     {"zstd-1", 1, direct_zstd}, {"zstd-3", 3, direct_zstd},
    {"lz4", 1, direct_lz4},
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  std::string path = argc > 1 ? argv[1] : "corpus/sam/reads.sam";
  try {
    load(path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "codec_bench: %s (run scripts/make-corpus.sh, or name a file)\n", e.what());
    return 2;
  }
  for (const auto& f : families) {
    std::string n = f.name;
    int level = f.level;
    auto direct = f.direct;
    benchmark::RegisterBenchmark(("compress/" + n + "/direct").c_str(), [=](benchmark::State& s) { direct(s, level); });
    benchmark::RegisterBenchmark(("compress/" + n + "/adapter").c_str(), [=](benchmark::State& s) { adapter(s, n, 1); });
    benchmark::RegisterBenchmark(("compress/" + n + "/scatter32").c_str(), [=](benchmark::State& s) { adapter(s, n, 32); });
  }
  for (const char* n : {"gzip-1", "gzip-6", "zstd-3", "lz4"}) {
    std::string name = n;
    benchmark::RegisterBenchmark(("decompress/" + name + "/direct").c_str(), [=](benchmark::State& s) { decode(s, name, true); });
    benchmark::RegisterBenchmark(("decompress/" + name + "/adapter").c_str(), [=](benchmark::State& s) { decode(s, name, false); });
    if (name.rfind("gzip", 0) == 0) {
      benchmark::RegisterBenchmark(("decompress/" + name + "/isal").c_str(), [=](benchmark::State& s) { decode(s, name, true, true); });
    }
  }
  benchmark::RegisterBenchmark("checker/sample", [](benchmark::State& s) { checker(s, false); });
  benchmark::RegisterBenchmark("checker/is_zero", [](benchmark::State& s) { checker(s, true); });
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
