// Specs, their names and the help text: all read from the codec table (table.cc).
#include <charconv>
#include <stdexcept>
#include <string>

#include "qzfs/codec/codec.h"
#include "qzfs/codec/table.h"

namespace qzfs::codec {
namespace {

bool all_digits(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (char ch : s)
    if (ch < '0' || ch > '9') return false;
  return true;
}

const codec_info* row_of(const implementation* i) noexcept {
  for (const auto& c : codecs())
    for (const auto& j : c.impls)
      if (&j == i) return &c;
  return nullptr;
}

std::string range_text(level_range r) { return std::to_string(r.min) + "-" + std::to_string(r.max); }

// "gzip-N: 1-12, gzip = gzip-1"; "lz4"; "none (or off)".
std::string name_help(std::string_view name, std::string_view alias, level_range levels, int def) {
  std::string n(name);
  if (levels.single()) return alias.empty() ? n : n + " (or " + std::string(alias) + ")";
  return n + "-N: " + range_text(levels) + ", " + n + " = " + n + "-" + std::to_string(def);
}

// For messages: "gzip takes levels 1-12 (gzip = gzip-1)", "lz4 takes no level".
std::string takes(std::string_view name, level_range levels, int def) {
  const std::string n(name);
  if (levels.single()) return n + " takes no level";
  return n + " takes levels " + range_text(levels) + " (" + n + " = " + n + "-" + std::to_string(def) + ")";
}

// What `name` with `digits` (empty: no level written) means; an error message instead when it
// means nothing.
struct parsed {
  std::optional<spec> s;
  std::string why;
};

parsed refuse(std::string_view name, const std::string& what) {
  return {std::nullopt, "unknown codec '" + std::string(name) + "': " + what};
}

parsed parse(std::string_view name) {
  std::string_view base = name, digits;
  if (auto dash = name.rfind('-'); dash != std::string_view::npos && all_digits(name.substr(dash + 1))) {
    base = name.substr(0, dash);
    digits = name.substr(dash + 1);
  }
  auto level_of = [&](level_range r, int def, int& level) -> std::string {
    if (digits.empty()) {
      level = def;
      return {};
    }
    if (r.single()) return takes(base, r, def);
    auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), level);
    if (ec != std::errc{} || p != digits.data() + digits.size() || !r.contains(level)) return takes(base, r, def);
    return {};
  };

  // The codecs' own names first: "gzip-2" is ISA-L's, "zstd" is zstd-3.
  for (const auto& c : codecs()) {
    const bool alias = !c.alias.empty() && base == c.alias;
    if (base != c.name && !alias) continue;
    int level = 0;
    if (alias && !digits.empty()) return refuse(name, takes(c.alias, {0, 0}, 0));
    if (auto e = level_of(c.levels(), c.default_level, level); !e.empty()) return refuse(name, e);
    for (const auto& i : c.impls)
      if (!i.name.empty() && i.serves.contains(level)) return {spec{c.id, i.id, level}, {}};
    return refuse(name, "no implementation serves that level");  // the table's static_assert rules this out
  }
  // Then an implementation by its own name: "libdeflate-2", "zlib-6", "zstd-fast-5".
  for (const auto& c : codecs()) {
    for (const auto& i : c.impls) {
      if (i.name.empty() || base != i.name) continue;
      if (i.make == nullptr)
        return refuse(name, std::string(i.name) + " is " + std::string(i.about) + ", not a codec to choose: choose " +
                                std::string(c.name) + "-N");
      int level = 0;
      if (auto e = level_of(i.levels, i.default_level, level); !e.empty()) return refuse(name, e);
      return {spec{c.id, i.id, i.sign * level}, {}};
    }
  }
  // A known name followed by something that is no level ("gzip-x", "gzip-"): say what it takes.
  std::string_view best;
  std::string what;
  auto consider = [&](std::string_view k, level_range r, int def) {
    if (name.size() > k.size() && name.starts_with(k) && name[k.size()] == '-' && k.size() > best.size()) {
      best = k;
      what = takes(k, r, def);
    }
  };
  for (const auto& c : codecs()) {
    consider(c.name, c.levels(), c.default_level);
    for (const auto& i : c.impls)
      if (!i.name.empty() && i.make != nullptr) consider(i.name, i.levels, i.default_level);
  }
  if (!best.empty()) return refuse(name, what);
  return refuse(name, "known: " + spec_help());
}

}  // namespace

