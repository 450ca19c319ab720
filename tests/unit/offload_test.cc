// The offload module: the CPU pool, the accelerator backend over a software device and over the
// fault-injecting device, and the scheduler. Invariant 5: every job ends compressed by some
// backend or stored raw, the bytes round-trip, and the counters account for every job.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "qzfs/codec/workspace.h"
#include "qzfs/offload/scheduler.h"
#include "test_batch.h"

namespace qzfs::offload {
namespace {

using namespace std::chrono_literals;
using test::batch;

TEST(cpu_backend, runs_every_job_with_backpressure) {
  cpu_backend cpu({.workers = 2, .queue_capacity = 3});
  scheduler sched(cpu, nullptr);
  batch b(120, 32 * 1024, "zstd-1");
  sched.run(b.jobs);
  b.check_all_round_trip();
  auto st = cpu.stats();
  EXPECT_EQ(st.submitted, 120u);
  EXPECT_EQ(st.completed, 120u);
  EXPECT_EQ(sched.stats().to_cpu, 120u);
  // Random records (every 7th) do not fit; the rest do.
  std::size_t nofit = 0;
  for (auto& j : b.jobs) nofit += j.st == codec::status::does_not_fit;
  EXPECT_EQ(nofit, 17u);
}

// Many writers, each with a batch, against a small queue: the queue never holds more than its
// capacity, does fill up (so the writers really waited), and every job completes (a writer left
// asleep while the queue drains would hang here).
TEST(cpu_backend, writers_blocked_on_a_full_queue_all_get_through) {
  cpu_backend cpu({.workers = 2, .queue_capacity = 4});
  scheduler sched(cpu, nullptr);
  constexpr int writers = 8;
  std::vector<std::unique_ptr<batch>> bs;
  for (int w = 0; w < writers; ++w) bs.push_back(std::make_unique<batch>(w % 2 == 0 ? 1 : 9, 16 * 1024, "lz4"));
  for (int round = 0; round < 20; ++round) {
    std::vector<std::jthread> ts;
    for (int w = 0; w < writers; ++w) ts.emplace_back([&, w] { sched.run(bs[w]->jobs); });
  }
  for (auto& b : bs) b->check_all_round_trip();
  EXPECT_EQ(cpu.stats().completed, 20u * (4 * 1 + 4 * 9));
  EXPECT_LE(cpu.peak_depth(), 4u);
  EXPECT_EQ(cpu.peak_depth(), 4u) << "the writers never filled the queue: nothing was tested";
}

// Routing by expected finish time depends on how fast the machine runs each side (sanitizers
// change that); tests about failure handling send the device all it will take.
scheduler::options everything() { return {.accel_bias = 1e9}; }

accel_backend::options fast_accel() {
  accel_backend::options o;
  o.sessions = 2;
  o.queue_capacity = 8;
  o.timeout = 5000ms;  // generous: sanitizer builds are slow; the timeout tests set their own
  o.backoff_initial = 20ms;
  o.backoff_max = 200ms;
  return o;
}

TEST(accel_backend, healthy_device_takes_gzip_jobs_and_small_ones_stay_on_cpu) {
  cpu_backend cpu({.workers = 1});
  accel_backend accel(make_software_device(), fast_accel());
  ASSERT_EQ(accel.state(), health::up);
  scheduler sched(cpu, &accel, everything());
  batch big(60, 64 * 1024), small(20, 2048);
  sched.run(small.jobs);
  sched.run(big.jobs);
  big.check_all_round_trip();
  small.check_all_round_trip();
  auto s = sched.stats();
  EXPECT_GT(s.to_accel, 0u);
  EXPECT_EQ(s.small, 20u);
  EXPECT_EQ(s.redone, 0u);
  for (auto& j : small.jobs) EXPECT_STREQ(j.ran_on, "cpu");
  auto a = accel.stats();
  EXPECT_EQ(a.submitted, s.to_accel);
  EXPECT_EQ(a.completed, a.submitted);
  EXPECT_EQ(a.failed, 0u);
  EXPECT_EQ(cpu.stats().submitted, s.to_cpu);
}

TEST(accel_backend, zstd_and_lz4_never_go_to_the_accelerator) {
  cpu_backend cpu({.workers = 1});
  accel_backend accel(make_software_device(), fast_accel());
  scheduler sched(cpu, &accel);
  batch b(10, 64 * 1024, "zstd-3");
  sched.run(b.jobs);
  b.check_all_round_trip();
  EXPECT_EQ(sched.stats().to_accel, 0u);
}

// Two CPU workers, the software device behind faults (`spec`) with a 200 ms timeout, and a
// scheduler that sends the device all it takes.
struct fault_rig {
  cpu_backend cpu{{.workers = 2}};
  fault_device* fd = nullptr;  // the device, owned by accel
  accel_backend accel;
  scheduler sched;
  explicit fault_rig(const std::string& spec) : accel(make(spec, fd), opts()), sched(cpu, &accel, everything()) {}

