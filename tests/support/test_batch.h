#pragma once
// A batch of compression jobs over real data classes, each with its own 90%-capacity output,
// and the check that every job ended usable and round-trips; and a batch of decompression jobs
// of such records, with the check that every one decoded to its record.

#include <gtest/gtest.h>

#include "qzfs/codec/workspace.h"
#include "qzfs/offload/job.h"
#include "test_data.h"

namespace qzfs::test {

using offload::job;

// A batch of records of mixed classes, each with its own output buffer (capacity: 90%).
struct batch {
  std::vector<std::vector<std::byte>> data, out;
  std::vector<std::vector<iovec>> iov;
  std::vector<job> jobs;

  batch(std::size_t n, std::size_t record, const std::string& codec = "gzip-1") {
    auto s = *codec::parse_spec(codec);
    for (std::size_t i = 0; i < n; ++i) {
      auto cls = i % 7 == 3 ? data_class::random : i % 5 == 1 ? data_class::binary : data_class::text;
      auto d = test::make_data(cls, record, i + 1);
      // Vary the text so records differ.
      if (cls == data_class::text) d[i % record] = std::byte(i);
      data.push_back(std::move(d));
    }
    for (auto& d : data) {
      out.emplace_back(d.size() * 9 / 10);
      iov.push_back(i_ % 2 == 0 ? test::scatter(d) : test::contiguous(d));
      ++i_;
    }
    for (std::size_t i = 0; i < n; ++i) {
      job j;
      j.spec = s;
      j.in = iov[i];
      j.out = out[i];
      jobs.push_back(j);
    }
  }

  // Every job finished with a usable result whose bytes decode to the input.
  void check_all_round_trip() {
    codec::workspace ws;
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      const auto& j = jobs[i];
      ASSERT_TRUE(j.st == codec::status::ok || j.st == codec::status::does_not_fit)
          << "job " << i << " ended " << codec::to_string(j.st) << " on " << j.ran_on;
      if (j.st != codec::status::ok) continue;
      std::vector<std::byte> back(data[i].size());
      ASSERT_EQ(ws.decompress(j.spec.format, std::span(out[i]).first(j.out_size), back), codec::status::ok) << i;
      ASSERT_TRUE(back == data[i]) << "job " << i << " on " << j.ran_on;
    }
  }

 private:
  std::size_t i_ = 0;
};

// Records compressed on the CPU, and a decompression job for each (its own output of exactly the
// record's size, filled with 0xee so a job that wrote nothing is seen).
struct decode_batch {
  std::vector<std::vector<std::byte>> data, payload, out;
  std::vector<iovec> iov;
  std::vector<job> jobs;

  decode_batch(std::size_t n, std::size_t record, const std::string& codec = "gzip-1") {
    auto s = *codec::parse_spec(codec);
    codec::workspace ws;
    for (std::size_t i = 0; i < n; ++i) {
      auto d = test::make_data(i % 3 == 1 ? data_class::binary : data_class::text, record, i + 1);
      d[i % record] = std::byte(i);
      std::vector<std::byte> p(record + 1024);
      iovec v{d.data(), d.size()};
      auto r = ws.compress(s, {&v, 1}, p);
      if (r.st != codec::status::ok) throw std::runtime_error("test record does not compress");
      p.resize(r.size);
      data.push_back(std::move(d));
      payload.push_back(std::move(p));
      out.emplace_back(record, std::byte{0xee});
    }
    iov.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      iov[i] = {payload[i].data(), payload[i].size()};
      job j;
      j.spec = s;
      j.dir = offload::direction::decompress;
      j.in = std::span<const iovec>(&iov[i], 1);
      j.out = out[i];
      jobs.push_back(j);
    }
  }

  // Every job decoded its record exactly.
  void check_all_decoded() {
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      ASSERT_EQ(jobs[i].st, codec::status::ok) << "job " << i << " on " << jobs[i].ran_on;
      ASSERT_EQ(jobs[i].out_size, data[i].size()) << i;
      ASSERT_TRUE(out[i] == data[i]) << "job " << i << " decoded wrong bytes on " << jobs[i].ran_on;
    }
  }
};

}  // namespace qzfs::test
