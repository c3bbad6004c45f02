// The CPU reference backend: W[m][d] as one row-major Eigen matrix (rows padded to 256
// bytes), each worker's gradient by Eigen GEMMs (mlp.cpp), workers in parallel with
// OpenMP. Every reduction over workers runs serially in worker order, so results do not
// depend on the thread count: same seed, same bits.
#pragma once
#include <omp.h>

#include <cmath>
#include <memory>
#include <type_traits>

#include "gossamer/backend.hpp"
#include "gossamer/error.hpp"
#include "gossamer/philox.hpp"
#include "host_memory.hpp"
#include "network.hpp"
#include "parallel.hpp"

namespace gossamer {
namespace cpu {

// Whether every entry is finite, in one vectorized pass: x * 0 is 0 for finite x and NaN for
// NaN or Inf, so the sum is exactly 0 unless one is not finite. (Eigen's allFinite() is a
// scalar loop with an early exit: it cost a quarter of the quickstart's step time.)
template <class Row>
bool all_finite(const Row& x) {
  using T = typename Row::Scalar;
  return (x.array() * T(0)).sum() == T(0);
}

template <class T>
class ShardedBackend;

template <class T>
class CpuBackend final : public Backend {
  friend class ShardedBackend<T>;  // its shards: the update's phases and the rows themselves

 public:
  // share_data: a backend of the same setup whose float64 copy of the data this one reads too
  // (a sharded run's first shard), instead of converting its own.
  explicit CpuBackend(const BackendSetup& s, const CpuBackend* share_data = nullptr)
      : BackendShape(backend_shape(s)),
        m_model(*s.model),
        m_partition(*s.partition),
        m_m(s.workers),
        m_first(s.first_worker),
        m_batch(s.batch),
        m_seed(s.seed),
        m_opt(s.optimizer),
        m_augment(s.augment),
        m_ld(row_stride(m_model.dim, sizeof(T))) {
    // W, W' and G (and the momentum), the data in T, the minibatch indices, and per thread a
    // minibatch with its activations (pre-activation and activation of every layer).
    const double matrix = double(m_m) * double(m_ld) * sizeof(T);
    const bool own_data = !std::is_same_v<T, float> && !share_data;
    const double data =
        own_data ? double(s.data->train.x.size() + s.data->test.x.size()) * sizeof(T) : 0.0;
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
    for (int i = 0; i < 2; ++i) {
      const Dataset& d = i == 0 ? s.data->train : s.data->test;
      const T* rows = nullptr;
      if constexpr (std::is_same_v<T, float>) {
        rows = d.x.data();
      } else {
        m_converted[i] = share_data ? share_data->m_converted[i]
                                    : std::make_shared<const RowMat<T>>(to_matrix(d));
        rows = m_converted[i]->data();
      }
      new (&m_x[i]) ConstRowMap<T>(rows, d.n, d.features);  // Eigen's way to re-seat a Map
    }
    m_y[0] = &s.data->train.y;
    m_y[1] = &s.data->test.y;
    m_indices.assign(size_t(m_m) * m_batch, 0);
    m_batch_x.resize(omp_get_max_threads());
    m_ws.resize(omp_get_max_threads());
    m_batch_y.resize(omp_get_max_threads());
    m_losses.assign(m_m, 0.0);
  }

 private:  // the contract's implementations: backend.hpp has checked every argument

  std::string do_name() const override { return sizeof(T) == 8 ? "cpu (float64)" : "cpu (float32)"; }

  void do_initialize_weights(const ModelConfig& init, uint64_t seed) override {
    m_w.setZero();
    if (init.init == "zeros") return;
    // With same_init every row is row 0's draw: drawn once, copied.
    parallel_for(init.same_init ? 1 : m_m, [&](int64_t k) {
      for (const auto& l : m_model.layers)
        for (int64_t i = l.w_offset; i < l.b_offset; ++i)
          m_w(k, i) = T(initial_weight(init.init == "kaiming", l.in, l.out, seed,
                                       init.same_init ? 0u : uint32_t(m_first + k), uint64_t(i)));
    });
    if (init.same_init)
      parallel_for(m_m - 1, [&](int64_t k) { m_w.row(k + 1) = m_w.row(0); });
  }

