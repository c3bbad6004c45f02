#include "gossamer/checkpoint.hpp"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "gossamer/config.hpp"
#include "gossamer/error.hpp"
#include "sinks.hpp"

namespace gossamer {
namespace {

constexpr char kMagic[8] = {'G', 'O', 'S', 'S', 'C', 'K', 'P', 'T'};
constexpr size_t kPrefix = sizeof kMagic + sizeof(uint32_t) + sizeof(uint64_t);
constexpr size_t kChunk = size_t(8) << 20;  // the CRC pass reads 8 MiB at a time

uint32_t crc_update(uint32_t crc, const char* data, size_t n) {
  while (n > 0) {  // zlib takes uInt lengths
    const uInt part = uInt(std::min<size_t>(n, size_t(1) << 30));
    crc = uint32_t(crc32(crc, reinterpret_cast<const Bytef*>(data), part));
    data += part;
    n -= part;
  }
  return crc;
}

// Bytes of the arrays a header describes, or an error naming the field.
uint64_t array_bytes(const std::string& path, const nlohmann::json& h, Checkpoint& c) {
  const auto count = [&](const char* key) {
    const nlohmann::json v = h.value(key, nlohmann::json());
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > (int64_t(1) << 40))
      throw runtime_error(path + ": checkpoint header field " + key +
                          " is not a count: " + v.dump(-1, ' ', false,
                                                       nlohmann::json::error_handler_t::replace));
    return v.get<int64_t>();
  };
  c.workers = count("workers");
  c.dim = count("dim");
  const std::string precision = h.value("precision", "");
  if (precision != "float32" && precision != "float64")
    throw runtime_error(path + ": checkpoint header field precision is not float32 or float64");
  c.scalar_bytes = precision == "float32" ? 4 : 8;
  if (!h.contains("momentum") || !h["momentum"].is_boolean())
    throw runtime_error(path + ": checkpoint header lacks the momentum flag");
  c.momentum = h["momentum"].get<bool>();
  return uint64_t(c.workers) * uint64_t(c.dim) * uint64_t(c.scalar_bytes) * (c.momentum ? 2 : 1);
}

}  // namespace

void write_checkpoint(const std::string& path, const Checkpoint& meta, const Backend& backend) {
  const nlohmann::json header = {
      {"step", meta.step},
      {"workers", meta.config.at("workers")},
      {"dim", backend.dim()},
      {"precision", backend.scalar_bytes() == 4 ? "float32" : "float64"},
      {"momentum", backend.has_momentum()},
      {"seed", meta.config.at("seed")},
      {"config_hash", config_hash(meta.config)},
      {"config", meta.config},
      {"trainer", meta.trainer},
      {"loss_window",
       {{"sum", meta.loss.sum}, {"steps", meta.loss.steps}, {"first_nonfinite", meta.loss.first_nonfinite}}}};
  const std::string text = header.dump();
  write_file_atomic(path, [&](std::ostream& f) {
    uint32_t crc = 0;
    const auto put = [&](const char* data, size_t n) {
      crc = crc_update(crc, data, n);
      f.write(data, std::streamsize(n));
      // Stop at once: the rows still to come (from the device) would go nowhere.
      if (!f) throw runtime_error(path + ": checkpoint write failed (disk full?); the last one is kept");
    };
    const uint32_t version = kCheckpointVersion;
    const uint64_t length = text.size();
    put(kMagic, sizeof kMagic);
    put(reinterpret_cast<const char*>(&version), sizeof version);
    put(reinterpret_cast<const char*>(&length), sizeof length);
    put(text.data(), text.size());
    backend.write_rows(false, put);
    if (backend.has_momentum()) backend.write_rows(true, put);
    f.write(reinterpret_cast<const char*>(&crc), sizeof crc);
  });
}

