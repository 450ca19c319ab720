#include "qzfs/store/budget.h"

#include <algorithm>
#include <utility>

#include "qzfs/store/file.h"

namespace qzfs::store {

void memory_budget::charge(std::uint64_t n) noexcept {
  const std::uint64_t now = used_.fetch_add(n, std::memory_order_relaxed) + n;
  std::uint64_t p = peak_.load(std::memory_order_relaxed);
  while (now > p && !peak_.compare_exchange_weak(p, now, std::memory_order_relaxed)) {
  }
}

void memory_budget::enroll(file* f) {
  std::lock_guard lk(m_);
  files_.push_back(f);
}

void memory_budget::withdraw(file* f) {
  std::lock_guard lk(m_);
  std::erase(files_, f);
}

void memory_budget::relieve(const file* self) {
  std::lock_guard lk(m_);
  if (!over()) return;  // another writer relieved it meanwhile
  std::vector<std::pair<std::uint64_t, file*>> by_size;
  by_size.reserve(files_.size());
  for (auto* f : files_) {
    if (f != self) by_size.emplace_back(f->charged(), f);
  }
  std::sort(by_size.begin(), by_size.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  bool shed = false;
  for (auto& [n, f] : by_size) {
    if (!over() || n == 0) break;
    f->shed();
    shed = true;
  }
  if (shed) reliefs_.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace qzfs::store
