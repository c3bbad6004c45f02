// The schema of a run config: every key once, with type, default, range and meaning.
#pragma once
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace gossamer {

enum class KeyType { Int, Number, Bool, String, Choice, ChoiceList, IntList, NumberList, Json };

struct KeySpec {
  std::string path;  // dotted, e.g. "optimizer.lr"
  KeyType type;
  nlohmann::json default_value;
  std::string doc;
  std::vector<std::string> choices = {};  // Choice, ChoiceList
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  bool min_exclusive = false;
  bool max_exclusive = false;
};

const std::vector<KeySpec>& config_schema();
const KeySpec* find_key(const std::string& path);

// Checks one value against its spec; throws config_error "SOURCE: PATH: expected ..., found ...".
void check_value(const KeySpec& spec, const nlohmann::json& value, const std::string& source);

// The closest valid key to an unknown one, for "did you mean" (empty if none is close).
std::string closest_key(const std::string& unknown);

}  // namespace gossamer