  void do_set_weights(const std::vector<double>& w) override { set_padded(m_w, w); }

  std::vector<double> do_weights() const override { return unpadded(m_w); }

  BackendState do_save_state() const override {
    BackendState s;
    s.weights = unpadded(m_w);
    if (m_opt.momentum > 0) s.momentum = unpadded(m_momentum);
    s.loss = do_loss_window();
    return s;
  }

  void do_load_state(const BackendState& s) override {
    set_padded(m_w, s.weights);
    if (m_opt.momentum > 0) set_padded(m_momentum, s.momentum);
    do_set_loss_window(s.loss);
  }

  int do_scalar_bytes() const override { return int(sizeof(T)); }

  // Rows straight from W (zero-copy): a chunk of whole rows at a time.
  void do_write_rows(bool momentum,
                  const std::function<void(const char*, size_t)>& sink) const override {
    const RowMat<T>& a = momentum ? m_momentum : m_w;
    for (int k = 0; k < m_m; ++k)
      sink(reinterpret_cast<const char*>(a.row(k).data()), size_t(m_model.dim) * sizeof(T));
  }

  void do_read_rows(bool momentum, const std::function<void(char*, size_t)>& source) override {
    RowMat<T>& a = momentum ? m_momentum : m_w;
    for (int k = 0; k < m_m; ++k)
      source(reinterpret_cast<char*>(a.row(k).data()), size_t(m_model.dim) * sizeof(T));
  }

  LossWindow do_loss_window() const override { return {m_loss_sum, m_loss.steps, m_nonfinite.loss}; }

  void do_set_loss_window(const LossWindow& w) override {
    m_loss_sum = w.sum;
    m_loss.steps = w.steps;
    m_nonfinite.loss = w.first_nonfinite;
  }

  void do_sample(int64_t step) override {
    m_step = step;
    for (int k = 0; k < m_m; ++k) {
      const int g = m_first + k;  // the worker's global id
      const int64_t n = m_partition.shard_size(g), base = m_partition.shard_start(g);
      for (int j = 0; j < m_batch; ++j)
        m_indices[size_t(k) * m_batch + j] =
            m_partition.indices[base + int64_t(minibatch_position(m_seed, uint32_t(g),
                                                                  uint64_t(step), uint32_t(m_batch),
                                                                  uint32_t(j), uint64_t(n)))];
    }
  }

  std::vector<int64_t> do_minibatch_indices() const override { return m_indices; }

  void do_local_gradient(bool record_loss) override {
    const ConstRowMap<T>& x = m_x[0];
    const auto& y = *m_y[0];
    parallel_for(m_m, [&](int64_t k) {
      const int t = omp_get_thread_num();
      RowMat<T>& bx = m_batch_x[t];
      std::vector<int32_t>& by = m_batch_y[t];
      bx.resize(m_batch, x.cols());
      by.resize(m_batch);
      for (int j = 0; j < m_batch; ++j) {
        const int64_t i = m_indices[size_t(k) * m_batch + j];
        if (m_augment.on()) {
          const AugmentDraw d = augment_draw(m_augment, m_seed, uint32_t(m_first + k),
                                             uint64_t(m_step), uint32_t(m_batch), uint32_t(j));
          for (int64_t f = 0; f < x.cols(); ++f) bx(j, f) = augment_value(x.row(i).data(), m_augment, d, f);
        } else {
          bx.row(j) = x.row(i);
        }
        by[j] = y[i];
      }
      const BatchResult r =
          net_loss_grad(m_model, m_w.row(k).data(), ConstRowMap<T>(bx.data(), bx.rows(), bx.cols()),
                        by.data(), m_grad.row(k).data(), m_ws[t]);
      m_losses[k] = r.loss_sum / m_batch;
    });
    if (!record_loss) return;
    const double mean = add_losses(0.0) / m_m;
    if (!std::isfinite(mean) && m_nonfinite.loss < 0) m_nonfinite.loss = m_step;
    m_loss_sum += mean;
    ++m_loss.steps;
  }

