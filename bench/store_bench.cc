// Store throughput (docs/BENCHMARKS.md, "Store"): the same data, per policy and per CPU worker
// count, through
//   engine   engine::compress over 128 KiB records, 1 MiB per batch as the store sends 1 MiB
//            writes (the baseline the store is held to: it may add at most 10% to it for
//            whole-record writes),
//   store    a container on a real file: 128 KiB writes, then 4 KiB writes (the kernel's page
//            writes), each ending with sync(); then 128 KiB and 4 KiB reads of it after a reopen,
//   plain    the same bytes written to and read from a plain file (pwrite + fdatasync).
// Best of --reps runs, interleaved. Use a tmpfs directory (default /dev/shm) to measure the
// software and not the disk.
//
//   store_bench [--dir D] [--policies a,b] [--threads 1,2] [--max-bytes N] [--reps N] [--only keys] PATH...
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cli/corpus.h"
#include "qzfs/engine/engine.h"
#include "qzfs/offload/scheduler.h"
#include "qzfs/store/file.h"
#include "qzfs/store/io.h"

namespace {

using clock_type = std::chrono::steady_clock;
constexpr std::size_t rs = 128 * 1024;

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');) out.push_back(x);
  return out;
}

double seconds(const std::function<void()>& f) {
  const auto t0 = clock_type::now();
  f();
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

void check(std::error_code ec, const char* what) {
  if (ec) {
    std::fprintf(stderr, "store_bench: %s: %s\n", what, ec.message().c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/dev/shm", policies = "off,lz4,gzip,gzip-6,zstd,auto", threads = "1,2";
  std::size_t max_bytes = 64 << 20;
  int reps = 3;
  std::string only;  // profiling: run only these measurements (comma-separated keys)
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return std::string(i + 1 < argc ? argv[++i] : ""); };
    if (a == "--dir") dir = next();
    else if (a == "--policies") policies = next();
    else if (a == "--threads") threads = next();
    else if (a == "--max-bytes") max_bytes = std::stoull(next()) << 20;
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--only") only = next();
    else paths.push_back(a);
  }
  if (paths.empty()) {
    std::fprintf(stderr, "usage: store_bench [--dir D] [--policies a,b] [--threads 1,2] [--max-bytes MiB] [--reps N] PATH...\n");
    return 2;
  }
  auto corp = qzfs::cli::load_corpus(paths, rs, max_bytes);
  const std::span<const std::byte> data(corp.data.get(), corp.bytes);
  const double mib = static_cast<double>(data.size()) / (1 << 20);
  const int dirfd = ::open(dir.c_str(), O_DIRECTORY | O_RDONLY);
  if (dirfd < 0) {
    std::perror(dir.c_str());
    return 1;
  }
  std::printf("%.1f MiB from %zu files, records of 128 KiB, backing files in %s, best of %d\n", mib, corp.files,
              dir.c_str(), reps);
  std::printf("%-7s %7s %9s %9s %8s %8s %9s %8s %9s %7s %9s %9s %9s %9s %7s\n", "policy", "workers", "engine", "store1M",
              "x engine", "x e+w", "store128K", "x engine", "store4K", "x 1M", "read128K", "read4K", "plain wr", "plain rd",
              "ratio");

  for (const auto& t : split(threads)) {
    qzfs::offload::cpu_backend cpu({.workers = static_cast<unsigned>(std::stoul(t))});
    qzfs::offload::scheduler sched(cpu, nullptr);
    for (const auto& pol : split(policies)) {
      auto parsed = qzfs::engine::parse_policy(pol);
      if (!parsed) {
        std::fprintf(stderr, "store_bench: unknown policy %s\n", pol.c_str());
        return 2;
      }
      qzfs::engine::engine compressor(sched, {.pol = *parsed});
      qzfs::store::options o;
      o.compressor = &compressor;
      o.record_size = rs;
      // The batch the store gives the engine for 1 MiB of whole records.
      const std::size_t batch = std::max<std::size_t>(std::max<std::size_t>(4, 2 * cpu.workers()), (1 << 20) / rs);

      // The engine alone: every record of the data, in the store's batch size.
      std::vector<std::vector<std::byte>> payload(batch, std::vector<std::byte>(rs));
      auto engine_only = [&] {
        std::vector<qzfs::engine::record> recs(batch);
        std::vector<iovec> in(batch);
        for (std::size_t off = 0; off < data.size();) {
          std::size_t n = 0;
          for (; n < batch && off < data.size(); ++n, off += rs) {
            in[n] = iovec{const_cast<std::byte*>(data.data() + off), std::min(rs, data.size() - off)};
            recs[n] = {};
            recs[n].in = std::span(&in[n], 1);
            recs[n].payload = payload[n];
          }
          compressor.compress(std::span(recs).first(n));
        }
      };
      auto store_write = [&](std::size_t piece) {
        std::unique_ptr<qzfs::store::io> backing;
        ::unlinkat(dirfd, "store_bench.qzc", 0);
        check(qzfs::store::open_fd_io(dirfd, "store_bench.qzc", O_CREAT | O_TRUNC, 0644, backing), "open");
        std::unique_ptr<qzfs::store::file> f;
        check(qzfs::store::file::create(std::move(backing), o, f), "create");
        for (std::size_t off = 0; off < data.size(); off += piece) {
          check(f->pwrite(data.subspan(off, std::min(piece, data.size() - off)), off), "pwrite");
        }
        check(f->sync(), "sync");
      };
      std::vector<std::byte> buf(rs);
      auto store_read = [&](std::size_t piece) {
        std::unique_ptr<qzfs::store::io> backing;
        check(qzfs::store::open_fd_io(dirfd, "store_bench.qzc", 0, 0, backing), "open");
        std::unique_ptr<qzfs::store::file> f;
        check(qzfs::store::file::open(std::move(backing), o, f), "open");
        std::size_t got = 0;
        for (std::size_t off = 0; off < data.size(); off += piece) {
          check(f->pread(std::span(buf).first(piece), off, got), "pread");
        }
      };
      auto plain_write = [&] {
        const int fd = ::openat(dirfd, "store_bench.plain", O_CREAT | O_TRUNC | O_WRONLY, 0644);
        for (std::size_t off = 0; off < data.size(); off += rs) {
          if (::pwrite(fd, data.data() + off, std::min(rs, data.size() - off), static_cast<off_t>(off)) < 0) std::exit(1);
        }
        ::fdatasync(fd);
        ::close(fd);
      };
      auto plain_read = [&] {
        const int fd = ::openat(dirfd, "store_bench.plain", O_RDONLY);
        for (std::size_t off = 0; off < data.size(); off += rs) {
          if (::pread(fd, buf.data(), rs, static_cast<off_t>(off)) < 0) std::exit(1);
        }
        ::close(fd);
      };
      std::map<std::string, double> best;
      auto wanted = [&](const char* k) { return only.empty() || ("," + only + ",").find(std::string(",") + k + ",") != std::string::npos; };
      auto keep = [&](const char* k, const std::function<double()>& run) {
        if (!wanted(k)) {
          best[k] = 1e-9;
          return;
        }
        const double s = run();
        best[k] = best.count(k) ? std::min(best[k], s) : s;
      };
      std::uint64_t stored = 0;
      for (int r = 0; r < reps; ++r) {
        keep("engine", [&] { return seconds(engine_only); });
        keep("store1m", [&] { return seconds([&] { store_write(8 * rs); }); });
        keep("store4k", [&] { return seconds([&] { store_write(4096); }); });
        keep("read4k", [&] { return seconds([&] { store_read(4096); }); });
        keep("store", [&] { return seconds([&] { store_write(rs); }); });
        keep("read", [&] { return seconds([&] { store_read(rs); }); });
        keep("plain_wr", [&] { return seconds(plain_write); });
        keep("plain_rd", [&] { return seconds(plain_read); });
      }
      struct stat st {};
      if (::fstatat(dirfd, "store_bench.qzc", &st, 0) == 0) stored = static_cast<std::uint64_t>(st.st_size);
      auto rate = [&](const char* k) { return mib / best[k]; };
      // The engine's time plus writing its output (the stored bytes) to a plain file: what no
      // store can avoid; "x e+w" is that over the store's time.
      const double unavoidable = best["engine"] + best["plain_wr"] * static_cast<double>(stored) / static_cast<double>(data.size());
      std::printf("%-7s %7s %9.1f %9.1f %8.2f %8.2f %9.1f %8.2f %9.1f %7.2f %9.1f %9.1f %9.1f %9.1f %7.3f\n", pol.c_str(),
                  t.c_str(), rate("engine"), rate("store1m"), best["engine"] / best["store1m"], unavoidable / best["store1m"],
                  rate("store"),
                  best["engine"] / best["store"], rate("store4k"), best["store1m"] / best["store4k"], rate("read"),
                  rate("read4k"), rate("plain_wr"), rate("plain_rd"),
                  static_cast<double>(data.size()) / static_cast<double>(stored));
      std::fflush(stdout);
    }
  }
  ::unlinkat(dirfd, "store_bench.qzc", 0);
  ::unlinkat(dirfd, "store_bench.plain", 0);
  std::puts("MB/s in MiB/s of logical data; x engine = engine time / store time (1.00: the store adds nothing);"
            " x e+w = (engine time + plain write of the stored bytes) / store time; x 1M = 1 MiB-write time / 4 KiB-write"
            " time.");
  return 0;
}
