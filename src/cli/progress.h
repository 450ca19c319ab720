#pragma once
// A progress line for long commands (pack, unpack, check, recompress, bench) when their output is a terminal:
//   [#########.............]  41%  1,204/2,931 files  512.0/1250.3 MiB  96.1 MiB/s  0:07 left
// redrawn in place at most 5 times a second and cleared at the end, so that what a command
// prints (damage, its one-line summary) is all that stays. Not on a terminal (a pipe, a log, a
// test's stream): nothing, the summary line is the record.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace qzfs::cli {

class progress {
 public:
  /// `what`: "files" and the like. `force`: draw even when `out` is not a terminal (tests).
  progress(std::FILE* out, std::uint64_t total_items, std::uint64_t total_bytes, std::string what, bool force = false);
  ~progress() { finish(); }
  progress(const progress&) = delete;
  progress& operator=(const progress&) = delete;

  /// One more item done, of `bytes`; a line is drawn when the last one is 200 ms old.
  void step(std::uint64_t bytes) { advance(1, bytes); }
  /// `items` more done (0: a part of the current one), of `bytes`.
  void advance(std::uint64_t items, std::uint64_t bytes);
  /// One item of a loop: counted with its bytes when it goes out of scope, however the loop's
  /// body leaves (a skip, a failure, the end).
  struct item {
    progress& bar;
    std::uint64_t bytes = 0;
    explicit item(progress& b) : bar(b) {}
    item(const item&) = delete;
    item& operator=(const item&) = delete;
    ~item() { bar.step(bytes); }
  };
  /// What is under way now, shown at the end of the line (bench: the codec and its phase).
  void label(std::string what) { label_ = std::move(what); }
  /// Sets the items done so far (bench: phases), redrawn as advance() does.
  void reach(std::uint64_t items) { advance(items > items_ ? items - items_ : 0, 0); }
  /// Prints `line` (and a newline) to `to` above the bar: damage found, a file named with -v.
  void say(std::FILE* to, const std::string& line);
  /// Whether a bar would be drawn on `out` (the caller then sums the sizes it shows).
  [[nodiscard]] static bool on_terminal(std::FILE* out);
  /// Clears the bar (once; the destructor calls it too).
  void finish();
  [[nodiscard]] bool drawing() const noexcept { return on_; }

 private:
  void draw();
  void clear();
  std::FILE* out_;
  bool on_;
  std::uint64_t items_ = 0, bytes_ = 0, total_items_, total_bytes_;
  std::string what_, label_;
  std::chrono::steady_clock::time_point start_, last_{};
  std::size_t width_ = 0;  // of the line on screen
};

}  // namespace qzfs::cli
