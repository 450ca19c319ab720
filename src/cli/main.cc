#include "app.h"

int main(int argc, char** argv) { return qzfs::cli::run(argc, argv); }