Checkpoint read_checkpoint(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw runtime_error(path + ": cannot open the checkpoint");
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) throw runtime_error(path + ": cannot read the checkpoint: " + ec.message());
  char prefix[kPrefix] = {};
  f.read(prefix, std::streamsize(std::min<uint64_t>(size, kPrefix)));
  if (size < sizeof kMagic || std::memcmp(prefix, kMagic, sizeof kMagic) != 0)
    throw runtime_error(path + ": not a gossamer checkpoint (no GOSSCKPT magic)");
  if (size < kPrefix + sizeof(uint32_t)) throw runtime_error(path + ": truncated checkpoint");
  uint32_t version;
  uint64_t length;
  std::memcpy(&version, prefix + sizeof kMagic, sizeof version);
  std::memcpy(&length, prefix + sizeof kMagic + sizeof version, sizeof length);
  if (version != kCheckpointVersion)
    throw runtime_error(path + ": checkpoint format version " + std::to_string(version) +
                        (version == 1 ? " (W as float64 in one block, written by an older gossamer)" : "") +
                        "; this gossamer reads version " + std::to_string(kCheckpointVersion) +
                        "; start the run again, or resume it with the gossamer that wrote it");
  if (length > size - kPrefix - sizeof(uint32_t))
    throw runtime_error(path + ": truncated checkpoint (ends inside the header)");
  std::string text(size_t(length), '\0');
  f.read(text.data(), std::streamsize(length));
  // The checksum first, in chunks: nothing of the file is trusted before it matches.
  uint32_t crc = crc_update(crc_update(0, prefix, kPrefix), text.data(), text.size());
  std::vector<char> chunk(kChunk);
  for (uint64_t left = size - kPrefix - length - sizeof(uint32_t); left > 0;) {
    const size_t n = size_t(std::min<uint64_t>(left, kChunk));
    if (!f.read(chunk.data(), std::streamsize(n))) throw runtime_error(path + ": read failed");
    crc = crc_update(crc, chunk.data(), n);
    left -= n;
  }
  uint32_t stored = 0;
  f.read(reinterpret_cast<char*>(&stored), sizeof stored);
  if (stored != crc)
    throw runtime_error(path + ": checkpoint checksum mismatch (corrupt or truncated file)");

  const nlohmann::json header = nlohmann::json::parse(text, nullptr, false);
  if (header.is_discarded() || !header.is_object())
    throw runtime_error(path + ": checkpoint header is not valid JSON");
  Checkpoint c;
  try {
    c.step = header.at("step");
    c.config = header.at("config");
    c.trainer = header.at("trainer");
    c.loss.sum = header.at("loss_window").at("sum");
    c.loss.steps = header.at("loss_window").at("steps");
    c.loss.first_nonfinite = header.at("loss_window").at("first_nonfinite");
    if (header.at("config_hash") != config_hash(c.config))
      throw runtime_error(path + ": the checkpoint's config does not match its recorded hash");
  } catch (const nlohmann::json::exception& e) {
    throw runtime_error(path + ": checkpoint header lacks a field: " + e.what());
  }
  const uint64_t arrays = array_bytes(path, header, c);
  c.data_offset = kPrefix + length;
  if (c.data_offset + arrays + sizeof(uint32_t) != size)
    throw runtime_error(path + ": checkpoint of " + std::to_string(size) + " bytes, its header says " +
                        std::to_string(c.data_offset + arrays + sizeof(uint32_t)));
  return c;
}

void load_checkpoint(const std::string& path, const Checkpoint& meta, Backend& backend) {
  if (meta.dim != backend.dim() || meta.scalar_bytes != backend.scalar_bytes() ||
      meta.momentum != backend.has_momentum())
    throw runtime_error(path + ": the checkpoint holds " + std::to_string(meta.workers) + " x " +
                        std::to_string(meta.dim) + (meta.scalar_bytes == 4 ? " float32" : " float64") +
                        (meta.momentum ? " with" : " without") + " momentum; the run's backend is d = " +
                        std::to_string(backend.dim()) +
                        (backend.scalar_bytes() == 4 ? " float32" : " float64") +
                        (backend.has_momentum() ? " with" : " without") + " momentum");
  std::ifstream f(path, std::ios::binary);
  f.seekg(std::streamoff(meta.data_offset));
  const auto get = [&](char* data, size_t n) {
    if (!f.read(data, std::streamsize(n)))
      throw runtime_error(path + ": checkpoint read failed (changed since it was checked?)");
  };
  backend.read_rows(false, get);
  if (meta.momentum) backend.read_rows(true, get);
  backend.set_loss_window(meta.loss);
}

}  // namespace gossamer