  std::vector<double> do_gradients() const override {
    return unpadded(m_grad);
  }

  double do_mean_gradient_norm() override {
    return std::sqrt(row_mean(m_grad).squaredNorm());
  }

  void do_average_gradients() override {
    const Eigen::Matrix<double, 1, Eigen::Dynamic> mean = row_mean(m_grad);
    m_grad.rowwise() = mean.template cast<T>();
  }

  void do_mix_update(const Csr* mixing, double lr_d, MixForm form) override {
    apply_update(lr_d, form, mixing != nullptr);
    if (mixing) mix_rows(*mixing, nullptr, lr_d, form);
  }

  // The update's first phase: U from G (in G's place), and W -= lr U where the update is local
  // (no mixing) or adapt-then-combine; with no mixing, W is then final and checked.
  void apply_update(double lr_d, MixForm form, bool mixing) {
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
    if (momentum_bad && m_nonfinite.momentum < 0) m_nonfinite.momentum = m_step;
    if (weights_bad && m_nonfinite.weights < 0) m_nonfinite.weights = m_step;
  }

  // The second phase: W' = P W (- lr U), row k from the CSR's row k; a column c >= m reads row
  // c - m of `halo` (a shard's copies of other shards' rows).
  void mix_rows(const Csr& mixing, const RowMat<T>* halo, double lr_d, MixForm form) {
    const T lr = T(lr_d);
    bool weights_bad = false;
#pragma omp parallel for schedule(static) reduction(|| : weights_bad)
    for (int k = 0; k < m_m; ++k) {
      auto out = m_next.row(k);
      out.setZero();
      for (int e = mixing.row_ptr[k]; e < mixing.row_ptr[k + 1]; ++e) {
        const int c = mixing.col[e];
        const T* row = c < m_m ? m_w.row(c).data() : halo->row(c - m_m).data();
        out += T(mixing.val[e]) * Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(row, m_ld);
      }
      if (form == MixForm::Default) out -= lr * m_grad.row(k);
      weights_bad = weights_bad || !all_finite(out);
    }
    m_w.swap(m_next);  // ping-pong: no row is read after it is overwritten
    if (weights_bad && m_nonfinite.weights < 0) m_nonfinite.weights = m_step;
  }

  std::vector<double> do_mean_gradient() override {
    const auto mean = row_mean(m_grad);
    return std::vector<double>(mean.data(), mean.data() + m_model.dim);
  }

  void do_perturb_weights(const std::vector<double>& eps, bool per_worker) override {
    const int64_t d = m_model.dim;
    m_saved = m_w;
    for (int k = 0; k < m_m; ++k)
      m_w.row(k).head(d) += Eigen::Map<const Eigen::Matrix<double, 1, Eigen::Dynamic>>(
                                eps.data() + (per_worker ? k * d : 0), d)
                                .template cast<T>();
  }

  void do_restore_weights() override {
    m_w.swap(m_saved);  // m_saved now holds the perturbed W
  }

  void do_average_weights() override {
    const Eigen::Matrix<double, 1, Eigen::Dynamic> mean = row_mean(m_w);
    m_w.rowwise() = mean.template cast<T>();
  }

  TrainLoss do_take_train_loss() override {
    TrainLoss out = m_loss;
    out.mean = m_loss.steps ? m_loss_sum / double(m_loss.steps) : std::nan("");
    m_loss = TrainLoss{};
    m_loss_sum = 0;
    return out;
  }

  NonFiniteSteps do_first_nonfinite() const override { return m_nonfinite; }

  bool do_weights_finite() override {
    return m_w.allFinite();
  }

  double do_consensus_distance() override {
    return add_squared_distances(row_mean(m_w), 0.0) / m_m;
  }

  EvalStats do_evaluate_mean(Split split) override {
    return evaluate_at(row_mean(m_w).template cast<T>(), split);
  }

