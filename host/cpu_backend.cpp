// The CPU reference backend: W[m][d] as one row-major Eigen matrix (rows padded to 256
// bytes), each worker's gradient by Eigen GEMMs (mlp.cpp), workers in parallel with
// OpenMP. Every reduction over workers runs serially in worker order, so results do not
// depend on the thread count: same seed, same bits.
#include <omp.h>

#include <cmath>

#include "gossamer/backend.hpp"
#include "gossamer/error.hpp"
#include "gossamer/philox.hpp"
#include "host_memory.hpp"
#include "mlp.hpp"
#include "parallel.hpp"

namespace gossamer {
namespace {

// Whether every entry is finite, in one vectorized pass: x * 0 is 0 for finite x and NaN for
// NaN or Inf, so the sum is exactly 0 unless one is not finite. (Eigen's allFinite() is a
// scalar loop with an early exit: it cost a quarter of the quickstart's step time.)
template <class Row>
bool all_finite(const Row& x) {
  using T = typename Row::Scalar;
  return (x.array() * T(0)).sum() == T(0);
}

template <class T>
class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const BackendSetup& s)
      : m_model(*s.model),
        m_partition(*s.partition),
        m_m(s.workers),
        m_batch(s.batch),
        m_seed(s.seed),
        m_opt(s.optimizer),
        m_ld(row_stride(m_model.dim, sizeof(T))) {
    // W, W' and G (and the momentum), the data in T, the minibatch indices, and per thread a
    // minibatch with its activations (pre-activation and activation of every layer).
    const double matrix = double(m_m) * double(m_ld) * sizeof(T);
    const double data = double(s.data->train.x.size() + s.data->test.x.size()) * sizeof(T);
    double activations = 0;
    for (const auto& l : m_model.layers) activations += 2.0 * l.out;
    check_host_memory((m_opt.momentum > 0 ? 4 : 3) * matrix + data +
                          double(m_m) * m_batch * sizeof(int64_t) +
                          double(omp_get_max_threads()) * m_batch *
                              (m_model.input + activations) * sizeof(T),
                      "the CPU backend (W, W', G" + std::string(m_opt.momentum > 0 ? ", momentum" : "") +
                          ": " + std::to_string(m_m) + " x " + std::to_string(m_ld) +
                          " each, the data and the minibatches)",
                      "workers, the model size or optimizer.batch_size");
    m_w = RowMat<T>::Zero(m_m, m_ld);
    m_next = RowMat<T>::Zero(m_m, m_ld);
    m_grad = RowMat<T>::Zero(m_m, m_ld);
    if (m_opt.momentum > 0) m_momentum = RowMat<T>::Zero(m_m, m_ld);
    m_x[0] = to_matrix(s.data->train);
    m_x[1] = to_matrix(s.data->test);
    m_y[0] = &s.data->train.y;
    m_y[1] = &s.data->test.y;
    m_indices.assign(size_t(m_m) * m_batch, 0);
    m_batch_x.resize(omp_get_max_threads());
    m_ws.resize(omp_get_max_threads());
    m_batch_y.resize(omp_get_max_threads());
    m_losses.assign(m_m, 0.0);
  }

  int64_t dim() const override { return m_model.dim; }
  std::string name() const override { return sizeof(T) == 8 ? "cpu (float64)" : "cpu (float32)"; }

  void initialize_weights(const ModelConfig& init, uint64_t seed) override {
    m_w.setZero();
    if (init.init == "zeros") return;
    // With same_init every row is row 0's draw: drawn once, copied.
    parallel_for(init.same_init ? 1 : m_m, [&](int64_t k) {
      for (const auto& l : m_model.layers)
        for (int64_t i = l.w_offset; i < l.b_offset; ++i)
          m_w(k, i) = T(initial_weight(init.init == "kaiming", l.in, l.out, seed, uint32_t(k), uint64_t(i)));
    });
    if (init.same_init)
      parallel_for(m_m - 1, [&](int64_t k) { m_w.row(k + 1) = m_w.row(0); });
  }

  void set_weights(const std::vector<double>& w) override { set_padded(m_w, w); }

  std::vector<double> weights() const override { return unpadded(m_w); }

  BackendState save_state() const override {
    BackendState s;
    s.weights = unpadded(m_w);
    if (m_opt.momentum > 0) s.momentum = unpadded(m_momentum);
    s.loss = loss_window();
    return s;
  }

  void load_state(const BackendState& s) override {
    check_state_momentum(s, m_opt.momentum > 0);
    set_weights(s.weights);
    if (m_opt.momentum > 0) set_padded(m_momentum, s.momentum);
    set_loss_window(s.loss);
  }

