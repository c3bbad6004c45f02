// The backend contract (docs/ARCHITECTURE.md, "The one idea"): every operation acts on all m
// workers' parameters W[m][d] at once. The trainer drives a step through these calls
// only, so the CPU reference and the CUDA backend are interchangeable under it.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gossamer/calibration.hpp"
#include "gossamer/dataset.hpp"
#include "gossamer/model.hpp"
#include "gossamer/partition.hpp"
#include "gossamer/topology.hpp"

namespace gossamer {

enum class MixForm {
  Default,  // W' = P W - lr U   (Lian et al. 2017; the seed paper's order)
  Atc,      // W' = P (W - lr U) (adapt-then-combine)
};

enum class Split { Train, Test };

// The local optimizer's update U from the gradient g at w:
//   v = g + wd w;  buf = mu buf + v;  U = buf (heavy ball) or v + mu buf (Nesterov); U = v when mu
//   = 0.
struct OptimizerParams {
  double momentum = 0;
  double weight_decay = 0;
  bool nesterov = false;
};

struct BackendSetup {
  const ModelSpec* model = nullptr;
  const DataSplit* data = nullptr;
  const Partition* partition = nullptr;
  int workers = 0;
  int batch = 0;  // per worker
  uint64_t seed = 0;
  OptimizerParams optimizer;
  bool tf32 = false;      // CUDA backend: TF32 tensor-core GEMMs instead of exact FP32
  bool perturbs = false;  // the algorithm calls perturb_weights (SAM, average-direction SAM)
};

struct EvalStats {
  double loss = 0;      // mean cross-entropy
  double accuracy = 0;  // fraction correct
};

struct TrainLoss {
  double mean = 0;  // over workers and over the steps since the last take_train_loss()
  int64_t steps = 0;
};

// The training-loss window since the last take_train_loss(), and the first step whose loss was
// not finite.
struct LossWindow {
  double sum = 0;
  int64_t steps = 0;
  int64_t first_nonfinite = -1;
};

// Everything to continue a run bit for bit, as host doubles (tests, small states; checkpoint
// files stream the rows instead: write_rows / read_rows). The minibatch and topology streams are
// functions of (seed, step), so they need no state.
struct BackendState {
  std::vector<double> weights;   // m x d
  std::vector<double> momentum;  // m x d, empty without momentum
  LossWindow loss;
};

struct NonFiniteSteps {
  int64_t loss = -1, weights = -1, momentum = -1;
  // "NaN or Inf in the weights at step 7": the earliest step and every quantity bad at it;
  // "" when none.
  std::string describe() const;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual int64_t dim() const = 0;  // d, parameters per worker

  // Every worker's initial weights, drawn where W lives (no m x d array on the host): weights
  // initial_weight() of philox.hpp from stream (seed, Init, same_init ? 0 : k), biases 0.
  virtual void initialize_weights(const ModelConfig& init, uint64_t seed) = 0;
  // All workers' parameters, m x d row-major doubles (no row padding).
  virtual void set_weights(const std::vector<double>& w) = 0;
  virtual std::vector<double> weights() const = 0;

  virtual BackendState save_state() const = 0;
  virtual void load_state(const BackendState& state) = 0;

  // The state streamed in the backend's own precision, for checkpoints: W (momentum = false)
  // or the momentum buffers, row by row, d scalars a row, in chunks of whole rows; no copy of
  // the whole matrix is made on the host. sink(bytes, n) takes each chunk; source(bytes, n)
  // fills one.
  virtual int scalar_bytes() const = 0;  // 4: float32, 8: float64
  virtual bool has_momentum() const = 0;
  virtual void write_rows(bool momentum,
                          const std::function<void(const char*, size_t)>& sink) const = 0;
  virtual void read_rows(bool momentum, const std::function<void(char*, size_t)>& source) = 0;
  virtual LossWindow loss_window() const = 0;
  virtual void set_loss_window(const LossWindow& window) = 0;

