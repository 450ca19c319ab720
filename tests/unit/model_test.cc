// The modelled QAT card (model_device): its service time, parallel instances, real gzip output,
// the CPU time of its own threads counted apart, the spec, and the whole offload path over it
// (scheduler, watchdog, verification, teardown, re-probe) with faults composed in front of it.
#include <gtest/gtest.h>
#include <time.h>
#include <zlib.h>

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "qzfs/codec/workspace.h"
#include "qzfs/offload/scheduler.h"
#include "test_batch.h"

namespace qzfs::offload {
namespace {

using namespace std::chrono_literals;
using test::batch;
using clock_type = std::chrono::steady_clock;

std::vector<std::byte> text(std::size_t n, std::uint64_t seed) {
  auto d = test::make_data(test::data_class::text, n, seed);
  d[seed % n] = std::byte(seed);
  return d;
}

// One job straight through a session of `dev`; returns the result and its wall time.
struct timed {
  codec::compress_result r;
  clock_type::duration took;
};
timed run_one(device_session& s, int level, const std::vector<std::byte>& in, std::vector<std::byte>& out) {
  const auto t0 = clock_type::now();
  auto r = s.compress(level, in, out);
  return {r, clock_type::now() - t0};
}

// zlib, not the codec layer, decodes the member: the model's output is an ordinary gzip member.
std::vector<std::byte> gunzip(std::span<const std::byte> member, std::size_t n) {
  std::vector<std::byte> back(n + 1);
  z_stream z{};
  EXPECT_EQ(inflateInit2(&z, 16 + MAX_WBITS), Z_OK);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(member.data()));
  z.avail_in = static_cast<uInt>(member.size());
  z.next_out = reinterpret_cast<Bytef*>(back.data());
  z.avail_out = static_cast<uInt>(back.size());
  EXPECT_EQ(inflate(&z, Z_FINISH), Z_STREAM_END);
  EXPECT_EQ(z.avail_in, 0u) << "one member, nothing after it";
  back.resize(z.total_out);
  inflateEnd(&z);
  return back;
}

std::uint64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

TEST(model_device, service_time_is_latency_plus_size_over_an_instances_share) {
  model_device d({.gbps = 8, .latency = 100us, .instances = 1});
  // 8 Gbps on one instance: one byte a nanosecond.
  EXPECT_EQ(d.service_time(131072), 131072ns + 100us);
  model_device four({.gbps = 8, .latency = 100us, .instances = 4});
  EXPECT_EQ(four.service_time(131072), 4 * 131072ns + 100us) << "each instance serves a quarter of the card";

  // A slow card (10.5 ms for 128 KiB): a job takes its modelled time, not the time to compute it.
  model_device slow({.gbps = 0.1, .latency = 40us, .instances = 1});
  auto s = slow.open_session();
  ASSERT_TRUE(s.session) << s.reason;
  auto in = text(128 * 1024, 1);
  std::vector<std::byte> out(in.size());
  auto t = run_one(*s.session, 1, in, out);
  ASSERT_EQ(t.r.st, codec::status::ok);
  EXPECT_GE(t.took, slow.service_time(in.size()));
  EXPECT_EQ(slow.jobs(), 1u);
  // Unless this machine took longer than that to compress it (a sanitizer build, cold contexts):
  // an overrun, counted, and the job done when the compression is.
  if (slow.overruns() == 0) EXPECT_LT(t.took, slow.service_time(in.size()) + 50ms);
}

TEST(model_device, instances_work_in_parallel_and_a_job_waits_for_a_free_one) {
  // 4 instances, ~21 ms per 128 KiB job each.
  model_device d({.gbps = 0.2, .latency = 0us, .instances = 4});
  const auto one = d.service_time(128 * 1024);
  auto run = [&](unsigned jobs) {
    std::vector<std::unique_ptr<device_session>> ss;
    for (unsigned i = 0; i < jobs; ++i) ss.push_back(d.open_session().session);
    std::vector<std::vector<std::byte>> in, out;
    for (unsigned i = 0; i < jobs; ++i) {
      in.push_back(text(128 * 1024, i + 1));
      out.emplace_back(128 * 1024);
    }
    std::vector<codec::status> st(jobs, codec::status::error);
    const auto t0 = clock_type::now();
    {
      std::vector<std::jthread> ts;
      for (unsigned i = 0; i < jobs; ++i)
        ts.emplace_back([&, i] { st[i] = ss[i]->compress(1, in[i], out[i]).st; });
    }
    for (auto s : st) EXPECT_EQ(s, codec::status::ok);
    return clock_type::now() - t0;
  };
  const auto four = run(4);
  EXPECT_GE(four, one);
  // Upper bounds with room for a loaded machine (the compression itself runs on the callers'
  // threads); one after another would take 4 and 8 times one.
  EXPECT_LT(four, 3 * one) << "four jobs on four instances run side by side";
  EXPECT_EQ(d.peak_busy(), 4u);
  const auto eight = run(8);
  EXPECT_GE(eight, 2 * one) << "the fifth job waits for a free instance";
  EXPECT_LT(eight, 5 * one);
  EXPECT_EQ(d.peak_busy(), 4u) << "never more than the instances at once";
}

TEST(model_device, output_is_a_real_gzip_member_at_every_level) {
  model_device d({});
  auto s = d.open_session();
  ASSERT_TRUE(s.session);
  for (int level : {1, 3, 6, 9}) {
    auto in = text(100 * 1000, static_cast<std::uint64_t>(level));
    std::vector<std::byte> out(in.size());
    auto r = s.session->compress(level, in, out);
    ASSERT_EQ(r.st, codec::status::ok) << level;
    EXPECT_LT(r.size, in.size() / 2) << "text compresses";
    EXPECT_TRUE(gunzip(std::span(out).first(r.size), in.size()) == in) << level;
  }
  // Too little room: does_not_fit, as a card reports an overflow.
  auto in = test::make_data(test::data_class::random, 64 * 1024, 3);
  std::vector<std::byte> out(in.size() * 9 / 10);
  EXPECT_EQ(s.session->compress(1, in, out).st, codec::status::does_not_fit);
}

TEST(model_device, its_cpu_time_is_counted_apart_from_the_callers) {
  model_device d({.gbps = 1000, .latency = 0us, .instances = 2});  // compute-bound: all CPU
  auto s = d.open_session();
  ASSERT_TRUE(s.session);
  std::vector<std::vector<std::byte>> ins;
  for (int i = 0; i < 30; ++i) ins.push_back(text(128 * 1024, static_cast<std::uint64_t>(i + 1)));
  std::vector<std::byte> out(128 * 1024);
  const auto thread0 = thread_cpu_ns();
  for (auto& in : ins) ASSERT_EQ(s.session->compress(9, in, out).st, codec::status::ok);
  const auto thread = thread_cpu_ns() - thread0;
  const auto dev = d.cpu_ns();
  // The card computes on the session's thread (as a card works while its caller waits), and
  // that CPU time is the card's: what is left for the host is the session's own bookkeeping.
  EXPECT_GT(dev, 5'000'000u) << "30 records at gzip-9 cost the device milliseconds";
  EXPECT_LE(dev, thread) << "counted from the calling thread's own CPU time";
  EXPECT_LT(thread - dev, dev / 4) << "the compression is the device's CPU time, not the host's";
  EXPECT_GT(d.overruns(), 0u) << "a 1000 Gbps card is faster than this machine: the jobs overran";

  // Through the backend's counters, also behind a fault_device.
  auto inner = std::make_unique<model_device>(model_spec{});
  model_device* md = inner.get();
  accel_backend accel(std::make_unique<fault_device>(std::move(inner), fault_spec{}), {});
  cpu_backend cpu({.workers = 1});
  scheduler sched(cpu, &accel, {.accel_bias = 1e9});
  batch b(20, 64 * 1024);
  sched.run(b.jobs);
  b.check_all_round_trip();
  EXPECT_GT(sched.stats().to_accel, 0u);
  EXPECT_GT(md->cpu_ns(), 0u);
  EXPECT_EQ(accel.stats().device_cpu_ns, md->cpu_ns());
  EXPECT_EQ(cpu.stats().device_cpu_ns, 0u);
}

TEST(model_spec, parses_model_and_fault_items_and_refuses_clearly) {
  auto s = parse_model_spec("gbps=24+latency=40us+instances=4");
  EXPECT_EQ(s.model.gbps, 24);
  EXPECT_EQ(s.model.latency, 40us);
  EXPECT_EQ(s.model.instances, 4u);
  EXPECT_FALSE(s.has_faults);
  s = parse_model_spec("gbps=2.5+latency=1ms+error=0.1+timeout=0.01+garbage=0.05+seed=7");
  EXPECT_EQ(s.model.gbps, 2.5);
  EXPECT_EQ(s.model.latency, 1000us);
  EXPECT_TRUE(s.has_faults);
  EXPECT_EQ(s.faults.error, 0.1);
  EXPECT_EQ(s.faults.timeout, 0.01);
  EXPECT_EQ(s.faults.garbage, 0.05);
  EXPECT_EQ(s.faults.seed, 7u);
  s = parse_model_spec("instances=2,latency=5");  // ',' too, outside mount options
  EXPECT_EQ(s.model.instances, 2u);
  EXPECT_EQ(s.model.latency, 5us);
  s = parse_model_spec("");
  EXPECT_EQ(s.model.gbps, 24);
  EXPECT_THROW(parse_model_spec("gbps=0"), std::invalid_argument);
  EXPECT_THROW(parse_model_spec("gbps=fast"), std::invalid_argument);
  EXPECT_THROW(parse_model_spec("instances=0"), std::invalid_argument);
  EXPECT_THROW(parse_model_spec("instances=1.5"), std::invalid_argument);
  EXPECT_THROW(parse_model_spec("latency=3h"), std::invalid_argument);
  EXPECT_THROW(parse_model_spec("explode=1"), std::invalid_argument);
  EXPECT_THROW(parse_model_spec("error=2"), std::invalid_argument);
  EXPECT_THROW(parse_model_spec("gbps"), std::invalid_argument);

  EXPECT_NO_THROW(check_accel_spec("model", "accel"));
  EXPECT_NO_THROW(check_accel_spec("model:gbps=24+latency=40us+instances=4+error=0.1", "accel"));
  EXPECT_THROW(check_accel_spec("model:gbps=x", "accel"), std::invalid_argument);
  EXPECT_THROW(check_accel_spec("models", "accel"), std::invalid_argument);

  auto a = make_accel("model:instances=3", "", 128 * 1024, "full");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->name(), "model");
  EXPECT_EQ(a->sessions(), 3u) << "one backend session per instance";
  EXPECT_EQ(a->state(), health::up);
  auto f = make_accel("model:gbps=24+error=0.5", "", 128 * 1024, "crc");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->name(), "fault(model)");
}

