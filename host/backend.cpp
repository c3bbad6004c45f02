#include "gossamer/backend.hpp"

#include "gossamer/devices.hpp"
#include "gossamer/error.hpp"

namespace gossamer {

std::unique_ptr<Backend> make_backend(const std::string& which, const std::string& precision,
                                      const BackendSetup& setup, std::string* chosen) {
  const bool float64 = precision == "float64";
  if (which == "cpu") {
    *chosen = "cpu (asked for)";
    return make_cpu_backend(setup, float64);
  }
  const DeviceList gpus = list_devices();
  if (which == "cuda") {
    if (gpus.devices.empty()) throw runtime_error("--backend cuda: " + gpus.why_none);
    throw runtime_error(
        "--backend cuda: a GPU is visible (" + gpus.devices[0].name +
        ") but the CUDA training backend is not built yet (issue 4); use --backend cpu");
  }
  // auto: the CUDA backend once it exists; until then the CPU, saying why.
  *chosen = gpus.devices.empty() ? "cpu (auto: " + gpus.why_none + ")"
                                 : "cpu (auto: the CUDA training backend is not built yet)";
  return make_cpu_backend(setup, float64);
}

}  // namespace gossamer
