#pragma once
// The `qzfs` command line. main() is a one-line adapter over run(), so tests can run any
// subcommand in-process with their own output streams.

#include <cstdio>

namespace qzfs::cli {

/// Runs `qzfs` with argv; returns the process exit code (0 ok, 1 failure, 2 usage error).
int run(int argc, const char* const* argv, std::FILE* out = stdout, std::FILE* err = stderr);

}  // namespace qzfs::cli