  int scalar_bytes() const override { return int(sizeof(T)); }
  bool has_momentum() const override { return m_opt.momentum > 0; }

  // Rows straight from W (zero-copy): a chunk of whole rows at a time.
  void write_rows(bool momentum,
                  const std::function<void(const char*, size_t)>& sink) const override {
    check_state_rows(momentum, has_momentum());
    const RowMat<T>& a = momentum ? m_momentum : m_w;
    for (int k = 0; k < m_m; ++k)
      sink(reinterpret_cast<const char*>(a.row(k).data()), size_t(m_model.dim) * sizeof(T));
  }

  void read_rows(bool momentum, const std::function<void(char*, size_t)>& source) override {
    check_state_rows(momentum, has_momentum());
    RowMat<T>& a = momentum ? m_momentum : m_w;
    for (int k = 0; k < m_m; ++k)
      source(reinterpret_cast<char*>(a.row(k).data()), size_t(m_model.dim) * sizeof(T));
  }

  LossWindow loss_window() const override { return {m_loss_sum, m_loss.steps, m_nonfinite.loss}; }

  void set_loss_window(const LossWindow& w) override {
    m_loss_sum = w.sum;
    m_loss.steps = w.steps;
    m_nonfinite.loss = w.first_nonfinite;
  }

  void sample(int64_t step) override {
    m_step = step;
    for (int k = 0; k < m_m; ++k) {
      const int64_t n = m_partition.shard_size(k), base = m_partition.shard_start(k);
      for (int j = 0; j < m_batch; ++j)
        m_indices[size_t(k) * m_batch + j] =
            m_partition.indices[base + int64_t(minibatch_position(m_seed, uint32_t(k),
                                                                  uint64_t(step), uint32_t(m_batch),
                                                                  uint32_t(j), uint64_t(n)))];
    }
  }

  std::vector<int64_t> minibatch_indices() const override { return m_indices; }

  void local_gradient(bool record_loss) override {
    const RowMat<T>& x = m_x[0];
    const auto& y = *m_y[0];
    parallel_for(m_m, [&](int64_t k) {
      const int t = omp_get_thread_num();
      RowMat<T>& bx = m_batch_x[t];
      std::vector<int32_t>& by = m_batch_y[t];
      bx.resize(m_batch, x.cols());
      by.resize(m_batch);
      for (int j = 0; j < m_batch; ++j) {
        const int64_t i = m_indices[size_t(k) * m_batch + j];
        bx.row(j) = x.row(i);
        by[j] = y[i];
      }
      const BatchResult r =
          mlp_loss_grad(m_model, m_w.row(k).data(), ConstRowMap<T>(bx.data(), bx.rows(), bx.cols()),
                        by.data(), m_grad.row(k).data(), m_ws[t]);
      m_losses[k] = r.loss_sum / m_batch;
    });
    if (!record_loss) return;
    double sum = 0;
    for (double l : m_losses) sum += l;
    const double mean = sum / m_m;
    if (!std::isfinite(mean) && m_nonfinite.loss < 0) m_nonfinite.loss = m_step;
    m_loss_sum += mean;
    ++m_loss.steps;
  }

  std::vector<double> gradients() const override {
    return unpadded(m_grad);
  }

  double mean_gradient_norm() override {
    return std::sqrt(row_mean(m_grad).squaredNorm());
  }

  void average_gradients() override {
    const Eigen::Matrix<double, 1, Eigen::Dynamic> mean = row_mean(m_grad);
    m_grad.rowwise() = mean.template cast<T>();
  }

