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

#include "gossamer/augment.hpp"
#include "gossamer/calibration.hpp"
#include "gossamer/dataset.hpp"
#include "gossamer/model.hpp"
#include "gossamer/partition.hpp"
#include "gossamer/philox.hpp"
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
  // A shard of a sharded run (docs/ARCHITECTURE.md, "Shards"): this backend holds workers
  // [first_worker, first_worker + workers) of the run; minibatch and init streams and partition
  // shards are those of the global worker ids.
  int first_worker = 0;
  int shards = 1;         // the CPU backend: split the workers into this many shards
  // The CUDA backend: one shard per entry, on that GPU (an ordinal may repeat: several shards on
  // one GPU); empty: GPU 0, unsharded. The transport between shards: "auto", "copy", "nccl".
  std::vector<int> devices;
  std::string transport = "auto";
  Processes processes;    // a multi-process run: this process's rank among `world`
  AugmentShape augment;   // the training minibatches' crops and flips (off by default)
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

// --- Vectors the backend owns (docs/ARCHITECTURE.md, "Curvature on the backend") ---
// A block of `rows` vectors of d values in the backend's memory and precision (device memory on
// the CUDA backend): the curvature estimators keep their probes, Lanczos bases and HVP results
// here, so only scalars cross to the host. Made by Curvature::vectors(); zero when made.
class Vectors {
 public:
  virtual ~Vectors() = default;
  int64_t rows() const { return m_rows; }
  const void* owner() const { return m_owner; }

 protected:
  Vectors(const void* owner, int64_t rows) : m_owner(owner), m_rows(rows) {}

 private:
  const void* m_owner;
  int64_t m_rows;
};

// Rows [first, first + count) of a block.
struct Rows {
  Vectors* block = nullptr;
  int64_t first = 0, count = 0;
};
inline Rows all_rows(Vectors& v) { return {&v, 0, v.rows()}; }
inline Rows row_of(Vectors& v, int64_t i) { return {&v, i, 1}; }
inline Rows rows_of(Vectors& v, int64_t first, int64_t count) { return {&v, first, count}; }

// --- The contract, in three facets over one shape ---
// Every public method is non-virtual: it checks its arguments once, for every backend, then
// calls the backend's do_ implementation. A backend derives from Backend and initializes
// BackendShape (a virtual base, shared by the three facets).
struct Shape {
  int workers = 0;
  int64_t dim = 0;         // d, parameters per worker
  bool momentum = false;   // the optimizer keeps momentum buffers
  int64_t train_rows = 0;  // the training set's size (curvature subsets index it)
};

class BackendShape {
 public:
  int workers() const { return m_shape.workers; }
  int64_t dim() const { return m_shape.dim; }
  bool has_momentum() const { return m_shape.momentum; }
  int64_t train_rows() const { return m_shape.train_rows; }

 protected:
  explicit BackendShape(const Shape& shape) : m_shape(shape) {}
  virtual ~BackendShape() = default;

 private:
  Shape m_shape;
};

// State and stepping: W, the momentum and the loss window in and out; one training step's parts.
class Stepping : public virtual BackendShape {
 public:
  std::string name() const { return do_name(); }

  // Every worker's initial weights, drawn where W lives (no m x d array on the host): weights
  // initial_weight() of philox.hpp from stream (seed, Init, same_init ? 0 : k), biases 0.
  void initialize_weights(const ModelConfig& init, uint64_t seed);
  // All workers' parameters, m x d row-major doubles (no row padding).
  void set_weights(const std::vector<double>& w);
  std::vector<double> weights() const { return do_weights(); }

  BackendState save_state() const { return do_save_state(); }
  // Checked whole (sizes, momentum, loss window) before anything is written.
  void load_state(const BackendState& state);

