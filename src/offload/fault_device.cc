#include <charconv>
#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>

#include "qzfs/offload/device.h"

namespace qzfs::offload {

struct fault_device::shared {
  mutable std::mutex m;  // lock order: leaf
  std::condition_variable wake;
  fault_spec spec;
  std::uint64_t jobs = 0;
  std::uint64_t sessions = 0;
  bool closing = false;
};

namespace {

double parse_double(std::string_view key, std::string_view v) {
  double d = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
  if (ec != std::errc{} || p != v.data() + v.size() || d < 0 || d > 1)
    throw std::invalid_argument("fault spec: " + std::string(key) + " must be a rate between 0 and 1");
  return d;
}

std::uint64_t parse_uint(std::string_view key, std::string_view v) {
  std::uint64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc{} || p == v.data()) throw std::invalid_argument("fault spec: bad number for " + std::string(key));
  if (p != v.data() + v.size()) {
    std::string_view unit(p, static_cast<std::size_t>(v.data() + v.size() - p));
    if (key != "delay") throw std::invalid_argument("fault spec: bad number for " + std::string(key));
    if (unit == "us") return n;
    if (unit == "ms") return n * 1000;
    if (unit == "s") return n * 1000000;
    throw std::invalid_argument("fault spec: delay takes us, ms or s");
  }
  return n;
}

enum class fault : std::uint8_t { none, error, timeout, garbage, badcrc, slow };

class fault_session final : public device_session {
 public:
  fault_session(std::unique_ptr<device_session> inner, std::shared_ptr<fault_device::shared> st, std::uint64_t idx)
      : inner_(std::move(inner)), st_(std::move(st)) {
    std::lock_guard lk(st_->m);
    rng_.seed(st_->spec.seed * 1000003 + idx);
  }

  codec::compress_result compress(int level, std::span<const std::byte> in, std::span<std::byte> out) noexcept override {
    fault_spec spec;
    const fault f = draw(spec);
    if (auto early = before(f, spec)) return *early;
    if (f == fault::garbage && !in.empty()) {
      // A well-formed member of other bytes: it decodes, and its own CRC matches what it decodes to.
      std::vector<std::byte> other(in.begin(), in.end());
      other[other.size() / 2] ^= std::byte{0x20};
      inner_ran_ = true;
      return inner_->compress(level, other, out);
    }
    inner_ran_ = true;
    auto r = inner_->compress(level, in, out);
    if (f == fault::badcrc && r.st == codec::status::ok && r.size >= 8) out[r.size - 8] ^= std::byte{0x01};
    return r;
  }

  codec::compress_result decompress(std::span<const std::byte> in, std::span<std::byte> out) noexcept override {
    fault_spec spec;
    const fault f = draw(spec);
    if (auto early = before(f, spec)) return *early;
    inner_ran_ = true;
    auto r = inner_->decompress(in, out);
    if (r.st == codec::status::ok && r.size > 0) {
      // Wrong bytes said to be right: other bytes in the middle (garbage), or one bit (badcrc).
      if (f == fault::garbage) {
        for (std::size_t i = r.size / 2; i < std::min(r.size, r.size / 2 + 64); ++i) out[i] ^= std::byte{0x5a};
      } else if (f == fault::badcrc) {
        out[r.size - 1] ^= std::byte{0x01};
      }
    }
    return r;
  }

 private:
  // The fault this job gets (and the spec it was drawn under).
  fault draw(fault_spec& spec) noexcept {
    fault f = fault::none;
    inner_ran_ = false;
    {
      std::lock_guard lk(st_->m);
      spec = st_->spec;
      const std::uint64_t n = ++st_->jobs;
      auto hit = [&](double rate) {
        if (rate <= 0) return false;
        if (spec.every > 0) return n % spec.every == 0;
        return std::uniform_real_distribution<double>(0, 1)(rng_) < rate;
      };
      if (hit(spec.error)) f = fault::error;
      else if (hit(spec.timeout)) f = fault::timeout;
      else if (hit(spec.garbage)) f = fault::garbage;
      else if (hit(spec.badcrc)) f = fault::badcrc;
      else if (hit(spec.slow)) f = fault::slow;
    }
    return f;
  }
  // What the fault does before the wrapped device runs: an answer (error; a hang until aborted),
  // or nothing (a slow job has waited its delay).
  std::optional<codec::compress_result> before(fault f, const fault_spec& spec) noexcept {
    switch (f) {
      case fault::error: return codec::compress_result{codec::status::error, 0};
      case fault::timeout: {
        std::unique_lock lk(st_->m);
        st_->wake.wait(lk, [&] { return aborted_ || st_->closing; });
        aborted_ = false;
        return codec::compress_result{codec::status::error, 0};
      }
      case fault::slow: std::this_thread::sleep_for(spec.delay); break;
      default: break;
    }
    return std::nullopt;
  }