  void mix_update(const Csr* mixing, double lr_d, MixForm form) override {
    const T lr = T(lr_d), mu = T(m_opt.momentum), wd = T(m_opt.weight_decay);
    // U in place of G: v = g + wd w; buf = mu buf + v; U = buf or v + mu buf (Nesterov).
    // Every row written is checked while it is in cache (first_nonfinite).
    bool momentum_bad = false, weights_bad = false;
#pragma omp parallel for schedule(static) reduction(|| : momentum_bad)
    for (int k = 0; k < m_m; ++k) {
      auto u = m_grad.row(k);
      if (wd != T(0)) u += wd * m_w.row(k);
      if (mu != T(0)) {
        auto buf = m_momentum.row(k);
        buf = mu * buf + u;
        momentum_bad = momentum_bad || !all_finite(buf);
        if (m_opt.nesterov)
          u += mu * buf;
        else
          u = buf;
      }
    }
    if (!mixing || form == MixForm::Atc) {
#pragma omp parallel for schedule(static) reduction(|| : weights_bad)
      for (int k = 0; k < m_m; ++k) {
        m_w.row(k) -= lr * m_grad.row(k);
        if (!mixing) weights_bad = weights_bad || !all_finite(m_w.row(k));
      }
    }
    if (mixing) {
#pragma omp parallel for schedule(static) reduction(|| : weights_bad)
      for (int k = 0; k < m_m; ++k) {
        auto out = m_next.row(k);
        out.setZero();
        for (int e = mixing->row_ptr[k]; e < mixing->row_ptr[k + 1]; ++e)
          out += T(mixing->val[e]) * m_w.row(mixing->col[e]);
        if (form == MixForm::Default) out -= lr * m_grad.row(k);
        weights_bad = weights_bad || !all_finite(out);
      }
      m_w.swap(m_next);  // ping-pong: no row is read after it is overwritten
    }
    if (momentum_bad && m_nonfinite.momentum < 0) m_nonfinite.momentum = m_step;
    if (weights_bad && m_nonfinite.weights < 0) m_nonfinite.weights = m_step;
  }

  std::vector<double> mean_gradient() override {
    const auto mean = row_mean(m_grad);
    return std::vector<double>(mean.data(), mean.data() + m_model.dim);
  }

  void perturb_weights(const std::vector<double>& eps) override {
    const int64_t d = m_model.dim;
    const bool per_worker = perturbation_is_per_worker(eps.size(), m_m, d);
    m_saved = m_w;
    m_saved_valid = true;
    for (int k = 0; k < m_m; ++k)
      m_w.row(k).head(d) += Eigen::Map<const Eigen::Matrix<double, 1, Eigen::Dynamic>>(
                                eps.data() + (per_worker ? k * d : 0), d)
                                .template cast<T>();
  }

  void restore_weights() override {
    if (!m_saved_valid)
      throw runtime_error("restore_weights: no perturb_weights since the last restore");
    m_w.swap(m_saved);
    m_saved_valid = false;  // m_saved now holds the perturbed W
  }

  void average_weights() override {
    const Eigen::Matrix<double, 1, Eigen::Dynamic> mean = row_mean(m_w);
    m_w.rowwise() = mean.template cast<T>();
  }

  TrainLoss take_train_loss() override {
    TrainLoss out = m_loss;
    out.mean = m_loss.steps ? m_loss_sum / double(m_loss.steps) : std::nan("");
    m_loss = TrainLoss{};
    m_loss_sum = 0;
    return out;
  }

  NonFiniteSteps first_nonfinite() const override { return m_nonfinite; }

  bool weights_finite() override {
    return m_w.allFinite();
  }

  double consensus_distance() override {
    const Eigen::Matrix<double, 1, Eigen::Dynamic> mean = row_mean(m_w);
    double sum = 0;
    for (int k = 0; k < m_m; ++k) sum += (m_w.row(k).template cast<double>() - mean).squaredNorm();
    return sum / m_m;
  }

  EvalStats evaluate_mean(Split split) override {
    const Eigen::Matrix<T, 1, Eigen::Dynamic> mean = row_mean(m_w).template cast<T>();
    // Chunks in parallel, summed in chunk order.
    const RowMat<T>& x = m_x[int(split)];
    const int64_t n = x.rows(), chunks = (n + kEvalChunk - 1) / kEvalChunk;
    std::vector<BatchResult> parts(chunks);
    parallel_for(chunks, [&](int64_t c) {
      parts[c] = eval_rows(mean.data(), split, c * kEvalChunk, std::min(n, (c + 1) * kEvalChunk));
    });
    BatchResult total;
    for (const auto& p : parts) total.loss_sum += p.loss_sum, total.correct += p.correct;
    return {total.loss_sum / double(n), double(total.correct) / double(n)};
  }

