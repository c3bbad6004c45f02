#include "gossamer/checkpoint.hpp"

#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "gossamer/config.hpp"
#include "gossamer/error.hpp"
#include "sinks.hpp"

namespace gossamer {
namespace {

constexpr char kMagic[8] = {'G', 'O', 'S', 'S', 'C', 'K', 'P', 'T'};

template <class T>
void put(std::string& out, const T& v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

void put_doubles(std::string& out, const std::vector<double>& v) {
  put(out, uint64_t(v.size()));
  out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(double));
}

class Reader {
 public:
  Reader(const std::string& path, const std::string& bytes) : m_path(path), m_bytes(bytes) {}
  template <class T>
  T get(const char* what) {
    T v;
    need(sizeof v, what);
    std::memcpy(&v, m_bytes.data() + m_pos, sizeof v);
    m_pos += sizeof v;
    return v;
  }
  std::string get_bytes(uint64_t n, const char* what) {
    need(n, what);
    std::string s = m_bytes.substr(m_pos, n);
    m_pos += n;
    return s;
  }
  std::vector<double> get_doubles(const char* what) {
    const uint64_t n = get<uint64_t>(what);
    // Checked as a count (n * 8 could wrap around): nothing is allocated the file cannot fill.
    if (n > (m_bytes.size() - m_pos) / sizeof(double))
      throw runtime_error(m_path + ": truncated checkpoint (ends inside the " + what + ")");
    std::vector<double> v(n);
    std::memcpy(v.data(), m_bytes.data() + m_pos, n * sizeof(double));
    m_pos += n * sizeof(double);
    return v;
  }

 private:
  void need(uint64_t n, const char* what) {
    if (n > m_bytes.size() - m_pos)
      throw runtime_error(m_path + ": truncated checkpoint (ends inside the " + what + ")");
  }
  const std::string& m_path;
  const std::string& m_bytes;
  size_t m_pos = 0;
};

}  // namespace

void write_checkpoint(const std::string& path, const Checkpoint& c) {
  const int64_t m = c.config.at("workers").get<int64_t>();
  nlohmann::json header = {{"step", c.step},
                           {"workers", m},
                           {"dim", int64_t(c.state.weights.size()) / m},
                           {"seed", c.config.at("seed")},
                           {"config_hash", config_hash(c.config)},
                           {"config", c.config},
                           {"trainer", c.trainer},
                           {"loss_window",
                            {{"sum", c.state.loss_sum},
                             {"steps", c.state.loss_steps},
                             {"first_nonfinite", c.state.first_nonfinite}}}};
  std::string out(kMagic, sizeof kMagic);
  put(out, kCheckpointVersion);
  const std::string text = header.dump();
  put(out, uint64_t(text.size()));
  out += text;
  put_doubles(out, c.state.weights);
  put_doubles(out, c.state.momentum);
  put(out, uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(out.data()), uInt(out.size()))));

  write_file_atomic(path, out);  // temporary file, then rename; removed on failure
}

Checkpoint read_checkpoint(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw runtime_error(path + ": cannot open the checkpoint");
  const std::string bytes((std::istreambuf_iterator<char>(f)), {});
  if (bytes.size() < sizeof kMagic || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0)
    throw runtime_error(path + ": not a gossamer checkpoint (no GOSSCKPT magic)");
  Reader r(path, bytes);
  r.get_bytes(sizeof kMagic, "magic");
  const uint32_t version = r.get<uint32_t>("version");
  if (version != kCheckpointVersion)
    throw runtime_error(path + ": checkpoint format version " + std::to_string(version) +
                        ", this gossamer reads version " + std::to_string(kCheckpointVersion));
  if (bytes.size() < sizeof kMagic + 8) throw runtime_error(path + ": truncated checkpoint");
  const size_t body = bytes.size() - sizeof(uint32_t);
  uint32_t stored;
  std::memcpy(&stored, bytes.data() + body, sizeof stored);
  const uint32_t actual =
      uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(bytes.data()), uInt(body)));
  if (stored != actual)
    throw runtime_error(path + ": checkpoint checksum mismatch (corrupt or truncated file)");

  const std::string text = r.get_bytes(r.get<uint64_t>("header length"), "header");
  const nlohmann::json header = nlohmann::json::parse(text, nullptr, false);
  if (header.is_discarded() || !header.is_object())
    throw runtime_error(path + ": checkpoint header is not valid JSON");
  Checkpoint c;
  try {
    c.step = header.at("step");
    c.config = header.at("config");
    c.trainer = header.at("trainer");
    c.state.loss_sum = header.at("loss_window").at("sum");
    c.state.loss_steps = header.at("loss_window").at("steps");
    c.state.first_nonfinite = header.at("loss_window").at("first_nonfinite");
    if (header.at("config_hash") != config_hash(c.config))
      throw runtime_error(path + ": the checkpoint's config does not match its recorded hash");
  } catch (const nlohmann::json::exception& e) {
    throw runtime_error(path + ": checkpoint header lacks a field: " + e.what());
  }
  c.state.weights = r.get_doubles("weights");
  c.state.momentum = r.get_doubles("momentum");
  const nlohmann::json workers = header.value("workers", nlohmann::json()),
                       dim = header.value("dim", nlohmann::json());
  if (!workers.is_number_integer() || !dim.is_number_integer() ||
      double(c.state.weights.size()) != workers.get<double>() * dim.get<double>())
    throw runtime_error(path + ": checkpoint holds " + std::to_string(c.state.weights.size()) +
                        " weights, header says " + workers.dump() + " x " + dim.dump());
  return c;
}

}  // namespace gossamer
