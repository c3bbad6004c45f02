// A sharded CPU run (docs/ARCHITECTURE.md, "Shards"): W's rows split into contiguous blocks, one
// CpuBackend a block, each step's halo rows copied between them by the in-process transport,
// and every reduction over workers run across the shards in worker order. The result is bit for
// bit that of one CpuBackend: the per-worker work is the same, each gossip row sums the same
// entries in the same order, and every sum over workers is the same serial sum.
#pragma once
#include <cstring>

#include "cpu_backend.hpp"
#include "gossamer/transport.hpp"

namespace gossamer {
namespace cpu {

// Rows between shards in one process: memory copies; ordered sums run shard after shard.
class InProcessTransport final : public Transport {
 public:
  using Row = std::function<char*(int shard, int64_t index, bool halo)>;
  InProcessTransport(size_t row_bytes, Row row) : m_row_bytes(row_bytes), m_row(std::move(row)) {}
  std::string name() const override { return "in-process"; }

  void exchange(const std::vector<RowCopy>& copies) override {
    parallel_for(int64_t(copies.size()), [&](int64_t i) {
      const RowCopy& c = copies[size_t(i)];
      std::memcpy(m_row(c.to, c.slot, true), m_row(c.from, c.worker, false), m_row_bytes);
    });
    m_bytes += int64_t(copies.size()) * int64_t(m_row_bytes);
  }

  void ordered_sum(std::vector<double>& acc,
                   const std::function<void(int, std::vector<double>&)>& add) override {
    for (int s = 0; s < m_shards; ++s) add(s, acc);
  }
  void set_shards(int shards) { m_shards = shards; }

 private:
  size_t m_row_bytes;
  Row m_row;
  int m_shards = 1;
};

template <class T>
class ShardedBackend final : public Backend {
 public:
  using Shard = CpuBackend<T>;
  using Mean = Eigen::Matrix<double, 1, Eigen::Dynamic>;

  explicit ShardedBackend(const BackendSetup& s)
      : BackendShape(backend_shape(s)),
        m_layout(s.workers, s.shards),
        m_d(s.model->dim),
        m_halo_plan(m_layout) {
    for (int i = 0; i < m_layout.shards(); ++i) {
      BackendSetup sub = s;
      sub.workers = m_layout.count(i);
      sub.first_worker = s.first_worker + m_layout.first(i);
      sub.shards = 1;
      m_shards.push_back(std::make_unique<Shard>(sub, i > 0 ? m_shards[0].get() : nullptr));
    }
    m_halo.resize(m_shards.size());
    m_transport = std::make_unique<InProcessTransport>(
        size_t(m_d) * sizeof(T), [this](int shard, int64_t index, bool halo) {
          Shard& sh = *m_shards[size_t(shard)];
          T* row = halo ? m_halo[size_t(shard)].row(index).data()
                        : sh.m_w.row(index - m_layout.first(shard)).data();
          return reinterpret_cast<char*>(row);
        });
    m_transport->set_shards(m_layout.shards());
  }

  // Row bytes the halo exchanges have moved (bench).
  int64_t bytes_exchanged() const { return m_transport->bytes_exchanged(); }

 private:  // the contract's implementations: backend.hpp has checked every argument
  // --- rows split over the shards and joined back ---
  template <class F>
  void each(F&& f) {
    for (size_t i = 0; i < m_shards.size(); ++i) f(*m_shards[i], int(i));
  }
  std::vector<double> rows_of_shard(const std::vector<double>& v, int s) const {
    const auto b = v.begin() + int64_t(m_layout.first(s)) * m_d;
    return std::vector<double>(b, b + int64_t(m_layout.count(s)) * m_d);
  }
  template <class F>
  std::vector<double> joined(F&& part) const {
    std::vector<double> out;
    for (size_t i = 0; i < m_shards.size(); ++i) {
      const std::vector<double> p = part(*m_shards[i]);
      out.insert(out.end(), p.begin(), p.end());
    }
    return out;
  }

  // (1/m) sum_k a[k] over all workers in worker order (a: W or G), padded to the row stride as
  // CpuBackend::row_mean: the shards continue one running sum.
  Mean ordered_mean(bool grads) {
    std::vector<double> acc(size_t(m_d), 0.0);
    m_transport->ordered_sum(acc, [&](int s, std::vector<double>& a) {
      const Shard& sh = *m_shards[size_t(s)];
      sh.add_rows(grads ? sh.m_grad : sh.m_w, Eigen::Map<Mean>(a.data(), m_d));
    });
    return m_shards[0]->padded_mean(Eigen::Map<const Mean>(acc.data(), m_d), workers());
  }