  EnsembleStats evaluate_ensemble(Split split) override {
    const RowMat<T>& x = m_x[int(split)];
    const auto& y = *m_y[int(split)];
    const Eigen::Matrix<T, 1, Eigen::Dynamic> mean = row_mean(m_w).template cast<T>();
    const int64_t n = x.rows(), chunks = (n + kEvalChunk - 1) / kEvalChunk;
    std::vector<CalibrationBins> ens(chunks), single(chunks);
    // Softmax of each row of logits, in double.
    const auto softmax = [](const RowMat<T>& logits) {
      Eigen::MatrixXd p = logits.template cast<double>();
      for (Eigen::Index i = 0; i < p.rows(); ++i) {
        p.row(i).array() -= p.row(i).maxCoeff();
        p.row(i) = p.row(i).array().exp().matrix();
        p.row(i) /= p.row(i).sum();
      }
      return p;
    };
    const auto score = [&](const Eigen::MatrixXd& p, int64_t start, CalibrationBins& bins) {
      for (Eigen::Index i = 0; i < p.rows(); ++i) {
        Eigen::Index top;
        const double conf = p.row(i).maxCoeff(&top);
        bins.add(conf, top == y[start + i], p(i, y[start + i]));
      }
    };
    parallel_for(chunks, [&](int64_t c) {
      const int64_t start = c * kEvalChunk, rows = std::min(n, start + kEvalChunk) - start;
      const ConstRowMap<T> xs(x.row(start).data(), rows, x.cols());
      MlpWorkspace<T>& ws = m_ws[omp_get_thread_num()];
      Eigen::MatrixXd avg = Eigen::MatrixXd::Zero(rows, m_model.classes);
      for (int k = 0; k < m_m; ++k) avg += softmax(mlp_logits(m_model, m_w.row(k).data(), xs, ws));
      score(avg / double(m_m), start, ens[c]);
      score(softmax(mlp_logits(m_model, mean.data(), xs, ws)), start, single[c]);
    });
    for (int64_t c = 1; c < chunks; ++c) ens[0].merge(ens[c]), single[0].merge(single[c]);
    return {ens[0].stats(), single[0].stats()};
  }

  void set_curvature_subset(const std::vector<int64_t>& indices) override {
    m_curv_x.resize(int64_t(indices.size()), m_x[0].cols());
    m_curv_y.resize(indices.size());
    for (size_t i = 0; i < indices.size(); ++i) {
      m_curv_x.row(int64_t(i)) = m_x[0].row(indices[i]);
      m_curv_y[i] = (*m_y[0])[indices[i]];
    }
  }

  void hvp_into(const std::vector<double>& points, const std::vector<double>& dirs,
                std::vector<double>& out) override {
    const int64_t d = m_model.dim, pairs = hvp_pairs(points.size(), dirs.size(), d);
    const bool shared = int64_t(points.size()) == d;
    out.resize(dirs.size());
    for_each_pair(pairs, [&](int64_t i, Chunked& c) {
      c.load(points.data() + (shared ? 0 : i * d), dirs.data() + i * d, d);
      c.sum_over_subset(*this,
                        [&](const ConstRowMap<T>& x, const int32_t* y, T* result, Workspace& ws) {
                          return mlp_hvp(m_model, c.w.data(), c.v.data(), x, y, result, ws.hvp);
                        });
      std::copy(c.acc.begin(), c.acc.end(), out.begin() + i * d);
    });
  }

  std::vector<double> subset_loss(const std::vector<double>& points,
                                  std::vector<double>* grads) override {
    const int64_t d = m_model.dim, count = whole_rows(points.size(), d, "subset_loss: points");
    std::vector<double> losses(count);
    if (grads) grads->assign(points.size(), 0.0);
    for_each_pair(count, [&](int64_t i, Chunked& c) {
      c.load(points.data() + i * d, nullptr, d);
      losses[i] = c.sum_over_subset(
          *this, [&](const ConstRowMap<T>& x, const int32_t* y, T* result, Workspace& ws) {
            return grads ? mlp_loss_grad(m_model, c.w.data(), x, y, result, ws.hvp.base)
                         : mlp_loss(m_model, c.w.data(), x, y, ws.hvp.base);
          });
      if (grads) std::copy(c.acc.begin(), c.acc.end(), grads->begin() + i * d);
    });
    return losses;
  }

  std::vector<EvalStats> evaluate_workers(Split split) override {
    const int64_t n = m_x[int(split)].rows();
    std::vector<EvalStats> out(m_m);
    parallel_for(m_m, [&](int64_t k) {
      BatchResult total;
      for (int64_t start = 0; start < n; start += kEvalChunk) {
        const BatchResult r =
            eval_rows(m_w.row(k).data(), split, start, std::min(n, start + kEvalChunk));
        total.loss_sum += r.loss_sum;
        total.correct += r.correct;
      }
      out[k] = {total.loss_sum / double(n), double(total.correct) / double(n)};
    });
    return out;
  }

 private:
  static constexpr int64_t kEvalChunk = 1024;

  struct Workspace {
    HvpWorkspace<T> hvp;
    std::vector<T> part;
  };