// A card faster than the cores (24 Gbps, 4 instances, against 2 CPU workers): with the default
// routing rule, most eligible records go to it, fed in batches of 8 as the store submits them.
// (On a 2-core machine the card's instances compute on the same cores as the CPU workers, so its
// measured service time is several times the modelled one: "most", not "nearly all".)
TEST(model_device, a_card_faster_than_the_cores_takes_most_eligible_records) {
  cpu_backend cpu({.workers = 2});
  auto accel = make_accel("model:gbps=24+latency=40us+instances=4", "", 128 * 1024, "full");
  ASSERT_TRUE(accel);
  scheduler sched(cpu, accel.get());  // the default options: the mount's
  std::uint64_t n = 0;
  for (int round = 0; round < 40; ++round) {
    batch b(8, 128 * 1024);
    sched.run(b.jobs);
    b.check_all_round_trip();
    n += 8;
  }
  const auto s = sched.stats();
  const auto eligible = s.to_accel + s.overflow + s.not_serving;
  EXPECT_EQ(s.to_accel + s.to_cpu, n);
  EXPECT_GT(s.to_accel, eligible / 2) << "to_accel " << s.to_accel << " of " << eligible << " eligible, overflow "
                                          << s.overflow << "; service ns: card " << accel->stats().service_ns
                                          << ", cpu " << cpu.stats().service_ns;
}

