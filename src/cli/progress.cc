#include "progress.h"

#include <unistd.h>

#include <algorithm>

#include <fmt/core.h>

namespace qzfs::cli {

progress::progress(std::FILE* out, std::uint64_t total_items, std::uint64_t total_bytes, std::string what, bool force)
    : out_(out),
      on_(force || ::isatty(::fileno(out)) == 1),
      total_items_(total_items),
      total_bytes_(total_bytes),
      what_(std::move(what)),
      start_(std::chrono::steady_clock::now()) {}

void progress::advance(std::uint64_t items, std::uint64_t bytes) {
  items_ += items;
  bytes_ += bytes;
  if (!on_) return;
  const auto now = std::chrono::steady_clock::now();
  if (items_ < total_items_ && now - last_ < std::chrono::milliseconds(200)) return;
  last_ = now;
  draw();
}

bool progress::on_terminal(std::FILE* out) { return ::isatty(::fileno(out)) == 1; }

void progress::say(std::FILE* to, const std::string& line) {
  clear();
  fmt::print(to, "{}\n", line);
  if (on_ && items_ > 0) draw();
}

void progress::draw() {
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  // Files may grow while the command runs: the share never passes 1.
  const double frac = std::min(1.0, total_bytes_ > 0 ? static_cast<double>(bytes_) / static_cast<double>(total_bytes_)
                                    : total_items_ > 0 ? static_cast<double>(items_) / static_cast<double>(total_items_)
                                                       : 1.0);
  constexpr int bar = 24;
  const int full = static_cast<int>(frac * bar + 0.5);
  const double rate = secs > 0 ? static_cast<double>(bytes_) / (1 << 20) / secs : 0.0;
  std::string left;
  if (frac > 0.01 && frac < 1.0) {
    const auto s = static_cast<long>(secs / frac - secs);
    left = fmt::format("  {}:{:02} left", s / 60, s % 60);
  }
  std::string line = fmt::format("[{}{}] {:3.0f}%  {}/{} {}", std::string(full, '#'), std::string(bar - full, '.'),
                                 frac * 100, items_, total_items_, what_);
  if (total_bytes_ > 0 || bytes_ > 0) {
    line += fmt::format("  {:.1f}/{:.1f} MiB  {:.1f} MiB/s", static_cast<double>(bytes_) / (1 << 20),
                        static_cast<double>(total_bytes_) / (1 << 20), rate);
  }
  line += left;
  if (!label_.empty()) line += "  " + label_;
  const std::size_t w = line.size();
  if (w < width_) line.append(width_ - w, ' ');
  width_ = w;
  fmt::print(out_, "\r{}", line);
  std::fflush(out_);
}

void progress::clear() {
  if (!on_ || width_ == 0) return;
  fmt::print(out_, "\r{}\r", std::string(width_, ' '));
  width_ = 0;
  std::fflush(out_);
}

void progress::finish() {
  clear();
  on_ = false;
}

}  // namespace qzfs::cli