 private:
  static std::unique_ptr<device> make(const std::string& spec, fault_device*& fd) {
    auto dev = std::make_unique<fault_device>(make_software_device(), parse_fault_spec(spec));
    fd = dev.get();
    return dev;
  }
  static accel_backend::options opts() {
    auto o = fast_accel();
    o.timeout = 200ms;
    return o;
  }
};

struct fault_case {
  const char* name;
  std::string spec;
};

void PrintTo(const fault_case& c, std::ostream* os) { *os << c.name << " (" << c.spec << ")"; }

class faults : public ::testing::TestWithParam<fault_case> {};

// For every failure mode and several rates: every record ends compressed or raw, the bytes
// round-trip, the counters account for every job, the backend goes down, and after the device
// heals it comes back and takes traffic again.
TEST_P(faults, no_job_is_lost_and_the_device_comes_back) {
  fault_rig r(GetParam().spec);
  auto& [cpu, fd, accel, sched] = r;

  std::uint64_t total = 0;
  // Six rounds, and more (up to 60) while a low-rate fault has not fired yet: how many jobs the
  // device gets depends on how fast this build runs.
  for (int round = 0; round < 60 && (round < 6 || accel.stats().failed == 0); ++round) {
    batch b(40, 32 * 1024);
    sched.run(b.jobs);
    b.check_all_round_trip();
    total += b.jobs.size();
    std::this_thread::sleep_for(30ms);  // let the backoff expire now and then
  }
  auto s = sched.stats();
  auto a = accel.stats();
  auto c = cpu.stats();
  EXPECT_EQ(s.to_accel + s.to_cpu, total);
  EXPECT_EQ(s.to_cpu, s.small + s.overflow + s.not_serving) << "every record sent to the CPU has a reason";
  EXPECT_EQ(a.submitted, s.to_accel);
  EXPECT_EQ(a.submitted, a.completed + a.failed) << "accelerator jobs unaccounted for";
  EXPECT_EQ(s.redone, a.failed) << "every accelerator failure is redone on the CPU";
  EXPECT_EQ(c.submitted, s.to_cpu + s.redone);
  EXPECT_EQ(c.completed, c.submitted);
  EXPECT_GT(a.failed, 0u) << "the faults never fired";
  EXPECT_GT(a.teardowns, 0u) << "a failing device must be torn down";
  EXPECT_GT(a.probes, 1u) << "and re-probed";

  // Heal it: traffic returns to the accelerator.
  fd->set(fault_spec{});
  for (int i = 0; i < 100 && !accel.serving(); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(accel.state(), health::degraded) << "back from a failure: degraded until it proves itself";
  EXPECT_NE(accel.reason().find("recovering after"), std::string::npos) << accel.reason();
  const auto before = accel.stats().completed;
  batch b(40, 32 * 1024);
  sched.run(b.jobs);
  b.check_all_round_trip();
  EXPECT_GT(accel.stats().completed, before);
}

INSTANTIATE_TEST_SUITE_P(
    modes, faults,
    ::testing::Values(fault_case{"error_5pct", "error=0.05,seed=3"}, fault_case{"error_30pct", "error=0.3"},
                      fault_case{"error_all", "error=1"}, fault_case{"timeout_5pct", "timeout=0.05,seed=5"},
                      fault_case{"timeout_all", "timeout=1"}, fault_case{"garbage_10pct", "garbage=0.1,seed=7"},
                      fault_case{"garbage_all", "garbage=1"}, fault_case{"badcrc_10pct", "badcrc=0.1,seed=9"},
                      fault_case{"badcrc_every_3rd", "badcrc=1,every=3"},
                      fault_case{"mixed", "error=0.05,timeout=0.02,garbage=0.05,badcrc=0.05,slow=0.1,delay=1ms"}),
    [](const auto& info) { return std::string(info.param.name); });

// Decompression jobs (reads of several records): the CPU decodes every format; the accelerator
// takes gzip ones when its device decodes; the counters say who decoded what.
TEST(decode_jobs, the_cpu_decodes_every_format_and_counts_them) {
  cpu_backend cpu({.workers = 2, .queue_capacity = 3});
  scheduler sched(cpu, nullptr);
  for (const char* c : {"gzip-1", "gzip-6", "zstd-1", "lz4"}) {
    test::decode_batch b(30, 32 * 1024, c);
    sched.run(b.jobs);
    b.check_all_decoded();
    for (auto& j : b.jobs) EXPECT_STREQ(j.ran_on, "cpu");
  }
  EXPECT_EQ(cpu.stats().decompressed, 120u);
  EXPECT_EQ(cpu.stats().decompressed_bytes, 120u * 32 * 1024);
  EXPECT_EQ(sched.stats().decode_to_cpu, 120u);
  EXPECT_EQ(sched.stats().to_cpu, 0u) << "decode jobs are counted apart from compression jobs";
}

TEST(decode_jobs, a_payload_that_does_not_decode_is_corrupt_never_ok) {
  cpu_backend cpu({.workers = 1});
  scheduler sched(cpu, nullptr);
  test::decode_batch b(4, 32 * 1024);
  b.payload[1][b.payload[1].size() / 2] ^= std::byte{0xff};
  b.payload[2].resize(b.payload[2].size() / 2);
  b.iov[2].iov_len = b.payload[2].size();
  sched.run(b.jobs);
  EXPECT_EQ(b.jobs[0].st, codec::status::ok);
  EXPECT_NE(b.jobs[1].st, codec::status::ok);
  EXPECT_NE(b.jobs[2].st, codec::status::ok);
  EXPECT_EQ(cpu.stats().decompressed, 2u);
}

TEST(decode_jobs, the_accelerator_decodes_gzip_and_zstd_stays_on_the_cpu) {
  cpu_backend cpu({.workers = 1});
  accel_backend accel(make_software_device(), fast_accel());
  ASSERT_TRUE(accel.decompresses());
  scheduler sched(cpu, &accel, everything());
  test::decode_batch g(40, 64 * 1024, "gzip-1"), z(10, 64 * 1024, "zstd-1"), small(10, 2048, "gzip-1");
  sched.run(g.jobs);
  sched.run(z.jobs);
  sched.run(small.jobs);
  g.check_all_decoded();
  z.check_all_decoded();
  small.check_all_decoded();
  for (auto& j : z.jobs) EXPECT_STREQ(j.ran_on, "cpu");
  for (auto& j : small.jobs) EXPECT_STREQ(j.ran_on, "cpu") << "small records never go to the device";
  const auto a = accel.stats();
  EXPECT_GT(a.decompressed, 0u);
  EXPECT_EQ(a.decompressed, sched.stats().decode_to_accel);
  EXPECT_EQ(a.decompressed + cpu.stats().decompressed, 60u);
}

// Every failure mode of the device on decompression: each record comes back exactly right (the
// device's answer passes only when its CRC-32 is the member's; the rest are redone on the CPU),
// the device is torn down, re-probed, and decodes again once healed.
TEST(decode_jobs, a_failing_device_never_returns_a_wrong_record) {
  fault_rig r("error=0.1,garbage=0.05,badcrc=0.05,timeout=0.01,seed=11");
  auto& [cpu, fd, accel, sched] = r;
  std::uint64_t total = 0;
  for (int round = 0; round < 60 && (round < 6 || accel.stats().teardowns < 2); ++round) {
    test::decode_batch b(40, 32 * 1024);
    sched.run(b.jobs);
    b.check_all_decoded();
    total += b.jobs.size();
    std::this_thread::sleep_for(30ms);
  }
  const auto s = sched.stats();
  const auto a = accel.stats();
  EXPECT_EQ(s.decode_to_accel + s.decode_to_cpu, total);
  EXPECT_EQ(a.submitted, a.completed + a.failed);
  EXPECT_EQ(s.decode_redone, a.failed) << "every failed decode is redone on the CPU";
  EXPECT_GT(a.failed, 0u) << "the faults never fired";
  EXPECT_GE(a.teardowns, 2u);
  EXPECT_EQ(cpu.stats().decompressed + a.decompressed, total);
  fd->set(fault_spec{});
  for (int i = 0; i < 100 && !accel.serving(); ++i) std::this_thread::sleep_for(10ms);
  const auto before = accel.stats().decompressed;
  test::decode_batch b(40, 32 * 1024);
  sched.run(b.jobs);
  b.check_all_decoded();
  EXPECT_GT(accel.stats().decompressed, before) << "healed, it decodes again";
}

TEST(accel_backend, a_recovered_device_is_degraded_until_it_proves_itself) {
  cpu_backend cpu({.workers = 1});
  auto dev = std::make_unique<fault_device>(make_software_device(), parse_fault_spec("error=1"));
  auto* fd = dev.get();
  auto o = fast_accel();
  o.backoff_initial = 60000ms;  // no probe by itself: this test probes when it wants
  accel_backend accel(std::move(dev), o);
  scheduler sched(cpu, &accel, everything());
  batch b(8, 32 * 1024);
  sched.run(b.jobs);
  b.check_all_round_trip();
  EXPECT_EQ(accel.state(), health::down);
  EXPECT_EQ(accel.reason(), "device error");
  fd->set(fault_spec{});
  accel.probe_now();
  ASSERT_EQ(accel.state(), health::degraded);
  for (int round = 0; round < 40 && accel.state() != health::up; ++round) {
    batch more(20, 32 * 1024);
    sched.run(more.jobs);
    more.check_all_round_trip();
  }
  EXPECT_EQ(accel.state(), health::up) << "100 good jobs in a row clear the degraded state";
  EXPECT_GE(accel.stats().completed, 100u);
}

TEST(accel_backend, crc_verification_catches_a_wrong_footer) {
  cpu_backend cpu({.workers = 1});
  auto o = fast_accel();
  o.verify = accel_backend::verify_mode::crc;
  accel_backend accel(std::make_unique<fault_device>(make_software_device(), parse_fault_spec("badcrc=1")), o);
  scheduler sched(cpu, &accel);
  batch b(10, 32 * 1024);
  sched.run(b.jobs);
  b.check_all_round_trip();
  EXPECT_GT(accel.stats().failed, 0u);
  EXPECT_EQ(accel.stats().completed, 0u) << "a member with a wrong CRC was trusted";
}

TEST(accel_backend, unavailable_device_says_why_and_everything_runs_on_cpu) {
  cpu_backend cpu({.workers = 1});
  accel_backend accel(std::make_unique<fault_device>(make_software_device(), parse_fault_spec("init=unavailable")),
                      fast_accel());
  EXPECT_EQ(accel.state(), health::unavailable);
  EXPECT_NE(accel.reason().find("unavailable"), std::string::npos);
  scheduler sched(cpu, &accel);
  batch b(10, 32 * 1024);
  sched.run(b.jobs);
  b.check_all_round_trip();
  EXPECT_EQ(sched.stats().to_accel, 0u);
  std::this_thread::sleep_for(60ms);
  EXPECT_EQ(accel.stats().probes, 1u) << "an unavailable device is not probed again";
}

TEST(accel_backend, failing_setup_is_reprobed_with_backoff_until_it_works) {
  cpu_backend cpu({.workers = 1});
  auto dev = std::make_unique<fault_device>(make_software_device(), parse_fault_spec("init=fail"));
  auto* fd = dev.get();
  accel_backend accel(std::move(dev), fast_accel());
  EXPECT_EQ(accel.state(), health::down);
  std::this_thread::sleep_for(300ms);
  const auto probes = accel.stats().probes;
  // 20, 40, 80, 160 ms...: a handful of probes in 300 ms, not one every 5 ms tick.
  EXPECT_GE(probes, 3u);
  EXPECT_LE(probes, 8u);
  fd->set(fault_spec{});
  for (int i = 0; i < 100 && !accel.serving(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(accel.serving()) << accel.reason();
}

TEST(accel_backend, saturated_device_overflows_to_the_cpu) {
  cpu_backend cpu({.workers = 2});
  auto o = fast_accel();
  o.sessions = 1;
  o.queue_capacity = 4;
  o.timeout = 2000ms;
  accel_backend accel(std::make_unique<fault_device>(make_software_device(), parse_fault_spec("slow=1,delay=10ms")), o);
  // The rule lets it finish up to 50 times later than the CPU, so a job waits a while for a place
  // when two are in flight; 10 ms a job keeps them longer, and the rest overflows.
  scheduler sched(cpu, &accel, {.overflow_depth = 2, .accel_bias = 50});
  batch b(100, 32 * 1024);
  sched.run(b.jobs);
  b.check_all_round_trip();
  auto s = sched.stats();
  EXPECT_GT(s.to_accel, 0u);
  EXPECT_GT(s.overflow, 0u);
  EXPECT_EQ(s.to_accel + s.to_cpu, 100u);
  EXPECT_EQ(accel.stats().failed, 0u);
}

// What a test sees of one job: how often the accelerator finished it, how often a final result
// reached the submitter, and the scheduler's redo on the CPU of what the device failed back.
struct tally {
  cpu_backend* cpu = nullptr;
  std::atomic<int> from_accel{0}, final{0};



  static void accel_done(job& j, void* self) {
    auto& t = *static_cast<tally*>(self);
    t.from_accel.fetch_add(1);
    if (j.st == codec::status::error) {
      j.redone = true;
      t.cpu->submit(j);
      return;
    }
    j.complete();
  }
  static void final_result(job&, void* self) { static_cast<tally*>(self)->final.fetch_add(1); }
};

// Jobs in line for a ticket (every ticket taken) are not lost: a device that hangs is torn down
// by the watchdog and its line is failed back with it, redone on the CPU; a backend destroyed
// with a line fails it back too.
TEST(accel_backend, jobs_in_line_for_a_ticket_are_failed_back_never_lost) {
  cpu_backend cpu({.workers = 1});
  // Every job of `b` straight to the backend (its ticket or the line, at most `depth` there),
  // each tallied in t[i] and redone on the CPU if failed back; false if one was refused.
  auto line_up = [&](accel_backend& accel, batch& b, tally* t, completion& c, std::size_t depth) {
    c.expect(b.jobs.size());
    for (std::size_t i = 0; i < b.jobs.size(); ++i) {
      t[i].cpu = &cpu;
      b.jobs[i].done = &c;
      b.jobs[i].on_finish = &tally::accel_done;
      b.jobs[i].on_finish_ctx = &t[i];
      if (!accel.submit(b.jobs[i], depth)) return false;
    }
    return true;
  };
  {
    auto o = fast_accel();
    o.sessions = 1;
    o.queue_capacity = 1;
    o.timeout = 100ms;
    accel_backend accel(std::make_unique<fault_device>(make_software_device(), parse_fault_spec("timeout=1")), o);
    scheduler sched(cpu, &accel, {.overflow_depth = 4, .accel_bias = 1e9});
    batch b(4, 32 * 1024);
    // Untried, the device takes one job at a time: put the others in line by hand.
    completion c;
    tally t[4];
    ASSERT_TRUE(line_up(accel, b, t, c, 4));
    EXPECT_EQ(accel.lined(), 3u) << "one in the ticket, three in line";
    EXPECT_EQ(accel.queue_depth(), 4u);
    EXPECT_FALSE(accel.submit(b.jobs[0], 4)) << "the line is full at max_depth";
    c.wait();  // the hang is caught after 100 ms; the line goes back with it
    b.check_all_round_trip();
    for (auto& x : t) EXPECT_EQ(x.from_accel.load(), 1);
    EXPECT_GE(accel.stats().teardowns, 1u);
    EXPECT_EQ(accel.stats().failed, 4u);
    EXPECT_EQ(accel.queue_depth(), 0u);
  }
  {
    // A busy device, not a broken one (20 ms a job, one ticket, a 100 ms timeout): the jobs that
    // wait in line longer than the timeout go back to the CPU, and the device is not torn down.
    auto o = fast_accel();
    o.sessions = 1;
    o.queue_capacity = 1;
    o.timeout = 100ms;
    accel_backend accel(std::make_unique<fault_device>(make_software_device(), parse_fault_spec("slow=1,delay=20ms")), o);
    batch b(8, 16 * 1024);
    completion c;
    tally t[8];
    ASSERT_TRUE(line_up(accel, b, t, c, 8));
    c.wait();
    b.check_all_round_trip();
    for (auto& x : t) EXPECT_EQ(x.from_accel.load(), 1);
    const auto a = accel.stats();
    EXPECT_EQ(a.teardowns, 0u) << accel.reason();
    EXPECT_GT(a.failed, 0u) << "160 ms of work behind one ticket: some waited past 100 ms";
    EXPECT_GT(a.completed, 0u);
    EXPECT_EQ(a.completed + a.failed, 8u);
    EXPECT_TRUE(accel.serving());
  }
  {
    auto o = fast_accel();
    o.sessions = 1;
    o.queue_capacity = 1;
    auto accel = std::make_unique<accel_backend>(
        std::make_unique<fault_device>(make_software_device(), parse_fault_spec("slow=1,delay=50ms")), o);
    batch b(4, 32 * 1024);
    completion c;
    tally t[4];
    ASSERT_TRUE(line_up(*accel, b, t, c, 8));
    accel.reset();  // with one job in its ticket and three in line
    c.wait();
    b.check_all_round_trip();
    for (auto& x : t) EXPECT_EQ(x.from_accel.load(), 1) << "each finished once, by the device or failed back";
  }
}


template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!pred() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
  return pred();
}

// A worker takes a ticket off the queue, drops the lock, and only then marks
// it running; the ticket is still 'queued' in between. The watchdog used to cancel such a ticket
// once its deadline had passed, fail the job and release the ticket; the worker, finding it
// cancelled, released it a second time: the ticket was free twice over (queue_depth() wrapped
// around) and two later jobs shared its buffers (one of them never finished). The seam holds the
// worker there until the deadline is long past: the ticket is its worker's, the job finishes
// once, the pool stays whole, and more jobs than it holds all get through.
TEST(accel_backend, watchdog_leaves_a_taken_ticket_to_its_worker) {
  batch first(1, 32 * 1024), more(16, 32 * 1024);
  tally first_tally;
  auto more_tally = std::make_unique<tally[]>(more.jobs.size());
  std::atomic<int> pops{0};
  std::atomic<bool> held{false}, finished_while_held{false};

  auto o = fast_accel();
  o.sessions = 1;
  o.queue_capacity = 2;
  o.timeout = 100ms;  // the watchdog looks every 5 ms
  o.after_pop = [&, hold = o.timeout + 400ms] {
    if (pops.fetch_add(1) != 0) return;
    held = true;
    const auto until = std::chrono::steady_clock::now() + hold;
    while (first_tally.from_accel.load() == 0 && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(1ms);
    finished_while_held = first_tally.from_accel.load() != 0;
    held = false;
  };
  cpu_backend cpu({.workers = 1});
  accel_backend accel(make_software_device(), o);
  ASSERT_EQ(accel.state(), health::up) << accel.reason();

  auto submit = [&](job& j, tally& t) {
    t.cpu = &cpu;
    j.on_finish = &tally::accel_done;
    j.on_finish_ctx = &t;
    j.then = &tally::final_result;
    j.then_ctx = &t;
    const auto give_up = std::chrono::steady_clock::now() + 20s;
    while (!accel.try_submit(j)) {
      if (std::chrono::steady_clock::now() > give_up) {
        ADD_FAILURE() << "the device never took the job (state " << to_string(accel.state()) << ")";
        j.on_finish = nullptr;
        cpu.submit(j);
        return;
      }
      if (!accel.serving()) accel.probe_now();  // a timeout took it down
      std::this_thread::sleep_for(200us);
    }
  };

  submit(first.jobs[0], first_tally);
  ASSERT_TRUE(eventually([&] { return first_tally.final.load() != 0; }, 20s)) << "the first job never finished";
  ASSERT_TRUE(eventually([&] { return !held.load(); }, 20s));
  EXPECT_FALSE(finished_while_held.load()) << "the watchdog finished a job whose ticket a worker held";
  EXPECT_TRUE(eventually([&] { return accel.queue_depth() == 0; }, 5s))
      << "queue depth " << accel.queue_depth() << " with nothing in flight: a ticket was released twice";
  std::this_thread::sleep_for(20ms);  // a second finish would come now
  EXPECT_EQ(first_tally.from_accel.load(), 1);
  EXPECT_EQ(first_tally.final.load(), 1);
  first.check_all_round_trip();

  // Eight times what the pool holds, one by one as tickets come free.
  for (std::size_t i = 0; i < more.jobs.size(); ++i) submit(more.jobs[i], more_tally[i]);
  const bool all = eventually(
      [&] {
        for (std::size_t i = 0; i < more.jobs.size(); ++i)
          if (more_tally[i].final.load() == 0) return false;
        return true;
      },
      20s);
  std::this_thread::sleep_for(20ms);
  for (std::size_t i = 0; i < more.jobs.size(); ++i) {
    EXPECT_LE(more_tally[i].from_accel.load(), 1) << "job " << i << " finished twice by the device";
    EXPECT_EQ(more_tally[i].final.load(), 1) << "job " << i;
  }
  ASSERT_TRUE(all) << "a job was lost";
  more.check_all_round_trip();
  EXPECT_TRUE(eventually([&] { return accel.queue_depth() == 0; }, 5s)) << accel.queue_depth();
  auto a = accel.stats();
  EXPECT_EQ(a.submitted, 1 + more.jobs.size());
  EXPECT_EQ(a.submitted, a.completed + a.failed) << "accelerator jobs unaccounted for";
  EXPECT_GT(a.completed, 0u) << "the device took nothing after the race: nothing was tested";
  // Every job the device finished went through a worker's pop (a job left queued past the
  // deadline on a loaded machine is failed there and redone on the CPU, never popped).
  EXPECT_GE(pops.load(), static_cast<int>(a.completed));
}

TEST(scheduler, a_slow_device_gets_only_what_the_cpu_cannot_absorb) {
  cpu_backend cpu({.workers = 2});
  accel_backend accel(std::make_unique<fault_device>(make_software_device(), parse_fault_spec("slow=1,delay=100ms")),
                      fast_accel());
  scheduler sched(cpu, &accel);  // default: within 4x of the CPU's expected finish
  batch b(100, 32 * 1024);
  sched.run(b.jobs);
  b.check_all_round_trip();
  auto s = sched.stats();
  EXPECT_GE(s.to_accel, 1u) << "an untried device is tried";
  EXPECT_LE(s.to_accel, 10u) << "a device 100 ms a record must not hold the batch back";
  EXPECT_EQ(s.to_accel + s.to_cpu, 100u);
}

// The CPU's share of a batch counts toward the CPU's expected finish while the batch is routed:
// a batch goes in before any of it reaches the CPU queue, and judged against an empty CPU queue
// the accelerator was refused as soon as a few jobs waited for it (at most 4 x sessions x
// CPU time / its time: under 4 of a batch of 64 whenever it is slower per job than a CPU worker,
// which a verified device always is). Counted, it takes its capacity's worth of each batch.
TEST(scheduler, the_cpus_share_of_a_batch_counts_toward_its_expected_finish) {
  cpu_backend cpu({.workers = 2});
  accel_backend accel(make_software_device(), fast_accel());  // 2 sessions, 8 in flight
  scheduler sched(cpu, &accel, {.accel_bias = 4.0});         // the rule at 4x (the formulas below)
  batch warm(16, 64 * 1024);
  sched.run(warm.jobs);  // both service times known
  const auto before = sched.stats().to_accel;
  constexpr int rounds = 10;
  for (int r = 0; r < rounds; ++r) {
    batch b(64, 64 * 1024);
    sched.run(b.jobs);
    b.check_all_round_trip();
  }
  const auto per_batch = static_cast<double>(sched.stats().to_accel - before) / rounds;
  // What each rule gives the device from the measured times per job (a: device, c: a CPU worker,
  // 2 sessions, 2 workers, bias 4): counting the CPU's share, k jobs while (k+1) a / 2 <= 4 (65-k) c / 2;
  // against an empty CPU queue, while (k+1) a / 2 <= 4 c / 2. Under a sanitizer the software device
  // (instrumented C) can be 100x slower than the CPU workers (ISA-L's assembly is not), and then
  // both rules give it next to nothing: the test cannot tell them apart there.
  const double a = static_cast<double>(accel.stats().service_ns), c = static_cast<double>(cpu.stats().service_ns);
  ASSERT_GT(a, 0.0);
  ASSERT_GT(c, 0.0);
  const double counted = std::min<double>(accel.capacity(), 4.0 * 65.0 * c / (a + 4.0 * c) - 1.0);
  const double empty = std::max(0.0, 4.0 * c / a - 1.0);
  if (counted < 4.0 || counted < 2.0 * empty + 2.0)
    GTEST_SKIP() << "device " << a / c << "x slower per job than a CPU worker: both rules give it under 4 of 64";
  EXPECT_GE(per_batch, counted / 2.0) << "the accelerator (capacity " << accel.capacity() << ") got " << per_batch
                                      << " of each batch of 64, the rule gives it " << counted
                                      << "; service ns: accel " << a << ", cpu " << c;
}

TEST(fault_spec, parses_and_refuses_clearly) {
  auto s = parse_fault_spec("error=0.1,timeout=0.01,garbage=0.2,badcrc=0.3,slow=0.5,delay=3ms,every=4,init=fail,seed=9");
  EXPECT_DOUBLE_EQ(s.error, 0.1);
  EXPECT_DOUBLE_EQ(s.timeout, 0.01);
  EXPECT_EQ(s.delay, std::chrono::microseconds(3000));
  EXPECT_EQ(s.every, 4u);
  EXPECT_EQ(s.init, fault_spec::init_mode::fail);
  EXPECT_EQ(s.seed, 9u);
  EXPECT_THROW(parse_fault_spec("error=2"), std::invalid_argument);
  EXPECT_THROW(parse_fault_spec("explode=1"), std::invalid_argument);
  EXPECT_THROW(parse_fault_spec("error"), std::invalid_argument);
  EXPECT_THROW(parse_fault_spec("delay=3h"), std::invalid_argument);
}

}  // namespace
}  // namespace qzfs::offload