// A card faster than this machine can stand in for (1000 Gbps: every job overruns): the time
// the machine took beyond the modelled one is counted apart (emulation_ns), and neither the
// device's time nor the routing's time per job includes it. Without that, the routing judged the
// card by the cores that compute for it and sent the cores' share back to the CPU.
TEST(model_device, its_overruns_are_left_out_of_the_device_time_and_the_routing) {
  auto inner = std::make_unique<model_device>(model_spec{.gbps = 1000, .latency = 0us, .instances = 1});
  model_device* md = inner.get();
  accel_backend::options o;
  o.verify = accel_backend::verify_mode::crc;
  accel_backend accel(std::move(inner), o);
  cpu_backend cpu({.workers = 1});
  scheduler sched(cpu, &accel, {.accel_bias = 1e9});
  constexpr std::size_t n = 20, size = 128 * 1024;
  batch warm(4, size);
  sched.run(warm.jobs);  // untried, the card takes one job at a time until its speed is known
  batch b(n, size);
  sched.run(b.jobs);
  b.check_all_round_trip();
  const auto a = accel.stats();
  ASSERT_GE(a.completed, n / 2) << "the card did most of them";
  ASSERT_GT(md->overruns(), 0u) << "a 1000 Gbps card overruns here";
  const auto modelled = static_cast<std::uint64_t>(md->service_time(size).count());
  EXPECT_GT(a.emulation_ns, 0u);
  EXPECT_LT(a.device_ns, a.completed * (modelled + 1'000'000)) << "the card's time, ~1 us a job, not this machine's";
  EXPECT_GT(a.emulation_ns, a.device_ns) << "computing a record takes this machine far longer than the card";
  EXPECT_LT(a.service_ns, a.busy_ns / a.completed) << "routing sees the card's time and the verification, not the overrun";
}