  // The state streamed in the backend's own precision, for checkpoints: W (momentum = false)
  // or the momentum buffers, row by row, d scalars a row, in chunks of whole rows; no copy of
  // the whole matrix is made on the host. sink(bytes, n) takes each chunk; source(bytes, n)
  // fills one.
  int scalar_bytes() const { return do_scalar_bytes(); }  // 4: float32, 8: float64
  void write_rows(bool momentum, const std::function<void(const char*, size_t)>& sink) const;
  void read_rows(bool momentum, const std::function<void(char*, size_t)>& source);
  LossWindow loss_window() const { return do_loss_window(); }
  void set_loss_window(const LossWindow& window);

  // Draws every worker's minibatch of this step (Philox: a function of seed, worker, step).
  void sample(int64_t step);
  // The drawn training-set indices, m x batch (for checks; not on the hot path).
  std::vector<int64_t> minibatch_indices() const { return do_minibatch_indices(); }
  // G[k] = gradient of worker k's minibatch loss at W[k], for all k; with record_loss,
  // the loss joins the training-loss window (a SAM step's second pass does not).
  void local_gradient(bool record_loss) { do_local_gradient(record_loss); }
  // G, m x d doubles (for checks; not on the hot path).
  std::vector<double> gradients() const { return do_gradients(); }
  // || (1/m) sum_k G[k] ||: call after local_gradient, before the update.
  double mean_gradient_norm() { return do_mean_gradient_norm(); }
  // C-SGD: G[k] = (1/m) sum_j G[j] for all k.
  void average_gradients() { do_average_gradients(); }
  // The step: U from G (OptimizerParams), then W' = P W - lr U or P (W - lr U);
  // mixing == nullptr means P = I (no communication). P is m x m; lr finite. G is not the
  // gradient afterwards (the CPU backend keeps U in its place): each update needs its own
  // local_gradient first.
  void mix_update(const Csr* mixing, double lr, MixForm form);
  // W[k] = mean_j W[j] for all k (exact averaging; local SGD).
  void average_weights() { do_average_weights(); }
  // (1/m) sum_k G[k], d doubles (SAM's ascent direction).
  std::vector<double> mean_gradient() { return do_mean_gradient(); }
  // Saves W, then W[k] += eps (d values: the same for all k; m x d: row k for worker k);
  // restore_weights() brings the saved W back exactly, once per perturbation.
  void perturb_weights(const std::vector<double>& eps);
  void restore_weights();
  // perturb_weights with eps_i = sigma N(0, 1), the same for every worker, drawn from Philox
  // (seed, Curvature domain, stream, counter i), i < d (average-direction SAM's step), where W
  // lives.
  void perturb_gaussian(double sigma, uint64_t seed, uint32_t stream);
  // perturb_weights with eps = rho g/||g|| for every worker, g = (1/m) sum_k G[k] (SAM's
  // ascent step; eps = 0 when g = 0), where W lives.
  void perturb_along_mean_gradient(double rho);

  TrainLoss take_train_loss() { return do_take_train_loss(); }
  // The first step (the `step` of sample()) whose mean minibatch loss was NaN or Inf, and the
  // first whose update (mix_update) wrote a NaN or Inf into W or into the momentum; -1 where
  // none yet. The update's check is what catches a NaN weight whose loss stays finite (a ReLU
  // maps a NaN pre-activation to 0, so the loss and the gradient stay finite while the weight
  // stays NaN).
  NonFiniteSteps first_nonfinite() const { return do_first_nonfinite(); }

  // For benchmarks: seconds per call of `body` (calls on this backend), over `calls` >= 1 calls
  // back to back. The CPU backend times with the host clock; the CUDA backend with events on
  // its stream, after the queued work has finished.
  double seconds_per_call(const std::function<void()>& body, int calls);

