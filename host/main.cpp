#include "gossamer/cli.hpp"

int main(int argc, char** argv) {
  return gossamer::cli_main(argc, argv);
}