spec spec::of(payload_format f, int level) noexcept {
  if (const codec_info* c = find(f))
    for (const auto& i : c->impls)
      if (!i.name.empty() && i.serves.contains(level)) return {f, i.id, level};
  return {f, producer_id::none, level};  // no such level: invalid (is_valid() says so)
}

spec spec::of(payload_format f) noexcept {
  const codec_info* c = find(f);
  return of(f, c != nullptr ? c->default_level : 0);
}

spec spec::of(producer_id e, int level) noexcept {
  const codec_info* c = row_of(find(e));
  return {c != nullptr ? c->id : payload_format::none, e, level};
}

spec spec::of(producer_id e) noexcept {
  const implementation* i = find(e);
  return of(e, i != nullptr ? i->sign * i->default_level : 0);
}

bool is_valid(const spec& s) noexcept {
  const implementation* i = find(s);
  return i != nullptr && i->make != nullptr;
}

std::optional<spec> parse_spec(std::string_view name) noexcept {
  try {
    return parse(name).s;
  } catch (...) {  // the message could not be allocated; the answer is the same
    return std::nullopt;
  }
}

spec parse_spec_or_throw(std::string_view name) {
  auto p = parse(name);
  if (!p.s) throw std::invalid_argument(p.why);
  return *p.s;
}

std::string to_string(const spec& s) {
  const implementation* i = find(s);
  if (i == nullptr)
    return "invalid codec (" + std::string(to_string(s.format)) + ", " + std::string(to_string(s.producer)) +
           ", level " + std::to_string(s.level) + ")";
  const codec_info* c = find(s.format);
  if (i->serves.contains(s.level)) {
    const std::string n(c->name);
    return c->levels().single() ? n : n + "-" + std::to_string(s.level);
  }
  const std::string n(i->name);
  return i->levels.single() ? n : n + "-" + std::to_string(i->sign * s.level);
}

std::string spec_help() {
  std::string h;
  auto add = [&](const std::string& item) { h += (h.empty() ? "" : " | ") + item; };
  for (const auto& c : codecs()) {
    std::string item = name_help(c.name, c.alias, c.levels(), c.default_level);
    std::string who;  // which implementation makes which levels, when more than one does
    int serving = 0;
    for (const auto& i : c.impls)
      if (!i.name.empty() && !i.serves.empty()) {
        ++serving;
        who += (who.empty() ? "" : ", ") + range_text(i.serves) + " " + std::string(i.about);
      }
    add(serving > 1 ? item + " (" + who + ")" : item);
  }
  for (const auto& c : codecs())
    for (const auto& i : c.impls) {
      if (i.name.empty() || i.name == c.name || i.make == nullptr) continue;
      const std::string item = name_help(i.name, "", i.levels, i.default_level);
      add(i.about == i.name ? item : item + " (" + std::string(i.about) + ")");
    }
  return h;
}

std::string default_levels() {
  std::string d;
  for (const auto& c : codecs()) {
    if (c.levels().single()) continue;
    d += (d.empty() ? "" : ", ") + std::string(c.name) + " = " + to_string(spec::of(c.id));
  }
  return d;
}

std::string_view to_string(status s) noexcept {
  switch (s) {
    case status::ok: return "ok";
    case status::does_not_fit: return "does not fit";
    case status::corrupt: return "corrupt";
    case status::error: return "error";
  }
  return "unknown";
}

std::string_view to_string(payload_format f) noexcept {
  const codec_info* c = find(f);
  return c != nullptr ? c->name : "unknown";
}

std::string_view to_string(producer_id e) noexcept {
  const implementation* i = find(e);
  return i != nullptr ? i->name : "unknown";
}

}  // namespace qzfs::codec