// A card much faster than the CPU with a single place in its queue: a batch waits for the place
// rather than overflowing to the CPU at once (before, every job but the first went to the CPU),
// and still finishes whole.
TEST(scheduler, waits_for_a_place_at_a_full_accelerator_much_faster_than_the_cpu) {
  accel_backend::options o;
  o.sessions = 1;
  o.queue_capacity = 1;
  o.verify = accel_backend::verify_mode::crc;
  accel_backend accel(std::make_unique<model_device>(model_spec{.gbps = 24, .latency = 40us, .instances = 1}), o);
  cpu_backend cpu({.workers = 1});
  scheduler sched(cpu, &accel);  // the default rule, the mount's
  batch warm(8, 128 * 1024);
  sched.run(warm.jobs);  // both service times known
  const auto before = sched.stats();
  batch b(32, 128 * 1024);
  sched.run(b.jobs);
  b.check_all_round_trip();
  const auto s = sched.stats();
  EXPECT_GT(s.waited - before.waited, 0u);
  EXPECT_GE(s.to_accel - before.to_accel, 24u) << "overflow " << s.overflow - before.overflow << "; service ns: card "
                                               << accel.stats().service_ns << ", cpu " << cpu.stats().service_ns;
  EXPECT_EQ(s.to_accel + s.to_cpu, 40u);
}