  // Draws every worker's minibatch of this step (Philox: a function of seed, worker, step).
  virtual void sample(int64_t step) = 0;
  // The drawn training-set indices, m x batch (for checks; not on the hot path).
  virtual std::vector<int64_t> minibatch_indices() const = 0;
  // G[k] = gradient of worker k's minibatch loss at W[k], for all k; with record_loss,
  // the loss joins the training-loss window (a SAM step's second pass does not).
  virtual void local_gradient(bool record_loss) = 0;
  // G, m x d doubles (for checks; not on the hot path).
  virtual std::vector<double> gradients() const = 0;
  // || (1/m) sum_k G[k] ||: call after local_gradient, before the update.
  virtual double mean_gradient_norm() = 0;
  // C-SGD: G[k] = (1/m) sum_j G[j] for all k.
  virtual void average_gradients() = 0;
  // The step: U from G (OptimizerParams), then W' = P W - lr U or P (W - lr U);
  // mixing == nullptr means P = I (no communication).
  virtual void mix_update(const Csr* mixing, double lr, MixForm form) = 0;
  // W[k] = mean_j W[j] for all k (exact averaging; local SGD).
  virtual void average_weights() = 0;
  // (1/m) sum_k G[k], d doubles (SAM's ascent direction).
  virtual std::vector<double> mean_gradient() = 0;
  // Saves W, then W[k] += eps (d values: the same for all k; m x d: row k for worker k);
  // restore_weights() brings the saved W back exactly.
  virtual void perturb_weights(const std::vector<double>& eps) = 0;
  virtual void restore_weights() = 0;
  // perturb_weights with eps_i = sigma N(0, 1), the same for every worker, drawn from Philox
  // (seed, Curvature domain, stream, counter i), i < d (average-direction SAM's step). The
  // default draws on the host; the CUDA backend draws on the device, the same numbers.
  virtual void perturb_gaussian(double sigma, uint64_t seed, uint32_t stream);
  // perturb_weights with eps = rho g/||g|| for every worker, g = (1/m) sum_k G[k] (SAM's
  // ascent step; eps = 0 when g = 0). The default goes through the host; the CUDA backend
  // stays on the device.
  virtual void perturb_along_mean_gradient(double rho);

  virtual TrainLoss take_train_loss() = 0;
  // The first step (the `step` of sample()) whose mean minibatch loss was NaN or Inf, and the
  // first whose update (mix_update) wrote a NaN or Inf into W or into the momentum; -1 where
  // none yet. The update's check is what catches a NaN weight whose loss stays finite (a ReLU
  // maps a NaN pre-activation to 0, so the loss and the gradient stay finite while the weight
  // stays NaN).
  virtual NonFiniteSteps first_nonfinite() const = 0;
  // A scan of W now (evaluations; set_weights and load_state are not checked by the update).
  virtual bool weights_finite() = 0;
  // (1/m) sum_k ||W[k] - mean_j W[j]||^2
  virtual double consensus_distance() = 0;
  // The averaged model w-bar on a split, and every worker's own model.
  virtual EvalStats evaluate_mean(Split split) = 0;
  virtual std::vector<EvalStats> evaluate_workers(Split split) = 0;
  // Claim 1: the workers as an ensemble (the mean of their predictive distributions)
  // beside w-bar alone: accuracy, NLL, ECE.
  struct EnsembleStats {
    PredictiveStats ensemble, mean_model;
  };
  virtual EnsembleStats evaluate_ensemble(Split split) = 0;

  // Curvature (docs/ARCHITECTURE.md, Definitions): always of the data loss (no weight decay), on a fixed subset
  // of the training set. Points and directions are rows of d doubles, K at a time.
  virtual void set_curvature_subset(const std::vector<int64_t>& train_indices) = 0;
  // out row i = H(point i) dir i on the subset; `points` holds 1 row (shared) or as many as
  // `dirs`. `out` is resized as needed and reused: repeated calls allocate nothing.
  virtual void hvp_into(const std::vector<double>& points, const std::vector<double>& dirs,
                        std::vector<double>& out) = 0;
  std::vector<double> hvp(const std::vector<double>& points, const std::vector<double>& dirs) {
    std::vector<double> out;
    hvp_into(points, dirs, out);
    return out;
  }
  // Mean loss on the subset at each row of `points`; with grads, also each gradient (same shape).
  virtual std::vector<double> subset_loss(const std::vector<double>& points,
                                          std::vector<double>* grads) = 0;

  // For benchmarks: seconds per call of `body` (calls on this backend), over `calls` calls
  // back to back. The CPU backend times with the host clock; the CUDA backend with events on
  // its stream, after the queued work has finished.
  virtual double seconds_per_call(const std::function<void()>& body, int calls) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i) body();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / calls;
  }
};

// Contract checks shared by the backends. perturb_weights' eps: d values (true: one for all
// workers) or m x d (per worker), else an error naming the sizes.
bool perturbation_is_per_worker(size_t eps_values, int workers, int64_t dim);
// load_state: a state with momentum buffers only for an optimizer that uses them.
void check_state_momentum(const BackendState& state, bool uses_momentum);
// hvp_into: `dirs` whole rows of d values and `points` one row or as many as `dirs`; returns the
// number of pairs. subset_loss: `points` whole rows; returns their number. Else an error.
int64_t hvp_pairs(size_t points, size_t dirs, int64_t dim);
int64_t whole_rows(size_t values, int64_t dim, const char* what);
// set_weights, load_state: exactly rows x d values.
void check_row_values(size_t values, int rows, int64_t dim);
// write_rows / read_rows: the momentum's rows only where the optimizer keeps them.
void check_state_rows(bool momentum, bool has_momentum);

// The CPU reference backend, in float or double.
std::unique_ptr<Backend> make_cpu_backend(const BackendSetup& setup, bool float64);

// "auto" | "cpu" | "cuda". Sets *chosen to what was picked and why (for the log).
std::unique_ptr<Backend> make_backend(const std::string& which, const std::string& precision,
                                      const BackendSetup& setup, std::string* chosen);

}  // namespace gossamer