  // The model `mean` (a padded row) on a split: chunks in parallel, summed in chunk order.
  EvalStats evaluate_at(const Eigen::Matrix<T, 1, Eigen::Dynamic>& mean, Split split) {
    const ConstRowMap<T>& x = m_x[int(split)];
    const int64_t n = x.rows(), chunks = (n + kEvalChunk - 1) / kEvalChunk;
    std::vector<BatchResult> parts(chunks);
    parallel_for(chunks, [&](int64_t c) {
      parts[c] = eval_rows(mean.data(), split, c * kEvalChunk, std::min(n, (c + 1) * kEvalChunk));
    });
    BatchResult total;
    for (const auto& p : parts) total.loss_sum += p.loss_sum, total.correct += p.correct;
    return {total.loss_sum / double(n), double(total.correct) / double(n)};
  }

  EnsembleStats do_evaluate_ensemble(Split split) override {
    CpuBackend* self = this;
    return ensemble_of(&self, 1, m_m, row_mean(m_w).template cast<T>(), split);
  }

  // Softmax of each row of logits, in double.
  static Eigen::MatrixXd softmax(const RowMat<T>& logits) {
    Eigen::MatrixXd p = logits.template cast<double>();
    for (Eigen::Index i = 0; i < p.rows(); ++i) {
      p.row(i).array() -= p.row(i).maxCoeff();
      p.row(i) = p.row(i).array().exp().matrix();
      p.row(i) /= p.row(i).sum();
    }
    return p;
  }

  // The ensemble of the m workers of `parts` (backends of consecutive workers: one, or a sharded
  // run's shards), each chunk's softmaxes summed in worker order, beside the model `mean`.
  EnsembleStats ensemble_of(CpuBackend* const* parts, int count, int m,
                            const Eigen::Matrix<T, 1, Eigen::Dynamic>& mean, Split split) {
    const ConstRowMap<T>& x = m_x[int(split)];
    const auto& y = *m_y[int(split)];
    const int64_t n = x.rows(), chunks = (n + kEvalChunk - 1) / kEvalChunk;
    std::vector<CalibrationBins> ens(chunks), single(chunks);
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
      NetWorkspace<T>& ws = m_ws[omp_get_thread_num()];
      Eigen::MatrixXd avg = Eigen::MatrixXd::Zero(rows, m_model.classes);
      for (int p = 0; p < count; ++p)
        for (int k = 0; k < parts[p]->m_m; ++k)
          avg += softmax(net_logits(m_model, parts[p]->m_w.row(k).data(), xs, ws));
      score(avg / double(m), start, ens[c]);
      score(softmax(net_logits(m_model, mean.data(), xs, ws)), start, single[c]);
    });
    for (int64_t c = 1; c < chunks; ++c) ens[0].merge(ens[c]), single[0].merge(single[c]);
    return {ens[0].stats(), single[0].stats()};
  }

  void do_set_curvature_subset(const std::vector<int64_t>& indices) override {
    m_curv_x.resize(int64_t(indices.size()), m_x[0].cols());
    m_curv_y.resize(indices.size());
    for (size_t i = 0; i < indices.size(); ++i) {
      m_curv_x.row(int64_t(i)) = m_x[0].row(indices[i]);
      m_curv_y[i] = (*m_y[0])[indices[i]];
    }
  }

  // --- curvature on vectors the backend owns (rows x d in T) ---
  struct Block final : Vectors {
    Block(const void* owner, int64_t rows, int64_t d) : Vectors(owner, rows), a(RowMat<T>::Zero(rows, d)) {}
    RowMat<T> a;
  };
  static auto rows(Rows r) { return static_cast<Block&>(*r.block).a.middleRows(r.first, r.count); }

  std::unique_ptr<Vectors> do_vectors(int64_t count) override {
    check_host_memory(double(count) * double(m_model.dim) * sizeof(T),
                      "curvature vectors (" + std::to_string(count) + " x " +
                          std::to_string(m_model.dim) + ")",
                      "curvature.probes, the Lanczos steps or the workers");
    return std::make_unique<Block>(static_cast<const BackendShape*>(this), count, m_model.dim);
  }