// A card slower than the watchdog allows (10 s a job): the job times out and is redone on the
// CPU, and the teardown's abort reaches the model through the fault_device in front of it, so
// its instance lets go at once instead of after its modelled 10 s.
TEST(model_device, a_job_slower_than_the_watchdog_is_redone_and_its_instance_let_go) {
  const auto t0 = clock_type::now();
  {
    auto inner = std::make_unique<model_device>(model_spec{.gbps = 24, .latency = 10s, .instances = 1});
    model_device* md = inner.get();
    accel_backend::options o;
    o.timeout = 100ms;
    accel_backend accel(std::make_unique<fault_device>(std::move(inner), fault_spec{}), o);
    cpu_backend cpu({.workers = 1});
    scheduler sched(cpu, &accel, {.accel_bias = 1e9});
    batch b(4, 64 * 1024);
    sched.run(b.jobs);
    b.check_all_round_trip();
    EXPECT_GE(sched.stats().redone, 1u);
    EXPECT_GE(accel.stats().teardowns, 1u);
    for (int i = 0; i < 100 && md->jobs() == 0; ++i) std::this_thread::sleep_for(10ms);
    EXPECT_EQ(md->jobs(), 1u) << "the stuck job was let go";
  }
  EXPECT_LT(clock_type::now() - t0, 5s);
}

struct composed_case {
  const char* name;
  const char* spec;
};
void PrintTo(const composed_case& c, std::ostream* os) { *os << c.name << " (" << c.spec << ")"; }
class composed : public ::testing::TestWithParam<composed_case> {};

// Faults composed with the model (what accel=model:...+error=...+timeout=... builds): the
// watchdog, verification, teardown and re-probe run against it; no job is lost, every output
// decodes to its input, the counters account for every job, and once healed it takes traffic.
TEST_P(composed, teardown_reprobe_and_no_job_lost) {
  const auto ms = parse_model_spec(GetParam().spec);
  ASSERT_TRUE(ms.has_faults);
  auto dev = std::make_unique<fault_device>(std::make_unique<model_device>(ms.model, 128 * 1024), ms.faults);
  fault_device* fd = dev.get();
  accel_backend::options o;
  o.sessions = ms.model.instances;
  o.timeout = 200ms;
  o.backoff_initial = 20ms;
  o.backoff_max = 200ms;
  accel_backend accel(std::move(dev), o);
  cpu_backend cpu({.workers = 2});
  scheduler sched(cpu, &accel, {.accel_bias = 1e9});
  std::uint64_t total = 0;
  for (int round = 0; round < 60 && (round < 6 || accel.stats().teardowns < 2); ++round) {
    batch b(40, 32 * 1024);
    sched.run(b.jobs);
    b.check_all_round_trip();
    total += b.jobs.size();
    std::this_thread::sleep_for(30ms);  // let the backoff expire
  }
  const auto s = sched.stats();
  const auto a = accel.stats();
  const auto c = cpu.stats();
  EXPECT_EQ(s.to_accel + s.to_cpu, total);
  EXPECT_EQ(a.submitted, s.to_accel);
  EXPECT_EQ(a.submitted, a.completed + a.failed) << "accelerator jobs unaccounted for";
  EXPECT_EQ(s.redone, a.failed) << "every failure is redone on the CPU";
  EXPECT_EQ(c.submitted, s.to_cpu + s.redone);
  EXPECT_EQ(c.completed, c.submitted);
  EXPECT_GT(a.failed, 0u);
  EXPECT_GE(a.teardowns, 1u);
  EXPECT_GT(a.probes, 1u) << "re-probed";
  EXPECT_GT(a.completed, 0u) << "it worked between failures";

  fd->set(fault_spec{});
  for (int i = 0; i < 100 && !accel.serving(); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(accel.serving());
  const auto before = accel.stats().completed;
  batch b(40, 32 * 1024);
  sched.run(b.jobs);
  b.check_all_round_trip();
  EXPECT_GT(accel.stats().completed, before) << "traffic returns to the healed card";
}

INSTANTIATE_TEST_SUITE_P(
    faults, composed,
    ::testing::Values(composed_case{"error", "gbps=24+instances=4+error=0.05+seed=3"},
                      composed_case{"timeout", "gbps=24+instances=4+timeout=0.02+seed=5"},
                      composed_case{"garbage", "gbps=24+instances=4+garbage=0.05+seed=7"},
                      composed_case{"mixed", "gbps=24+latency=40us+instances=4+error=0.1+timeout=0.01+garbage=0.05"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace qzfs::offload
