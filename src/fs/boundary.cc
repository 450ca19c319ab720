// fs/: the errno of a failed operation, and the end of the daemon on an internal bug.
#include "boundary.h"

#include <syslog.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#include <system_error>

namespace qzfs::fs::detail {

int errno_of_current_exception(std::string& why) noexcept {
  why.clear();
  try {
    throw;
  } catch (const std::system_error& e) {
    const auto& cat = e.code().category();
    const int v = e.code().value();
    if (v > 0 && (cat == std::generic_category() || cat == std::system_category())) return v;
    try {
      why = e.what();
    } catch (...) {
    }
    return EIO;
  } catch (const std::bad_alloc&) {
    return ENOMEM;
  } catch (const std::exception& e) {
    try {
      why = e.what();
    } catch (...) {
    }
    return EIO;
  } catch (...) {
    try {
      why = "an exception of unknown type";
    } catch (...) {
    }
    return EIO;
  }
}

void internal_error(const char* file, int line, const std::string& what) noexcept {
  std::fprintf(stderr, "qzfs: INTERNAL ERROR: %s (%s:%d)\n", what.c_str(), file, line);
  std::fflush(stderr);
  // Detached, stderr is /dev/null: the log says it too.
  ::syslog(LOG_CRIT, "INTERNAL ERROR: %s (%s:%d)", what.c_str(), file, line);
  std::abort();
}

}  // namespace qzfs::fs::detail
