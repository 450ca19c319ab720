#pragma once
// fs/: what a failure inside a FUSE operation becomes (the one boundary every operation passes,
// guard() in ops.h, is built on these), and how an internal bug ends the daemon.
//
// - A std::system_error (std::filesystem_error too) keeps its own errno: it is an answer, like
//   an errno returned; std::bad_alloc is ENOMEM; anything else is EIO and a log line (after
//   DwarFS's checked_call).
// - An internal bug (an inode number the daemon never gave out, a lookup count going below 0)
//   prints "qzfs: INTERNAL ERROR: ..." with the source location and aborts, as libfuse's
//   passthrough_hp does: limping on would serve the wrong object.
//
// Thread-safety: the functions touch no shared state (internal_error writes to stderr and ends
// the process). No FUSE header here, so the unit tests use it directly.
#include <string>

namespace qzfs::fs::detail {

/// Inside a catch block: the errno the request answers for the exception being handled. `why`
/// is set to a message for a log line when the failure was unexpected (not an errno-carrying
/// system_error, not bad_alloc), else left empty.
[[nodiscard]] int errno_of_current_exception(std::string& why) noexcept;

/// Prints "qzfs: INTERNAL ERROR: <what> (<file>:<line>)" to stderr and the log, and aborts.
[[noreturn]] void internal_error(const char* file, int line, const std::string& what) noexcept;

}  // namespace qzfs::fs::detail

#define QZFS_INTERNAL_ERROR(what) ::qzfs::fs::detail::internal_error(__FILE__, __LINE__, (what))
