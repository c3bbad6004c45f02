// The rendezvous of a multi-process run (transport.hpp): one small file on a shared filesystem.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "gossamer/error.hpp"
#include "gossamer/transport.hpp"

namespace gossamer {
namespace {

constexpr const char* kHeader = "gossamer-rendezvous 1";

std::string hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

// The payload of a rendezvous file, or throws naming the file.
std::string read_payload(const std::string& path, int world) {
  std::ifstream in(path);
  std::string header, world_line, digits;
  std::getline(in, header);
  std::getline(in, world_line);
  std::getline(in, digits);
  const std::string expect_world = "world " + std::to_string(world);
  if (header != kHeader || world_line != expect_world || digits.size() % 2 != 0)
    throw runtime_error("rendezvous file " + path + ": expected \"" + kHeader + "\", \"" +
                        expect_world + "\" and the id in hex, as rank 0 writes it; found another "
                        "file (a stale one from a run of another size? use a fresh path a run)");
  std::string out;
  for (size_t i = 0; i < digits.size(); i += 2) {
    const std::string byte = digits.substr(i, 2);
    if (byte.find_first_not_of("0123456789abcdef") != std::string::npos)
      throw runtime_error("rendezvous file " + path + ": the id is not hexadecimal");
    out += char(std::stoi(byte, nullptr, 16));
  }
  return out;
}

}  // namespace

std::string rendezvous(const Processes& p, const std::string& payload) {
  namespace fs = std::filesystem;
  if (p.rendezvous.empty())
    throw config_error("--rendezvous: a multi-process run (--world " + std::to_string(p.world) +
                       ") needs a rendezvous file on a filesystem every rank sees");
  if (p.rank == 0) {
    const std::string tmp = p.rendezvous + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << kHeader << "\nworld " << p.world << "\n" << hex(payload) << "\n";
      out.flush();
      if (!out)
        throw runtime_error("rendezvous file " + tmp + ": cannot write it (does the folder exist?)");
    }
    std::error_code ec;
    fs::rename(tmp, p.rendezvous, ec);
    if (ec) throw runtime_error("rendezvous file " + p.rendezvous + ": cannot create it: " + ec.message());
    return payload;
  }
  const auto start = std::chrono::steady_clock::now();
  while (!fs::exists(p.rendezvous)) {
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (waited >= p.timeout_seconds) {
      std::ostringstream msg;
      msg << "rendezvous file " << p.rendezvous << " did not appear within " << p.timeout_seconds
          << " s: rank " << p.rank << " of " << p.world
          << " waits for rank 0 to write it (is rank 0 running, with the same --rendezvous, on a "
             "filesystem every rank sees?)";
      throw runtime_error(msg.str());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return read_payload(p.rendezvous, p.world);
}

void remove_rendezvous(const Processes& p) {
  if (p.rank != 0 || p.rendezvous.empty()) return;
  std::error_code ec;
  std::filesystem::remove(p.rendezvous, ec);  // gone already is fine
}

}  // namespace gossamer
