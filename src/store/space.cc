#include "qzfs/store/space.h"

#include <cstdio>
#include <cstdlib>

namespace qzfs::store {
namespace {
[[noreturn]] void bug(const char* what) {
  std::fprintf(stderr, "qzfs: internal error in space_map: %s\n", what);
  std::abort();
}
}  // namespace

void space_map::insert(std::uint64_t off, std::uint64_t len) {
  by_offset_.emplace(off, len);
  by_size_.emplace(len, off);
  free_bytes_ += len;
}

void space_map::erase(std::map<std::uint64_t, std::uint64_t>::iterator it) {
  by_size_.erase({it->second, it->first});
  free_bytes_ -= it->second;
  by_offset_.erase(it);
}

std::uint64_t space_map::allocate(std::uint64_t len) {
  auto s = by_size_.lower_bound({len, 0});
  if (s == by_size_.end()) return allocate_at_end(len);
  const auto [flen, off] = *s;
  erase(by_offset_.find(off));
  if (flen > len) insert(off + len, flen - len);
  return off;
}

std::uint64_t space_map::allocate_low(std::uint64_t len) {
  for (auto it = by_offset_.begin(); it != by_offset_.end(); ++it) {
    if (it->second < len) continue;
    const auto [off, flen] = *it;
    erase(it);
    if (flen > len) insert(off + len, flen - len);
    return off;
  }
  return allocate_at_end(len);
}

std::uint64_t space_map::allocate_at_end(std::uint64_t len) {
  const std::uint64_t off = end_;
  end_ += len;
  return off;
}

void space_map::take(std::uint64_t off, std::uint64_t len) {
  if (len == 0) return;
  if (off >= end_) {
    // Past the end: what lies between the old end and `off` is free.
    if (off > end_) insert(end_, off - end_);  // no free extent ever ends at end_: nothing to merge
    end_ = off + len;
    return;
  }
  auto it = by_offset_.upper_bound(off);
  if (it == by_offset_.begin()) bug("take of bytes already in use");
  --it;
  const auto [foff, flen] = *it;
  if (off + len > foff + flen) bug("take across an extent in use");
  erase(it);
  if (off > foff) insert(foff, off - foff);
  if (foff + flen > off + len) insert(off + len, foff + flen - (off + len));
}

std::pair<std::uint64_t, std::uint64_t> space_map::release(std::uint64_t off, std::uint64_t len) {
  if (len == 0) return {off, 0};
  if (off < start_ || off + len > end_) bug("release outside the file");
  auto next = by_offset_.lower_bound(off);
  if (next != by_offset_.end() && next->first < off + len) bug("double release");
  if (next != by_offset_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second > off) bug("double release");
    if (prev->first + prev->second == off) {
      off = prev->first;
      len += prev->second;
      erase(prev);
    }
  }
  next = by_offset_.lower_bound(off + len);
  if (next != by_offset_.end() && next->first == off + len) {
    len += next->second;
    erase(next);
  }
  if (off + len == end_) {
    end_ = off;  // the tail is free: the file can shrink to here
    return {off, len};
  }
  insert(off, len);
  return {off, len};
}

}  // namespace qzfs::store