 protected:
  virtual std::string do_name() const = 0;
  virtual void do_initialize_weights(const ModelConfig& init, uint64_t seed) = 0;
  virtual void do_set_weights(const std::vector<double>& w) = 0;
  virtual std::vector<double> do_weights() const = 0;
  virtual BackendState do_save_state() const = 0;
  virtual void do_load_state(const BackendState& state) = 0;
  virtual int do_scalar_bytes() const = 0;
  virtual void do_write_rows(bool momentum,
                             const std::function<void(const char*, size_t)>& sink) const = 0;
  virtual void do_read_rows(bool momentum, const std::function<void(char*, size_t)>& source) = 0;
  virtual LossWindow do_loss_window() const = 0;
  virtual void do_set_loss_window(const LossWindow& window) = 0;
  virtual void do_sample(int64_t step) = 0;
  virtual std::vector<int64_t> do_minibatch_indices() const = 0;
  virtual void do_local_gradient(bool record_loss) = 0;
  virtual std::vector<double> do_gradients() const = 0;
  virtual double do_mean_gradient_norm() = 0;
  virtual void do_average_gradients() = 0;
  virtual void do_mix_update(const Csr* mixing, double lr, MixForm form) = 0;
  virtual void do_average_weights() = 0;
  virtual std::vector<double> do_mean_gradient() = 0;
  // Saves W, then adds eps: d values (per_worker false) or m x d.
  virtual void do_perturb_weights(const std::vector<double>& eps, bool per_worker) = 0;
  virtual void do_restore_weights() = 0;
  // The defaults go through the host; the CUDA backend stays on the device. Both save W first.
  virtual void do_perturb_gaussian(double sigma, uint64_t seed, uint32_t stream);
  virtual void do_perturb_along_mean_gradient(double rho);
  virtual TrainLoss do_take_train_loss() = 0;
  virtual NonFiniteSteps do_first_nonfinite() const = 0;
  virtual double do_seconds_per_call(const std::function<void()>& body, int calls);

 private:
  bool m_perturbed = false;  // a perturbation is waiting for its restore
};

// Evaluation of the workers and of their mean on a split.
class Evaluation : public virtual BackendShape {
 public:
  // A scan of W now (evaluations; set_weights and load_state are not checked by the update).
  bool weights_finite() { return do_weights_finite(); }
  // (1/m) sum_k ||W[k] - mean_j W[j]||^2
  double consensus_distance() { return do_consensus_distance(); }
  // The averaged model w-bar on a split, and every worker's own model.
  EvalStats evaluate_mean(Split split) { return do_evaluate_mean(split); }
  std::vector<EvalStats> evaluate_workers(Split split) { return do_evaluate_workers(split); }
  // Claim 1: the workers as an ensemble (the mean of their predictive distributions)
  // beside w-bar alone: accuracy, NLL, ECE.
  struct EnsembleStats {
    PredictiveStats ensemble, mean_model;
  };
  EnsembleStats evaluate_ensemble(Split split) { return do_evaluate_ensemble(split); }

 protected:
  virtual bool do_weights_finite() = 0;
  virtual double do_consensus_distance() = 0;
  virtual EvalStats do_evaluate_mean(Split split) = 0;
  virtual std::vector<EvalStats> do_evaluate_workers(Split split) = 0;
  virtual EnsembleStats do_evaluate_ensemble(Split split) = 0;
};

// Curvature (docs/ARCHITECTURE.md, Definitions): always of the data loss (no weight decay), on a
// fixed subset of the training set, on vectors the backend owns. Results that are scalars come
// back as host doubles; vectors stay in Vectors blocks.
class Curvature : public virtual BackendShape {
 public:
  // The subset: training-set indices, each in [0, train rows).
  void set_curvature_subset(const std::vector<int64_t>& train_indices);
  int64_t curvature_subset_size() const { return m_subset; }

