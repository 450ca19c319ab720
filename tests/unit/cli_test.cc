// `qzfs bench` run in-process on real files.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <cctype>
#include <set>
#include <sstream>

#include "cli/app.h"
#include "cli/progress.h"
#include "test_data.h"

namespace qzfs::cli {
namespace {

struct run_result {
  int code;
  std::string out, err;
};

run_result run_qzfs(std::vector<std::string> args) {
  args.insert(args.begin(), "qzfs");
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  char *obuf = nullptr, *ebuf = nullptr;
  std::size_t olen = 0, elen = 0;
  FILE* out = open_memstream(&obuf, &olen);
  FILE* err = open_memstream(&ebuf, &elen);
  int code = run(static_cast<int>(argv.size()), argv.data(), out, err);
  std::fclose(out);
  std::fclose(err);
  run_result r{code, std::string(obuf, olen), std::string(ebuf, elen)};
  std::free(obuf);
  std::free(ebuf);
  return r;
}

class bench_cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("qzfs-bench-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_ / "sub");
    auto text = test::make_data(test::data_class::text, 300000);
    auto rnd = test::make_data(test::data_class::random, 200000, 7);
    write(dir_ / "sub" / "text.txt", text);
    write(dir_ / "random.bin", rnd);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  static void write(const std::filesystem::path& p, const std::vector<std::byte>& d) {
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(d.data()), static_cast<std::streamsize>(d.size()));
  }
  std::filesystem::path dir_;
};

TEST_F(bench_cli, json_reports_every_codec_against_the_baseline) {
  auto r = run_qzfs({"bench", "--json", "--min-time", "0", "--codecs", "gzip-1,zstd-1,lz4", "--threads", "2",
                     "--scatter", "8", dir_.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["corpus"]["files"], 2);
  EXPECT_EQ(j["corpus"]["bytes"], 500000);
  // 300000 = 2 full records + 1 partial; 200000 = 1 full + 1 partial.
  EXPECT_EQ(j["corpus"]["records"], 5);
  ASSERT_EQ(j["results"].size(), 4u);
  EXPECT_EQ(j["results"][0]["codec"], "zlib-6");
  for (const auto& res : j["results"]) {
    EXPECT_TRUE(res["verified"].get<bool>());
    // The two random records never fit under the 10% rule; the three text records do.
    EXPECT_EQ(res["not_fit"], 2) << res["codec"];
    EXPECT_GT(res["ratio"].get<double>(), 1.2) << res["codec"];
    EXPECT_GT(res["compress_mib_s_total"].get<double>(), 0);
    EXPECT_GT(res["decompress_mib_s_total"].get<double>(), 0);
  }
}

TEST_F(bench_cli, scaling_measures_one_thread_in_the_same_run) {
  auto r = run_qzfs({"bench", "--json", "--min-time", "0", "--codecs", "lz4", "--baseline", "", "--threads", "2",
                     "--scaling", dir_.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["results"].size(), 1u);
  EXPECT_GT(j["results"][0]["compress_mib_s_one_thread"].get<double>(), 0);
  EXPECT_EQ(j["threads"], 2);
}

TEST_F(bench_cli, accel_fault_rehearsal_reports_backends_and_loses_nothing) {
  auto r = run_qzfs({"bench", "--json", "--min-time", "0", "--codecs", "gzip-1", "--baseline", "", "--accel",
                     "fault:error=0.3,seed=4", dir_.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  const auto& res = j["results"][0];
  EXPECT_TRUE(res["verified"].get<bool>());
  EXPECT_EQ(res["not_fit"], 2);
  const auto& routing = res["routing"];
  EXPECT_EQ(routing["to_accel"].get<int>() + routing["to_cpu"].get<int>(), 5);
  ASSERT_EQ(res["backends"].size(), 2u);
  EXPECT_EQ(res["backends"][0]["name"], "cpu");
  EXPECT_EQ(res["backends"][1]["name"], "fault(software)");
  const auto& acc = res["backends"][1];
  EXPECT_EQ(acc["submitted"].get<int>(), acc["completed"].get<int>() + acc["failed"].get<int>());
  EXPECT_EQ(routing["redone"], acc["failed"]);
}

TEST_F(bench_cli, accel_qat_without_the_library_says_why_and_runs_on_the_cpu) {
  auto r = run_qzfs({"bench", "--json", "--min-time", "0", "--codecs", "gzip-1", "--baseline", "", "--accel", "qat",
                     "--qatzip-lib", "/nonexistent/libqatzip.so.3", dir_.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  const auto& qat = j["results"][0]["backends"][1];
  EXPECT_EQ(qat["health"], "unavailable");
  EXPECT_NE(qat["reason"].get<std::string>().find("cannot load /nonexistent/libqatzip.so.3"), std::string::npos);
  EXPECT_EQ(j["results"][0]["routing"]["to_cpu"], 5);
}

TEST_F(bench_cli, accel_qat_runs_end_to_end_on_the_standin_library) {
  auto r = run_qzfs({"bench", "--min-time", "0", "--codecs", "gzip-1", "--baseline", "", "--accel", "qat",
                     "--qatzip-lib", QZFS_STANDIN_LIB, dir_.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("qat              up"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("records to the accelerator"), std::string::npos) << r.out;
}

TEST_F(bench_cli, policy_reports_what_the_engine_decided_per_class) {
  auto r = run_qzfs({"bench", "--json", "--policy", "gzip", "--threads", "2", (dir_ / "sub").string(),
                     (dir_ / "random.bin").string()});
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["policy"], "gzip");
  ASSERT_EQ(j["classes"].size(), 2u);
  const auto& text = j["classes"][0];
  const auto& rnd = j["classes"][1];
  EXPECT_EQ(text["records"], 3);
  EXPECT_EQ(text["compressed"], 3);
  EXPECT_EQ(text["codecs"]["gzip-1"], 3);
  EXPECT_EQ(rnd["records"], 2);
  EXPECT_EQ(rnd["raw_checker"], 2) << "random data is skipped by the checker";
  EXPECT_EQ(j["backends"][0]["submitted"], 3) << "only the text records reached a codec";

  r = run_qzfs({"bench", "--policy", "brotli", dir_.string()});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("unknown policy 'brotli'"), std::string::npos) << r.err;
}

TEST_F(bench_cli, faults_can_be_injected_in_front_of_the_qat_path) {
  auto r = run_qzfs({"bench", "--json", "--min-time", "0", "--codecs", "gzip-1", "--baseline", "", "--accel",
                     "fault-qat:error=1", "--qatzip-lib", QZFS_STANDIN_LIB, dir_.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  const auto& res = j["results"][0];
  EXPECT_TRUE(res["verified"].get<bool>());
  EXPECT_EQ(res["backends"][1]["name"], "fault(qat)");
  EXPECT_GE(res["backends"][1]["failed"].get<int>(), 1);
  EXPECT_EQ(res["routing"]["redone"], res["backends"][1]["failed"]);
}

TEST_F(bench_cli, table_names_its_baseline) {
  auto r = run_qzfs({"bench", "--min-time", "0", "--codecs", "gzip-6", dir_.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("zlib-6"), std::string::npos);
  EXPECT_NE(r.out.find("gzip-6"), std::string::npos);
  EXPECT_NE(r.out.find("2 files"), std::string::npos) << r.out;
}

TEST_F(bench_cli, clear_errors_for_bad_input) {
  auto r = run_qzfs({"bench", "--codecs", "gzip-42", dir_.string()});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("unknown codec 'gzip-42': gzip takes levels 1-12 (gzip = gzip-1)"), std::string::npos) << r.err;

  r = run_qzfs({"bench", (dir_ / "missing").string()});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("missing"), std::string::npos) << r.err;

  r = run_qzfs({"bench", "--record-size", "1K", dir_.string()});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--record-size"), std::string::npos) << r.err;

  r = run_qzfs({"bench"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("PATH"), std::string::npos) << r.err;

  r = run_qzfs({"bench", "--accel", "gpu", dir_.string()});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--accel must be"), std::string::npos) << r.err;

  r = run_qzfs({"bench", "--accel", "fault:explode=1", dir_.string()});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("unknown key 'explode'"), std::string::npos) << r.err;

  r = run_qzfs({"frobnicate"});
  EXPECT_NE(r.code, 0);
}

// One meaning per name (docs/decisions/0008): bench's `gzip` is the mount's and pack's gzip-1, and
// the results name the level.
TEST_F(bench_cli, gzip_means_gzip_1_in_bench_as_in_a_mount) {
  auto r = run_qzfs({"bench", "--json", "--min-time", "0", "--codecs", "gzip,zstd,gzip-1", "--baseline", "",
                     dir_.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["results"].size(), 3u);
  EXPECT_EQ(j["results"][0]["codec"], "gzip-1");
  EXPECT_EQ(j["results"][1]["codec"], "zstd-3");
  EXPECT_EQ(j["results"][2]["codec"], "gzip-1");
  EXPECT_EQ(j["results"][0]["ratio"], j["results"][2]["ratio"]);
  r = run_qzfs({"bench", "--json", "--min-time", "0", "--codecs", "gzip", "--baseline", "gzip-1", dir_.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["results"].size(), 1u) << "gzip is the baseline gzip-1: run once";
}

TEST(cli, help_of_mount_bench_and_pack_says_what_gzip_means) {
  for (const char* cmd : {"mount", "bench", "pack"}) {
    auto r = run_qzfs({cmd, "--help"});
    EXPECT_EQ(r.code, 0) << cmd;
    EXPECT_NE(r.out.find("gzip = gzip-1"), std::string::npos) << cmd << ":\n" << r.out;
    EXPECT_NE(r.out.find("zstd = zstd-3"), std::string::npos) << cmd << ":\n" << r.out;
  }
  auto r = run_qzfs({"mount", "--help"});
  EXPECT_NE(r.out.find("default gzip, which is gzip-1"), std::string::npos) << r.out;
  r = run_qzfs({"pack", "--help"});
  EXPECT_NE(r.out.find("default gzip, which is gzip-1"), std::string::npos) << r.out;
}

// The manual page is made from the same definitions as --help: every subcommand --help lists has
// its section, and every long option of it appears (roff-escaped), with no line that roff would
// take for an unknown request.
TEST(cli, the_manual_page_has_every_command_and_option_of_help) {
  const auto page = run_qzfs({"man"});
  ASSERT_EQ(page.code, 0) << page.err;
  EXPECT_EQ(page.out.rfind(".\\\" Generated", 0), 0u) << page.out.substr(0, 200);
  const auto help = run_qzfs({"--help"});
  std::istringstream lines(help.out.substr(help.out.find("Subcommands:")));
  std::string line;
  std::getline(lines, line);
  int commands = 0;
  auto escaped = [](std::string s) {
    std::string o;
    for (char c : s) o += c == '-' ? std::string("\\-") : std::string(1, c);
    return o;
  };
  while (std::getline(lines, line)) {
    std::istringstream w(line);
    std::string cmd;
    if (!(w >> cmd)) continue;
    ++commands;
    EXPECT_NE(page.out.find(".SS \"qzfs " + cmd + "\""), std::string::npos) << cmd;
    const auto sub = run_qzfs({cmd, "--help"});
    std::size_t at = 0;
    while ((at = sub.out.find("--", at)) != std::string::npos) {
      std::size_t end = at + 2;
      while (end < sub.out.size() && (std::isalnum(static_cast<unsigned char>(sub.out[end])) || sub.out[end] == '-')) ++end;
      const std::string opt = sub.out.substr(at, end - at);
      if (opt.size() > 3 && opt != "--help") {
        EXPECT_NE(page.out.find(escaped(opt)), std::string::npos) << cmd << " " << opt;
      }
      at = end;
    }
  }
  EXPECT_GE(commands, 8) << help.out;
  EXPECT_EQ(page.out.find(".SS \"qzfs man\""), std::string::npos) << "the hidden command has no section";
  std::istringstream roff(page.out);
  while (std::getline(roff, line)) {
    if (line.empty() || line[0] != '.') continue;
    const std::string req = line.substr(0, line.find(' '));
    static const std::set<std::string> known = {".\\\"", ".TH", ".SH", ".SS", ".PP", ".TP", ".B", ".IP", ".br", ".nf", ".fi"};
    EXPECT_TRUE(known.count(req)) << "unknown roff request: " << line;
  }
}

// The progress line of pack, unpack and check: drawn in place (carriage returns, no newline),
// with the share done, the counts and the bytes; a line said meanwhile is printed whole above
// it; cleared at the end, so that nothing of it stays before the summary. Not on a pipe.
TEST(cli, the_progress_line_is_drawn_in_place_and_cleared) {
  char* buf = nullptr;
  std::size_t len = 0;
  FILE* out = open_memstream(&buf, &len);
  {
    progress bar(out, 4, 4 << 20, "files", true);
    ASSERT_TRUE(bar.drawing());
    for (int i = 0; i < 3; ++i) {
      progress::item step{bar};
      step.bytes = 1 << 20;
      if (i == 1) bar.say(out, "damaged: record 3");
    }
    { progress::item last{bar}; last.bytes = 1 << 20; }  // the last one is always drawn
    bar.finish();
    std::fputs("summary\n", out);
  }
  std::fclose(out);
  const std::string s(buf, len);
  std::free(buf);
  EXPECT_NE(s.find("100%  4/4 files  4.0/4.0 MiB"), std::string::npos) << s;
  EXPECT_NE(s.find("damaged: record 3\n"), std::string::npos) << s;
  EXPECT_EQ(s.find('\n'), s.find("damaged: record 3\n") + 17) << "no newline of the bar's own: " << s;
  const auto last_cr = s.rfind('\r');
  ASSERT_NE(last_cr, std::string::npos);
  EXPECT_EQ(s.substr(last_cr + 1), "summary\n") << "cleared before the summary: " << s;
  EXPECT_EQ(s.substr(s.rfind('\r', last_cr - 1) + 1, last_cr - s.rfind('\r', last_cr - 1) - 1).find_first_not_of(' '), std::string::npos)
      << "the line is blanked: " << s;
  // Not a terminal, not forced: nothing drawn.
  FILE* pipe_like = open_memstream(&buf, &len);
  {
    progress quiet(pipe_like, 2, 10, "files");
    EXPECT_FALSE(quiet.drawing());
    progress::item one{quiet};
  }
  std::fclose(pipe_like);
  EXPECT_EQ(len, 0u);
  std::free(buf);
}

// bench's line: phases (no bytes), and what runs now at its end; recompress's: bytes of a file
// part way (no item yet).
TEST(cli, the_progress_line_shows_phases_with_a_label_and_parts_of_a_file) {
  char* buf = nullptr;
  std::size_t len = 0;
  FILE* out = open_memstream(&buf, &len);
  {
    progress bar(out, 4, 0, "phases", true);
    bar.label("zstd-3 decompress");
    bar.reach(4);
    progress part(out, 2, 8 << 20, "files", true);
    part.advance(0, 8 << 20);  // both files' bytes, neither finished: the share is by bytes
  }
  std::fclose(out);
  const std::string s(buf, len);
  std::free(buf);
  EXPECT_NE(s.find("100%  4/4 phases  zstd-3 decompress"), std::string::npos) << "no MiB for phases: " << s;
  EXPECT_NE(s.find("100%  0/2 files  8.0/8.0 MiB"), std::string::npos) << s;
}

TEST(cli, help_lists_the_bench_options) {
  auto r = run_qzfs({"bench", "--help"});
  EXPECT_EQ(r.code, 0);
  for (const char* opt : {"--record-size", "--threads", "--codecs", "--json", "--scatter", "--min-saving"})
    EXPECT_NE(r.out.find(opt), std::string::npos) << opt;
}

}  // namespace
}  // namespace qzfs::cli

namespace qzfs::cli {
namespace {

// `qzfs pack` then `qzfs check` on a real directory; then one flipped byte named by check.
TEST_F(bench_cli, pack_then_check_then_damage_is_named) {
  write(dir_ / "empty", {});
  write(dir_ / "linked", test::make_data(test::data_class::text, 5000));
  std::filesystem::create_hard_link(dir_ / "linked", dir_ / "linked2");
  const auto text_before = test::read_file(dir_ / "sub" / "text.txt");
  auto r = run_qzfs({"pack", "--policy", "gzip", "--record-size", "64K", "--threads", "2", dir_.string()});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("packed 2 files (3 skipped, 0 failed)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("policy gzip, which is gzip-1"), std::string::npos) << r.out;
  EXPECT_LT(std::filesystem::file_size(dir_ / "sub" / "text.txt"), text_before.size() / 2);

  r = run_qzfs({"check", "--json", dir_.string()});
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["containers"], 2);
  EXPECT_EQ(j["plain_files"], 3);
  EXPECT_EQ(j["damaged_files"], 0);
  EXPECT_GT(j["ratio"].get<double>(), 1.3);
  EXPECT_GT(j["gzip"].get<int>(), 0);
  EXPECT_GT(j["raw"].get<int>(), 0);  // random.bin

  // Packing again changes nothing.
  r = run_qzfs({"pack", dir_.string()});
  EXPECT_NE(r.out.find("packed 0 files (5 skipped"), std::string::npos) << r.out;

  // One byte flipped in the middle of the text container: check names the record and fails.
  auto bytes = test::read_file(dir_ / "sub" / "text.txt");
  bytes[bytes.size() / 2] ^= std::byte{0x10};
  write(dir_ / "sub" / "text.txt", bytes);
  r = run_qzfs({"check", dir_.string()});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("text.txt: record "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 damaged"), std::string::npos) << r.out;

  r = run_qzfs({"pack", "--record-size", "3K", dir_.string()});
  EXPECT_EQ(r.code, 2);
  r = run_qzfs({"check", (dir_ / "nope").string()});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("no such file"), std::string::npos);
}

}  // namespace
}  // namespace qzfs::cli