  // --- state and stepping ---
  std::string do_name() const override {
    return std::string(sizeof(T) == 8 ? "cpu (float64)" : "cpu (float32)") + ", " +
           std::to_string(m_shards.size()) + " shards (" + m_transport->name() + " transport)";
  }
  void do_initialize_weights(const ModelConfig& init, uint64_t seed) override {
    each([&](Shard& sh, int) { sh.do_initialize_weights(init, seed); });
  }
  void do_set_weights(const std::vector<double>& w) override {
    each([&](Shard& sh, int s) { sh.do_set_weights(rows_of_shard(w, s)); });
  }
  std::vector<double> do_weights() const override {
    return joined([](const Shard& sh) { return sh.do_weights(); });
  }
  BackendState do_save_state() const override {
    BackendState st;
    st.weights = do_weights();
    if (has_momentum()) st.momentum = joined([](const Shard& sh) { return sh.unpadded(sh.m_momentum); });
    st.loss = do_loss_window();
    return st;
  }
  void do_load_state(const BackendState& st) override {
    each([&](Shard& sh, int s) {
      sh.set_padded(sh.m_w, rows_of_shard(st.weights, s));
      if (has_momentum()) sh.set_padded(sh.m_momentum, rows_of_shard(st.momentum, s));
    });
    do_set_loss_window(st.loss);
  }
  int do_scalar_bytes() const override { return int(sizeof(T)); }
  void do_write_rows(bool momentum,
                     const std::function<void(const char*, size_t)>& sink) const override {
    for (const auto& sh : m_shards) sh->do_write_rows(momentum, sink);
  }
  void do_read_rows(bool momentum, const std::function<void(char*, size_t)>& source) override {
    each([&](Shard& sh, int) { sh.do_read_rows(momentum, source); });
  }
  LossWindow do_loss_window() const override { return m_loss; }
  void do_set_loss_window(const LossWindow& w) override { m_loss = w; }
  void do_sample(int64_t step) override {
    m_step = step;
    each([&](Shard& sh, int) { sh.do_sample(step); });
  }
  std::vector<int64_t> do_minibatch_indices() const override {
    std::vector<int64_t> out;
    for (const auto& sh : m_shards) out.insert(out.end(), sh->m_indices.begin(), sh->m_indices.end());
    return out;
  }
  // The shards' gradients; the step's loss is their losses' serial sum in worker order.
  void do_local_gradient(bool record_loss) override {
    each([&](Shard& sh, int) { sh.do_local_gradient(false); });
    if (!record_loss) return;
    std::vector<double> sum(1, 0.0);
    m_transport->ordered_sum(sum, [&](int s, std::vector<double>& a) {
      a[0] = m_shards[size_t(s)]->add_losses(a[0]);
    });
    const double mean = sum[0] / workers();
    if (!std::isfinite(mean) && m_loss.first_nonfinite < 0) m_loss.first_nonfinite = m_step;
    m_loss.sum += mean;
    ++m_loss.steps;
  }
  std::vector<double> do_gradients() const override {
    return joined([](const Shard& sh) { return sh.do_gradients(); });
  }
  double do_mean_gradient_norm() override { return std::sqrt(ordered_mean(true).squaredNorm()); }
  void do_average_gradients() override {
    const Mean mean = ordered_mean(true);
    each([&](Shard& sh, int) { sh.m_grad.rowwise() = mean.template cast<T>(); });
  }
  // The update's local phase on every shard; then the halos (rows of W after that phase) copied
  // by the transport; then every shard's rows of P W.
  void do_mix_update(const Csr* mixing, double lr, MixForm form) override {
    each([&](Shard& sh, int) { sh.apply_update(lr, form, mixing != nullptr); });
    if (!mixing) return;
    const HaloPlan& plan = m_halo_plan.plan(*mixing);
    each([&](Shard& sh, int s) {
      RowMat<T>& halo = m_halo[size_t(s)];
      const int64_t rows = int64_t(plan.shards[size_t(s)].halo.size());
      // Zero padding: the transport copies d values a row, the gossip reads whole rows.
      if (halo.rows() < rows) halo = RowMat<T>::Zero(rows, sh.m_ld);
    });
    m_transport->exchange(plan.copies);
    each([&](Shard& sh, int s) { sh.mix_rows(plan.shards[size_t(s)].local, &m_halo[size_t(s)], lr, form); });
  }
  void do_average_weights() override {
    const Mean mean = ordered_mean(false);
    each([&](Shard& sh, int) { sh.m_w.rowwise() = mean.template cast<T>(); });
  }
  std::vector<double> do_mean_gradient() override {
    const Mean mean = ordered_mean(true);
    return std::vector<double>(mean.data(), mean.data() + m_d);
  }
  void do_perturb_weights(const std::vector<double>& eps, bool per_worker) override {
    each([&](Shard& sh, int s) { sh.do_perturb_weights(per_worker ? rows_of_shard(eps, s) : eps, per_worker); });
  }
  void do_restore_weights() override {
    each([&](Shard& sh, int) { sh.do_restore_weights(); });
  }
  TrainLoss do_take_train_loss() override {
    TrainLoss out;
    out.steps = m_loss.steps;
    out.mean = m_loss.steps ? m_loss.sum / double(m_loss.steps) : std::nan("");
    m_loss.sum = 0;
    m_loss.steps = 0;
    return out;
  }
  NonFiniteSteps do_first_nonfinite() const override {
    NonFiniteSteps out;
    out.loss = m_loss.first_nonfinite;
    const auto earliest = [](int64_t a, int64_t b) { return a < 0 ? b : b < 0 ? a : std::min(a, b); };
    for (const auto& sh : m_shards) {
      out.weights = earliest(out.weights, sh->m_nonfinite.weights);
      out.momentum = earliest(out.momentum, sh->m_nonfinite.momentum);
    }
    return out;
  }

