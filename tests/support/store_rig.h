#pragma once
// Shared by the store's tests: one CPU pool with an engine per policy, a log sink, a memory disk
// opener, and data of random kinds.

#include <gtest/gtest.h>

#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "mem_io.h"
#include "qzfs/engine/engine.h"
#include "qzfs/offload/scheduler.h"
#include "qzfs/store/file.h"
#include "test_data.h"

namespace qzfs::store::test_rig {

using test::crash_plan;
using test::mem_disk;
using test::mem_io;

constexpr std::uint32_t KiB = 1024;

// One CPU pool for every test; an engine per policy over it.
struct rig {
  offload::cpu_backend cpu{{.workers = 2}};
  offload::scheduler sched{cpu, nullptr};
  std::vector<std::unique_ptr<engine::engine>> engines;
  engine::engine& get(const std::string& pol) {
    engines.push_back(std::make_unique<engine::engine>(sched, engine::engine_options{.pol = *engine::parse_policy(pol)}));
    return *engines.back();
  }
};
inline rig& the_rig() {
  static rig r;
  return r;
}

struct log_sink {
  std::shared_ptr<std::vector<std::string>> lines = std::make_shared<std::vector<std::string>>();
  std::shared_ptr<std::mutex> m = std::make_shared<std::mutex>();
  std::function<void(std::string_view)> fn() {
    auto l = lines;
    auto mu = m;
    return [l, mu](std::string_view s) {
      std::lock_guard lk(*mu);
      l->emplace_back(s);
    };
  }
};

inline options opts(const std::string& pol, std::uint32_t rs, log_sink* sink = nullptr) {
  options o;
  o.compressor = &the_rig().get(pol);
  o.record_size = rs;
  o.name = "test";
  if (sink != nullptr) o.log = sink->fn();
  return o;
}

inline std::unique_ptr<file> open_mem(std::shared_ptr<mem_disk> d, const options& o, std::shared_ptr<crash_plan> plan = nullptr) {
  std::unique_ptr<file> f;
  auto ec = file::open(std::make_unique<mem_io>(std::move(d), std::move(plan)), o, f);
  EXPECT_FALSE(ec) << ec.message();
  return f;
}

inline std::vector<std::byte> read_all(file& f, std::error_code* err = nullptr) {
  std::vector<std::byte> out(f.size());
  std::size_t got = 0;
  auto ec = f.pread(out, 0, got);
  if (err != nullptr) {
    *err = ec;
  } else {
    EXPECT_FALSE(ec) << ec.message();
  }
  if (!ec) {
    EXPECT_EQ(got, out.size());
  }
  return out;
}

// Data of a random kind: text, zeros, random bytes, or text with runs of zeros.
inline std::vector<std::byte> some_data(std::mt19937_64& rng, std::size_t n) {
  const auto& text = test::text_source();
  std::vector<std::byte> v(n);
  switch (rng() % 4) {
    case 0: {
      const std::size_t at = rng() % text.size();
      for (std::size_t i = 0; i < n; ++i) v[i] = text[(at + i) % text.size()];
      break;
    }
    case 1: break;  // zeros
    case 2:
      for (auto& b : v) b = std::byte(rng());
      break;
    default: {
      const std::size_t at = rng() % text.size();
      for (std::size_t i = 0; i < n; ++i) v[i] = (i / 512) % 3 == 1 ? std::byte{0} : text[(at + i) % text.size()];
    }
  }
  return v;
}

}  // namespace qzfs::store::test_rig