 public:
  void abort() noexcept override {
    {
      std::lock_guard lk(st_->m);
      aborted_ = true;
      st_->wake.notify_all();
    }
    inner_->abort();  // a job stuck in the wrapped device itself (a slow modelled card) wakes too
  }
  std::chrono::nanoseconds emulation_excess() const noexcept override {
    return inner_ran_ ? inner_->emulation_excess() : std::chrono::nanoseconds{};
  }

 private:
  std::unique_ptr<device_session> inner_;
  std::shared_ptr<fault_device::shared> st_;
  std::mt19937_64 rng_;
  bool aborted_ = false;  // guarded by st_->m
  bool inner_ran_ = false;  // the last compress() reached the wrapped device
};

}  // namespace

fault_spec parse_fault_spec(std::string_view text) {
  fault_spec s;
  while (!text.empty()) {
    auto comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    if (item.empty()) continue;
    auto eq = item.find('=');
    if (eq == std::string_view::npos) throw std::invalid_argument("fault spec: expected key=value, got '" + std::string(item) + "'");
    auto key = item.substr(0, eq), v = item.substr(eq + 1);
    if (key == "error") s.error = parse_double(key, v);
    else if (key == "timeout") s.timeout = parse_double(key, v);
    else if (key == "garbage") s.garbage = parse_double(key, v);
    else if (key == "badcrc") s.badcrc = parse_double(key, v);
    else if (key == "slow") s.slow = parse_double(key, v);
    else if (key == "delay") s.delay = std::chrono::microseconds(parse_uint(key, v));
    else if (key == "every") s.every = static_cast<unsigned>(parse_uint(key, v));
    else if (key == "seed") s.seed = parse_uint(key, v);
    else if (key == "init") {
      if (v == "ok") s.init = fault_spec::init_mode::ok;
      else if (v == "fail") s.init = fault_spec::init_mode::fail;
      else if (v == "unavailable") s.init = fault_spec::init_mode::unavailable;
      else throw std::invalid_argument("fault spec: init must be ok, fail or unavailable");
    } else {
      throw std::invalid_argument("fault spec: unknown key '" + std::string(key) +
                                  "' (error, timeout, garbage, badcrc, slow, delay, every, init, seed)");
    }
  }
  return s;
}

fault_device::fault_device(std::unique_ptr<device> inner, fault_spec spec)
    : inner_(std::move(inner)), name_("fault(" + std::string(inner_->name()) + ")"), st_(std::make_shared<shared>()) {
  st_->spec = spec;
}

fault_device::~fault_device() {
  std::lock_guard lk(st_->m);
  st_->closing = true;
  st_->wake.notify_all();
}

open_result fault_device::open_session() noexcept {
  std::uint64_t idx;
  {
    std::lock_guard lk(st_->m);
    if (st_->spec.init == fault_spec::init_mode::unavailable) return {nullptr, "injected: device unavailable", true};
    if (st_->spec.init == fault_spec::init_mode::fail) return {nullptr, "injected: session setup failed", false};
    idx = st_->sessions++;
  }
  auto r = inner_->open_session();
  if (!r.session) return r;
  try {
    return {std::make_unique<fault_session>(std::move(r.session), st_, idx), "", false};
  } catch (...) {
    return {nullptr, "out of memory", false};
  }
}

void fault_device::set(const fault_spec& spec) {
  std::lock_guard lk(st_->m);
  st_->spec = spec;
}

fault_spec fault_device::get() const {
  std::lock_guard lk(st_->m);
  return st_->spec;
}

}  // namespace qzfs::offload
