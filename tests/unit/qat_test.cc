// The QAT backend's whole lifecycle without hardware: QATzip's API is served by a stand-in
// library loaded through the real dlopen path (tests/qat_standin/), whose failures are switched
// on and off from here. Every case checks that no job is lost or written wrong.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "qzfs/offload/scheduler.h"
#include "test_batch.h"

namespace qzfs::offload {
namespace {

using namespace std::chrono_literals;
using test::batch;

class qat : public ::testing::Test {
 protected:
  void SetUp() override {
    handle_ = dlopen(QZFS_STANDIN_LIB, RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(handle_, nullptr) << dlerror();
    control_ = reinterpret_cast<void (*)(const char*)>(dlsym(handle_, "qzfs_standin_control"));
    calls_ = reinterpret_cast<long (*)()>(dlsym(handle_, "qzfs_standin_calls"));
    dcalls_ = reinterpret_cast<long (*)()>(dlsym(handle_, "qzfs_standin_decompress_calls"));
    ASSERT_NE(dcalls_, nullptr);
    ASSERT_NE(control_, nullptr);
    control_("");
  }
  void TearDown() override {
    control_("");
    dlclose(handle_);
  }
  static accel_backend::options opts() {
    accel_backend::options o;
    o.sessions = 2;
    o.timeout = 5000ms;  // generous: sanitizer builds are slow; the hang test sets its own
    o.backoff_initial = 20ms;
    o.backoff_max = 200ms;
    return o;
  }
  static std::unique_ptr<device> standin() { return make_qat_device({.library = QZFS_STANDIN_LIB}); }
  // A CPU pool, the stand-in QAT backend and a scheduler that sends the device all it takes:
  // failure handling, not routing, is what these tests look at.
  struct rig {
    cpu_backend cpu;
    accel_backend accel;
    scheduler sched;
    explicit rig(accel_backend::options o, unsigned workers = 1, std::unique_ptr<device> dev = standin())
        : cpu({.workers = workers}), accel(std::move(dev), o), sched(cpu, &accel, {.accel_bias = 1e9}) {}
  };
  static void wait_up(accel_backend& a) {
    for (int i = 0; i < 200 && !a.serving(); ++i) std::this_thread::sleep_for(5ms);
  }
  // Payloads of the batch that the accelerator made and that were kept (a record that did not
  // fit is a completion too, with no payload).
  static std::size_t accel_payloads(const batch& b, const accel_backend& a) {
    std::size_t n = 0;
    for (const auto& j : b.jobs) n += j.st == codec::status::ok && std::string_view(j.ran_on) == a.name();
    return n;
  }
  static void check_accounting(scheduler& s, accel_backend& a, cpu_backend& c, std::uint64_t total) {
    auto ss = s.stats();
    auto as = a.stats();
    auto cs = c.stats();
    EXPECT_EQ(ss.to_accel + ss.to_cpu, total);
    EXPECT_EQ(as.submitted, ss.to_accel);
    EXPECT_EQ(as.submitted, as.completed + as.failed);
    EXPECT_EQ(ss.redone, as.failed);
    EXPECT_EQ(cs.submitted, ss.to_cpu + ss.redone);
  }

  void* handle_ = nullptr;
  void (*control_)(const char*) = nullptr;
  long (*calls_)() = nullptr;
  long (*dcalls_)() = nullptr;
};

TEST_F(qat, missing_library_says_why_and_the_cpu_does_the_work) {
  rig r(opts(), 1, make_qat_device({.library = "/nonexistent/libqatzip.so.3"}));
  auto& [cpu, accel, sched] = r;
  EXPECT_EQ(accel.state(), health::unavailable);
  EXPECT_NE(accel.reason().find("unavailable: cannot load /nonexistent/libqatzip.so.3"), std::string::npos)
      << accel.reason();
  batch b(10, 32 * 1024);
  sched.run(b.jobs);
  b.check_all_round_trip();
  EXPECT_EQ(sched.stats().to_accel, 0u);
}

TEST_F(qat, library_without_the_api_is_unavailable) {
  accel_backend accel(make_qat_device({.library = "libz.so.1"}), opts());
  EXPECT_EQ(accel.state(), health::unavailable);
  EXPECT_NE(accel.reason().find("lacks the QATzip API"), std::string::npos) << accel.reason();
}

TEST_F(qat, no_hardware_is_unavailable_with_qatzips_code) {
  control_("init=nohw");
  accel_backend accel(standin(), opts());
  EXPECT_EQ(accel.state(), health::unavailable);
  EXPECT_NE(accel.reason().find("QZ_NOSW_NO_HW"), std::string::npos) << accel.reason();
}

TEST_F(qat, healthy_device_compresses_verified_gzip_records) {
  rig r(opts());
  auto& [cpu, accel, sched] = r;
  ASSERT_EQ(accel.state(), health::up) << accel.reason();
  batch b(60, 64 * 1024, "gzip-1");
  sched.run(b.jobs);
  b.check_all_round_trip();
  std::size_t on_qat = 0;
  for (auto& j : b.jobs)
    if (std::string(j.ran_on) == "qat") {
      ++on_qat;
      if (j.st == codec::status::ok) {
        EXPECT_EQ(j.producer, codec::producer_id::qat);
      }
    }
  EXPECT_GT(on_qat, 0u);
  EXPECT_GT(calls_(), 0);
  EXPECT_EQ(accel.stats().failed, 0u);
  check_accounting(sched, accel, cpu, 60);
}

// Reads: gzip members decoded through qzDecompress, counted by the library; a decode that fails
// or comes back as other bytes is redone on the CPU and the device torn down.
TEST_F(qat, records_are_decoded_through_qzdecompress_and_its_failures_are_redone) {
  rig r(opts(), 1);
  auto& [cpu, accel, sched] = r;
  ASSERT_EQ(accel.state(), health::up) << accel.reason();
  ASSERT_TRUE(accel.decompresses());
  const long before = dcalls_();
  test::decode_batch b(40, 64 * 1024);
  sched.run(b.jobs);
  b.check_all_decoded();
  EXPECT_GT(dcalls_() - before, 0);
  EXPECT_EQ(static_cast<long>(accel.stats().decompressed), dcalls_() - before);
  for (const char* fault : {"derror=1", "dgarbage=1"}) {
    control_(fault);
    const auto down = accel.stats().teardowns;
    test::decode_batch f(20, 64 * 1024);
    sched.run(f.jobs);
    f.check_all_decoded();
    EXPECT_GT(accel.stats().teardowns, down) << fault;
    EXPECT_GT(sched.stats().decode_redone, 0u) << fault;
    control_("");
    wait_up(accel);
  }
}

TEST_F(qat, an_error_tears_it_down_the_job_is_redone_and_it_comes_back) {
  rig r(opts(), 1);
  auto& [cpu, accel, sched] = r;
  control_("error_at=3");
  // The device's third call fails. Until it has finished a job the scheduler gives it one at a
  // time, so on a loaded machine the CPU may take a whole batch before the device has had three:
  // batches continue until the failure has happened.
  std::uint64_t jobs = 0;
  for (int round = 0; round < 50 && accel.stats().failed == 0; ++round) {
    batch b(30, 32 * 1024);
    sched.run(b.jobs);
    b.check_all_round_trip();
    jobs += 30;
  }
  // The failed call, plus whatever was queued behind it when the device went down: all redone.
  EXPECT_GE(accel.stats().failed, 1u);
  EXPECT_EQ(accel.stats().teardowns, 1u);
  EXPECT_EQ(sched.stats().redone, accel.stats().failed);
  wait_up(accel);
  EXPECT_TRUE(accel.serving()) << accel.reason();
  const auto done = accel.stats().completed;
  batch b2(30, 32 * 1024);
  sched.run(b2.jobs);
  b2.check_all_round_trip();
  EXPECT_GT(accel.stats().completed, done) << "traffic did not return to the device";
  check_accounting(sched, accel, cpu, jobs + 30);
}

TEST_F(qat, garbage_output_is_never_trusted) {
  rig r(opts(), 1);
  auto& [cpu, accel, sched] = r;
  control_("garbage=1");
  batch b(30, 32 * 1024);
  sched.run(b.jobs);
  b.check_all_round_trip();  // every record decodes to its own bytes: the CPU redid them
  // Nothing the device made was kept; what it "completed" is only records that did not fit (no
  // output to trust: they are stored raw).
  EXPECT_EQ(accel_payloads(b, accel), 0u);
  EXPECT_GT(accel.stats().failed, 0u);
  check_accounting(sched, accel, cpu, 30);
}

TEST_F(qat, a_wrong_footer_checksum_is_caught_in_either_verify_mode) {
  for (auto mode : {accel_backend::verify_mode::full, accel_backend::verify_mode::crc}) {
    auto o = opts();
    o.verify = mode;
    rig r(o);
    auto& [cpu, accel, sched] = r;
    control_("badcrc=1");
    batch b(20, 32 * 1024);
    sched.run(b.jobs);
    b.check_all_round_trip();
    EXPECT_EQ(accel_payloads(b, accel), 0u);
    check_accounting(sched, accel, cpu, 20);
    control_("");
  }
}

TEST_F(qat, a_hang_times_out_the_cpu_redoes_the_jobs_and_late_answers_are_dropped) {
  auto o = opts();
  o.timeout = 150ms;
  rig r(o, 2);
  auto& [cpu, accel, sched] = r;
  control_("hang=1");
  batch b(20, 32 * 1024);
  sched.run(b.jobs);  // returns: the watchdog hands the stuck jobs back
  b.check_all_round_trip();
  EXPECT_GT(accel.stats().failed, 0u);
  EXPECT_GE(accel.stats().teardowns, 1u);
  control_("");  // the stuck calls return now; their answers must be dropped
  wait_up(accel);
  EXPECT_TRUE(accel.serving()) << accel.reason();
  b.check_all_round_trip();  // nothing was written into the finished jobs afterwards
  batch b2(20, 32 * 1024);
  sched.run(b2.jobs);
  b2.check_all_round_trip();
  check_accounting(sched, accel, cpu, 40);
}

TEST_F(qat, an_overflow_is_does_not_fit_and_its_partial_output_is_ignored) {
  rig r(opts(), 1);
  auto& [cpu, accel, sched] = r;
  control_("dirty_overflow=1");
  batch b(28, 32 * 1024);  // every 7th record is random: it overflows the 90% capacity
  sched.run(b.jobs);
  b.check_all_round_trip();
  std::size_t nofit = 0;
  for (auto& j : b.jobs) {
    if (j.st == codec::status::does_not_fit) {
      ++nofit;
      EXPECT_EQ(j.out_size, 0u);
    }
  }
  EXPECT_EQ(nofit, 4u);
  EXPECT_EQ(accel.stats().failed, 0u) << "an overflow is not a device failure";
  EXPECT_EQ(accel.stats().teardowns, 0u);
}

TEST_F(qat, failing_session_setup_is_retried_with_backoff) {
  control_("setup=fail");
  accel_backend accel(standin(), opts());
  EXPECT_EQ(accel.state(), health::down);
  EXPECT_NE(accel.reason().find("qzSetupSession: QZ_FAIL"), std::string::npos) << accel.reason();
  std::this_thread::sleep_for(100ms);
  EXPECT_GE(accel.stats().probes, 2u);
  control_("");
  wait_up(accel);
  EXPECT_TRUE(accel.serving()) << accel.reason();
}

}  // namespace
}  // namespace qzfs::offload
