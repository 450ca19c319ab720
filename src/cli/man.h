#pragma once
// `qzfs man`: the manual page (roff) made from the command line's definitions (man.cc).

#include <cstdio>
#include <string_view>

namespace CLI {
class App;
}

namespace qzfs::cli {

/// Writes qzfs(8) for `app` (its visible subcommands, their options and descriptions).
void write_man(const CLI::App& app, std::string_view version, std::FILE* out);

}  // namespace qzfs::cli