  void do_upload(Rows dst, const std::vector<double>& v) override {
    rows(dst) = Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
                    v.data(), dst.count, m_model.dim)
                    .template cast<T>();
  }

  std::vector<double> do_download(Rows src) override {
    std::vector<double> out(size_t(src.count) * m_model.dim);
    Eigen::Map<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
        out.data(), src.count, m_model.dim) = rows(src).template cast<double>();
    return out;
  }

  void do_copy_weights(Rows dst) override { rows(dst) = m_w.leftCols(m_model.dim); }

  void do_mean_weights(Rows dst) override {
    rows(dst) = row_mean(m_w).head(m_model.dim).template cast<T>();
  }

  void do_fill_probes(Rows dst, Probe kind, uint64_t seed, uint32_t stream,
                      int64_t repeat) override {
    auto a = rows(dst);
    parallel_for(dst.count, [&](int64_t r) {
      for (int64_t i = 0; i < m_model.dim; ++i)
        a(r, i) = T(curvature_probe(kind, seed, stream + uint32_t(r / repeat), uint64_t(i)));
    });
  }

  // Every (point, direction) pair in parallel; pair i's point is row i mod P of `points`.
  void do_hvp(Rows points, Rows dirs, Rows out) override {
    auto p = rows(points), v = rows(dirs), o = rows(out);
    for_each_pair(dirs.count, [&](int64_t i, Chunked& c) {
      const T* w = p.row(i % points.count).data();
      const T* dir = v.row(i).data();
      c.sum_over_subset(*this,
                        [&](const ConstRowMap<T>& x, const int32_t* y, T* result, Workspace& ws) {
                          return net_hvp(m_model, w, dir, x, y, result, ws.net);
                        });
      o.row(i) = Eigen::Map<const Eigen::Matrix<double, 1, Eigen::Dynamic>>(c.acc.data(), m_model.dim)
                     .template cast<T>();
    });
  }

  std::vector<double> do_dots(Rows a, Rows b) override {
    auto x = rows(a), y = rows(b);
    std::vector<double> out(size_t(a.count));
    parallel_for(a.count, [&](int64_t r) {
      out[r] = x.row(r).template cast<double>().dot(y.row(r).template cast<double>());
    });
    return out;
  }

  void do_axpy(Rows y, const std::vector<double>& c, Rows x) override {
    auto ya = rows(y), xa = rows(x);
    for (int64_t r = 0; r < y.count; ++r) ya.row(r) += T(c[r]) * xa.row(x.count == 1 ? 0 : r);
  }

  void do_scale(Rows x, const std::vector<double>& c) override {
    auto xa = rows(x);
    for (int64_t r = 0; r < x.count; ++r) xa.row(r) *= T(c[r]);
  }

  void do_copy(Rows dst, Rows src) override { rows(dst) = rows(src); }

  void do_project_out(Rows r, Rows basis) override {
    auto ra = rows(r);
    const auto b = rows(basis);
    const RowMat<T> c = b * ra.transpose();  // basis x r
    ra.noalias() -= c.transpose() * b;
  }

  void do_combine(Rows basis, const std::vector<double>& c, Rows out) override {
    const Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> cm(
        c.data(), out.count, basis.count);
    rows(out).noalias() = cm.template cast<T>() * rows(basis);
  }

  std::vector<double> do_subset_loss(Rows points, Rows grads) override {
    const auto p = rows(points);
    std::vector<double> losses(size_t(points.count));
    for_each_pair(points.count, [&](int64_t i, Chunked& c) {
      const T* w = p.row(i).data();
      losses[size_t(i)] = c.sum_over_subset(
          *this, [&](const ConstRowMap<T>& x, const int32_t* y, T* result, Workspace& ws) {
            return grads.block ? net_loss_grad(m_model, w, x, y, result, ws.net)
                               : net_loss(m_model, w, x, y, ws.net);
          });
      if (grads.block)
        rows(grads).row(i) =
            Eigen::Map<const Eigen::Matrix<double, 1, Eigen::Dynamic>>(c.acc.data(), m_model.dim)
                .template cast<T>();
    });
    return losses;
  }

  std::vector<EvalStats> do_evaluate_workers(Split split) override {
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
    NetWorkspace<T> net;
    std::vector<T> part;
  };

  // One pair's job: the result summed over the curvature subset in chunks, each weighted by its
  // share of the subset, in double.
  struct Chunked {
    std::vector<double> acc;
    Workspace ws;
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
    for (int k = 0; k < m_m; ++k)
      for (int64_t i = 0; i < m_model.dim; ++i) a(k, i) = T(w[size_t(k) * m_model.dim + i]);
  }

  static RowMat<T> to_matrix(const Dataset& d) {
    return Eigen::Map<const RowMat<float>>(d.x.data(), d.n, d.features).template cast<T>();
  }

  // Mean over workers in double, summed in worker order.
  Eigen::Matrix<double, 1, Eigen::Dynamic> row_mean(const RowMat<T>& a) const {
    Eigen::Matrix<double, 1, Eigen::Dynamic> sum =
        Eigen::Matrix<double, 1, Eigen::Dynamic>::Zero(m_model.dim);
    add_rows(a, sum);
    return padded_mean(sum, m_m);
  }

  // The serial sums over this backend's workers, in worker order, continuing a running sum (a
  // sharded run passes it from shard to shard, so its sums are one backend's).
  template <class Sum>  // a row vector of d doubles, or a Map of one
  void add_rows(const RowMat<T>& a, Sum&& sum) const {
    for (int k = 0; k < m_m; ++k) sum += a.row(k).head(m_model.dim).template cast<double>();
  }
  double add_squared_distances(const Eigen::Matrix<double, 1, Eigen::Dynamic>& mean,
                               double sum) const {
    for (int k = 0; k < m_m; ++k) sum += (m_w.row(k).template cast<double>() - mean).squaredNorm();
    return sum;
  }
  double add_losses(double sum) const {
    for (double l : m_losses) sum += l;
    return sum;
  }
  // sum / workers, padded with zeros to the row stride.
  Eigen::Matrix<double, 1, Eigen::Dynamic> padded_mean(
      const Eigen::Matrix<double, 1, Eigen::Dynamic>& sum, int workers) const {
    Eigen::Matrix<double, 1, Eigen::Dynamic> padded =
        Eigen::Matrix<double, 1, Eigen::Dynamic>::Zero(m_ld);
    padded.head(m_model.dim) = sum / double(workers);
    return padded;
  }

  BatchResult eval_rows(const T* w, Split split, int64_t begin, int64_t end) {
    const ConstRowMap<T>& x = m_x[int(split)];
    return net_loss(m_model, w, ConstRowMap<T>(x.row(begin).data(), end - begin, x.cols()),
                    m_y[int(split)]->data() + begin, m_ws[omp_get_thread_num()]);
  }

  const ModelSpec& m_model;
  const Partition& m_partition;
  const int m_m, m_first, m_batch;
  const uint64_t m_seed;
  const OptimizerParams m_opt;
  const AugmentShape m_augment;
  const int64_t m_ld;
  RowMat<T> m_w, m_next, m_grad, m_momentum, m_saved;
  // The data sets as T rows: a float32 backend reads the Dataset's own floats (no copy; the
  // Dataset outlives the backend, as m_y's pointers already assume); a float64 one converts
  // them once, and a sharded run's shards share that conversion.
  std::shared_ptr<const RowMat<T>> m_converted[2];
  ConstRowMap<T> m_x[2] = {ConstRowMap<T>(nullptr, 0, 0), ConstRowMap<T>(nullptr, 0, 0)};
  const std::vector<int32_t>* m_y[2];
  std::vector<int64_t> m_indices;
  RowMat<T> m_curv_x;
  std::vector<int32_t> m_curv_y;
  std::vector<RowMat<T>> m_batch_x;
  std::vector<std::vector<int32_t>> m_batch_y;
  std::vector<NetWorkspace<T>> m_ws;
  std::vector<double> m_losses;
  int64_t m_step = 0;
  NonFiniteSteps m_nonfinite;  // the loss's is checkpointed (the loss window)
  TrainLoss m_loss;
  double m_loss_sum = 0;
};

}  // namespace cpu
}  // namespace gossamer
