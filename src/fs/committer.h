#pragma once
// fs/: the commit thread and the commits it shares with the operations (committer.cc).
//
// Closed files are committed by the commit thread at once (within ~20 ms, several together) and
// let go when clean, so the descriptors and memory a mount holds follow the files in use, not
// the files touched since the last tick; open ones are committed every commit_seconds (sync(1)
// never reaches a FUSE daemon).
//
// Thread-safety: all of it may run on any thread; the thread's state is fs_state's timer_m.
#include "state.h"

namespace qzfs::fs::detail {

/// Commits one file; the failure (kept by the store, reported at the file's next fsync or close)
/// is logged. Never throws.
void commit_one(fs_state& s, open_file& f) noexcept;
/// Commits many files together (store::file::sync_group: two barriers for all of them instead
/// of two syncs each); each failure logged as commit_one's. Never throws.
void commit_group(fs_state& s, const std::vector<file_ptr>& files) noexcept;
/// After a commit of `f` that wrote something: the times set through the mount put back on the
/// backing file, and the space counters told.
void after_commit(fs_state& s, open_file& f);
/// Lets go of `f` if it is idle and clean (registry::let_go_if_idle), remembering its size for
/// stat (size_memo); true if it went.
bool let_go(fs_state& s, const file_ptr& f);
/// A file was closed (or truncated while closed): the commit thread commits it soon.
void wake_committer(fs_state& s);
/// Starts the commit thread (s.committer); stop_committer() asks it to end and joins it, and the
/// scanner (both watch s.stopping).
void start_committer(fs_state& s);
void stop_committer(fs_state& s);

}  // namespace qzfs::fs::detail