  // A block of `rows` zero vectors.
  std::unique_ptr<Vectors> vectors(int64_t rows);
  // Host rows (count x d doubles) in, and out.
  void upload(Rows dst, const std::vector<double>& values);
  std::vector<double> download(Rows src);
  // dst (m rows) = W; dst (1 row) = w-bar = (1/m) sum_k W[k].
  void copy_weights(Rows dst);
  void mean_weights(Rows dst);
  // Row r of dst (counted from dst.first) = curvature_probe(kind, seed, stream + r / repeat, i),
  // i < d (philox.hpp): repeat > 1 gives `repeat` consecutive rows the same probe.
  void fill_probes(Rows dst, Probe kind, uint64_t seed, uint32_t stream, int64_t repeat = 1);
  // out row i = H(points row (i mod P)) dirs row i on the subset, P = points.count, which
  // divides the number of directions (1: one shared point; m: pair i is worker i mod m's).
  // One batched pass: every (point, direction) pair at once, as the device's memory allows.
  void hvp(Rows points, Rows dirs, Rows out);
  // <a_i, b_i> for each row pair (host doubles; accumulated in double).
  std::vector<double> dots(Rows a, Rows b);
  // y_i += c_i x_i (x: as many rows as y, or 1 row for all);  x_i *= c_i;  dst = src.
  void axpy(Rows y, const std::vector<double>& c, Rows x);
  void scale(Rows x, const std::vector<double>& c);
  void copy(Rows dst, Rows src);
  // r_i -= B^T (B r_i) for each row r_i of r: r projected off the span of the orthonormal rows B.
  void project_out(Rows r, Rows basis);
  // out row j = sum_i c[j * n + i] basis row i, n = basis.count (Ritz vectors from a basis).
  void combine(Rows basis, const std::vector<double>& c, Rows out);
  // The mean loss on the subset at each row of `points` (rows of a block) and, where grads names
  // a block (as many rows, apart from the points), each row's gradient into it. One batched pass.
  std::vector<double> subset_loss(Rows points, Rows grads = {});

  // Host-vector forms, for tests and small problems: rows of d doubles.
  // out row i = H(point i) dir i; `points` holds 1 row (shared) or as many as `dirs`.
  void hvp_into(const std::vector<double>& points, const std::vector<double>& dirs,
                std::vector<double>& out);
  std::vector<double> hvp(const std::vector<double>& points, const std::vector<double>& dirs) {
    std::vector<double> out;
    hvp_into(points, dirs, out);
    return out;
  }
  // subset_loss at host rows; with grads, also each gradient (same shape).
  std::vector<double> subset_loss(const std::vector<double>& points, std::vector<double>* grads);

 protected:
  virtual void do_set_curvature_subset(const std::vector<int64_t>& train_indices) = 0;
  virtual std::unique_ptr<Vectors> do_vectors(int64_t rows) = 0;
  virtual void do_upload(Rows dst, const std::vector<double>& values) = 0;
  virtual std::vector<double> do_download(Rows src) = 0;
  virtual void do_copy_weights(Rows dst) = 0;
  virtual void do_mean_weights(Rows dst) = 0;
  virtual void do_fill_probes(Rows dst, Probe kind, uint64_t seed, uint32_t stream,
                              int64_t repeat) = 0;
  virtual void do_hvp(Rows points, Rows dirs, Rows out) = 0;
  virtual std::vector<double> do_dots(Rows a, Rows b) = 0;
  virtual void do_axpy(Rows y, const std::vector<double>& c, Rows x) = 0;
  virtual void do_scale(Rows x, const std::vector<double>& c) = 0;
  virtual void do_copy(Rows dst, Rows src) = 0;
  virtual void do_project_out(Rows r, Rows basis) = 0;
  virtual void do_combine(Rows basis, const std::vector<double>& c, Rows out) = 0;
  virtual std::vector<double> do_subset_loss(Rows points, Rows grads) = 0;  // grads may be {}

 private:
  void check_rows(Rows r, const char* what) const;
  void check_subset() const;  // HVPs and subset losses need a curvature subset
  int64_t m_subset = 0;
};

// A backend: the three facets. Its constructor initializes the shared BackendShape (a virtual
// base) with backend_shape(setup).
class Backend : public Stepping, public Evaluation, public Curvature {};

Shape backend_shape(const BackendSetup& setup);

// The CPU reference backend, in float or double.
std::unique_ptr<Backend> make_cpu_backend(const BackendSetup& setup, bool float64);

// "auto" | "cpu" | "cuda". Sets *chosen to what was picked and why (for the log).
std::unique_ptr<Backend> make_backend(const std::string& which, const std::string& precision,
                                      const BackendSetup& setup, std::string* chosen);

}  // namespace gossamer