  // --- evaluation ---
  bool do_weights_finite() override {
    bool ok = true;
    each([&](Shard& sh, int) { ok = ok && sh.do_weights_finite(); });
    return ok;
  }
  double do_consensus_distance() override {
    const Mean mean = ordered_mean(false);
    std::vector<double> sum(1, 0.0);
    m_transport->ordered_sum(sum, [&](int s, std::vector<double>& a) {
      a[0] = m_shards[size_t(s)]->add_squared_distances(mean, a[0]);
    });
    return sum[0] / workers();
  }
  EvalStats do_evaluate_mean(Split split) override {
    return m_shards[0]->evaluate_at(ordered_mean(false).template cast<T>(), split);
  }
  std::vector<EvalStats> do_evaluate_workers(Split split) override {
    std::vector<EvalStats> out;
    each([&](Shard& sh, int) {
      const auto part = sh.do_evaluate_workers(split);
      out.insert(out.end(), part.begin(), part.end());
    });
    return out;
  }
  EnsembleStats do_evaluate_ensemble(Split split) override {
    std::vector<Shard*> parts;
    for (auto& sh : m_shards) parts.push_back(sh.get());
    return m_shards[0]->ensemble_of(parts.data(), int(parts.size()), workers(),
                                    ordered_mean(false).template cast<T>(), split);
  }

  // --- curvature: shard 0 computes on blocks this backend owns (the same layout) ---
  void do_set_curvature_subset(const std::vector<int64_t>& indices) override {
    m_shards[0]->do_set_curvature_subset(indices);
  }
  std::unique_ptr<Vectors> do_vectors(int64_t rows) override {
    // Owned by this backend, in shard 0's layout, so shard 0's operations read them.
    return std::make_unique<typename Shard::Block>(static_cast<const BackendShape*>(this), rows, m_d);
  }
  void do_upload(Rows dst, const std::vector<double>& v) override { m_shards[0]->do_upload(dst, v); }
  std::vector<double> do_download(Rows src) override { return m_shards[0]->do_download(src); }
  void do_copy_weights(Rows dst) override {
    auto rows = Shard::rows(dst);
    each([&](Shard& sh, int s) {
      rows.middleRows(m_layout.first(s), m_layout.count(s)) = sh.m_w.leftCols(m_d);
    });
  }
  void do_mean_weights(Rows dst) override {
    Shard::rows(dst) = ordered_mean(false).head(m_d).template cast<T>();
  }
  void do_fill_probes(Rows dst, Probe kind, uint64_t seed, uint32_t stream, int64_t repeat) override {
    m_shards[0]->do_fill_probes(dst, kind, seed, stream, repeat);
  }
  void do_hvp(Rows points, Rows dirs, Rows out) override { m_shards[0]->do_hvp(points, dirs, out); }
  std::vector<double> do_dots(Rows a, Rows b) override { return m_shards[0]->do_dots(a, b); }
  void do_axpy(Rows y, const std::vector<double>& c, Rows x) override { m_shards[0]->do_axpy(y, c, x); }
  void do_scale(Rows x, const std::vector<double>& c) override { m_shards[0]->do_scale(x, c); }
  void do_copy(Rows dst, Rows src) override { m_shards[0]->do_copy(dst, src); }
  void do_project_out(Rows r, Rows basis) override { m_shards[0]->do_project_out(r, basis); }
  void do_combine(Rows basis, const std::vector<double>& c, Rows out) override {
    m_shards[0]->do_combine(basis, c, out);
  }
  std::vector<double> do_subset_loss(Rows points, Rows grads) override {
    return m_shards[0]->do_subset_loss(points, grads);
  }

  const ShardLayout m_layout;
  const int64_t m_d;
  std::vector<std::unique_ptr<Shard>> m_shards;
  std::vector<RowMat<T>> m_halo;  // each shard's copies of the foreign rows it reads
  HaloPlanner m_halo_plan;        // each step's halo, planned when the mixing matrix changes
  std::unique_ptr<InProcessTransport> m_transport;
  LossWindow m_loss;
  int64_t m_step = 0;
};

}  // namespace cpu
}  // namespace gossamer
