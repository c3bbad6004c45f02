#pragma once

namespace gossamer {

// The `gossamer` command line: run, topology, devices, config-reference.
// Returns the process exit code (README: "Exit codes").
int cli_main(int argc, char** argv);

}  // namespace gossamer