  // One (point, direction) pair's job: the point and direction in T, and the result
  // summed over the curvature subset in chunks, each weighted by its share of the subset.
  struct Chunked {
    std::vector<T> w, v;
    std::vector<double> acc;
    Workspace ws;
    void load(const double* point, const double* dir, int64_t d) {
      w.assign(point, point + d);
      if (dir) v.assign(dir, dir + d);
    }
    template <class F>
    double sum_over_subset(CpuBackend& b, F&& f) {
      const int64_t n = b.m_curv_x.rows(), d = b.m_model.dim;
      acc.assign(d, 0.0);
      ws.part.assign(d, T(0));
      double loss = 0;
      for (int64_t start = 0; start < n; start += kEvalChunk) {
        const int64_t rows = std::min(n, start + kEvalChunk) - start;
        const BatchResult r =
            f(ConstRowMap<T>(b.m_curv_x.row(start).data(), rows, b.m_curv_x.cols()),
              b.m_curv_y.data() + start, ws.part.data(), ws);
        const double share = double(rows) / double(n);
        for (int64_t i = 0; i < d; ++i) acc[i] += share * double(ws.part[i]);
        loss += r.loss_sum;
      }
      return loss / double(n);
    }
  };

  // Pairs in parallel; each pair's sum runs in a fixed order, so results do not depend on threads.
  template <class F>
  void for_each_pair(int64_t count, F&& job) {
    if (m_curv_x.rows() == 0)
      throw runtime_error("curvature: the curvature subset is empty (set_curvature_subset first)");
    std::vector<Chunked> jobs(omp_get_max_threads());
    parallel_for(count, [&](int64_t i) { job(i, jobs[omp_get_thread_num()]); }, Schedule::Dynamic);
  }

  // m x d doubles <-> the padded m x ld matrix.
  std::vector<double> unpadded(const RowMat<T>& a) const {
    std::vector<double> w(size_t(m_m) * m_model.dim);
    for (int k = 0; k < m_m; ++k)
      for (int64_t i = 0; i < m_model.dim; ++i) w[size_t(k) * m_model.dim + i] = double(a(k, i));
    return w;
  }
  void set_padded(RowMat<T>& a, const std::vector<double>& w) const {
    check_row_values(w.size(), m_m, m_model.dim);
    for (int k = 0; k < m_m; ++k)
      for (int64_t i = 0; i < m_model.dim; ++i) a(k, i) = T(w[size_t(k) * m_model.dim + i]);
  }

  static RowMat<T> to_matrix(const Dataset& d) {
    return Eigen::Map<const RowMat<float>>(d.x.data(), d.n, d.features).template cast<T>();
  }

  // Mean over workers in double, summed in worker order.
  Eigen::Matrix<double, 1, Eigen::Dynamic> row_mean(const RowMat<T>& a) const {
    Eigen::Matrix<double, 1, Eigen::Dynamic> mean =
        Eigen::Matrix<double, 1, Eigen::Dynamic>::Zero(m_model.dim);
    for (int k = 0; k < m_m; ++k) mean += a.row(k).head(m_model.dim).template cast<double>();
    Eigen::Matrix<double, 1, Eigen::Dynamic> padded =
        Eigen::Matrix<double, 1, Eigen::Dynamic>::Zero(m_ld);
    padded.head(m_model.dim) = mean / double(m_m);
    return padded;
  }

  BatchResult eval_rows(const T* w, Split split, int64_t begin, int64_t end) {
    const RowMat<T>& x = m_x[int(split)];
    return mlp_loss(m_model, w, ConstRowMap<T>(x.row(begin).data(), end - begin, x.cols()),
                    m_y[int(split)]->data() + begin, m_ws[omp_get_thread_num()]);
  }

  const ModelSpec& m_model;
  const Partition& m_partition;
  const int m_m, m_batch;
  const uint64_t m_seed;
  const OptimizerParams m_opt;
  const int64_t m_ld;
  RowMat<T> m_w, m_next, m_grad, m_momentum, m_saved;
  bool m_saved_valid = false;
  RowMat<T> m_x[2];
  const std::vector<int32_t>* m_y[2];
  std::vector<int64_t> m_indices;
  RowMat<T> m_curv_x;
  std::vector<int32_t> m_curv_y;
  std::vector<RowMat<T>> m_batch_x;
  std::vector<std::vector<int32_t>> m_batch_y;
  std::vector<MlpWorkspace<T>> m_ws;
  std::vector<double> m_losses;
  int64_t m_step = 0;
  NonFiniteSteps m_nonfinite;  // the loss's is checkpointed (the loss window)
  TrainLoss m_loss;
  double m_loss_sum = 0;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const BackendSetup& setup, bool float64) {
  if (float64) return std::make_unique<CpuBackend<double>>(setup);
  return std::make_unique<CpuBackend<float>>(setup);
}

}  // namespace gossamer
