// The CUDA backend (docs/ARCHITECTURE.md, "The one idea"): W[m][d] and every per-worker buffer are one
// device allocation each, rows padded to 256 bytes; the data sets live on the device; a step
// is the sampler, one CUDA Graph (gather, the batched MLP's GEMMs and fused kernels, the loss
// window) and one fused gossip + update kernel, with no host synchronization inside it.
// Reductions are deterministic (fixed order, no atomics), so a resumed run repeats bit for bit
// on the same device. Only scalars come back to the host, except where the contract returns
// rows (weights, checkpoints, curvature results).
//
// The class is in a header so that the sharded backend (sharded_backend.cu) can drive several
// of them, one a shard: it reaches their arrays and parts of the step as a friend.
#pragma once
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "csr_cache.cuh"
#include "device_array.cuh"
#include "gemm.cuh"
#include "gossamer/cuda.hpp"
#include "gossamer/cuda_plan.hpp"
#include "gossamer/devices.hpp"
#include "kernels.cuh"
#include "batched_net.cuh"

namespace gossamer {

class Stream {
 public:
  Stream() { CUDA_CHECK(cudaStreamCreateWithFlags(&m_stream, cudaStreamNonBlocking)); }
  ~Stream() { cudaStreamDestroy(m_stream); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return m_stream; }
  void sync() const { CUDA_CHECK(cudaStreamSynchronize(m_stream)); }

 private:
  cudaStream_t m_stream = nullptr;
};

class CudaBackend final : public Backend {
  friend class ShardedCudaBackend;
  // The points of one subset_loss pass (a batched pass over the subset for each group).
  static constexpr int kSubsetLossGroup = 1024;

 public:
  CudaBackend(const BackendSetup& s, const CudaOptions& options)
      : BackendShape(backend_shape(s)),
        m_model(*s.model),
        m_m(s.workers),
        m_first(s.first_worker),
        m_batch(s.batch),
        m_seed(s.seed),
        m_opt(s.optimizer),
        m_augment(s.augment),
        m_options(options),
        m_plan(make_plan(s)),
        m_ld(m_plan.row_stride),
        m_gemm(m_stream.get(), s.tf32 ? MathMode::Tf32 : MathMode::Fp32),
        m_basis_gemm(m_stream.get(), MathMode::Fp32) {
    const size_t matrix = size_t(m_m) * m_ld;
    m_w = DeviceArray<float>(matrix);
    m_w_next = DeviceArray<float>(matrix);
    m_grad = DeviceArray<float>(matrix);
    for (auto* a : {&m_w, &m_w_next, &m_grad}) a->zero(m_stream.get());  // padding stays 0
    if (m_opt.momentum > 0) {
      m_momentum = DeviceArray<float>(matrix);
      m_momentum_next = DeviceArray<float>(matrix);
      m_momentum.zero(m_stream.get());
      m_momentum_next.zero(m_stream.get());
    }
    for (int split = 0; split < 2; ++split) {
      const Dataset& d = split == 0 ? s.data->train : s.data->test;
      m_x[split] = DeviceArray<float>(d.x);
      m_y[split] = DeviceArray<int32_t>(d.y);
      m_rows[split] = d.n;
    }
    m_offsets = DeviceArray<int64_t>(s.partition->offsets);
    m_shared = s.partition->shared;
    m_shard_indices = DeviceArray<int64_t>(s.partition->indices);
    const size_t batch_rows = size_t(m_m) * m_batch;
    m_indices = DeviceArray<int64_t>(batch_rows);
    m_batch_x = DeviceArray<float>(batch_rows * m_model.input);
    m_batch_y = DeviceArray<int32_t>(batch_rows);
    m_train = make_batched_net(m_model, int64_t(batch_rows), false, m_options.cnn_paths);
    m_eval = make_batched_net(m_model, m_plan.eval_capacity, true, m_options.cnn_paths);
    m_state = DeviceArray<DeviceLossState>(1);
    put_state(kFreshLossState);
    m_partials = DeviceArray<double>(kReduceBlocks);
    m_result = DeviceArray<double>(1);
    m_flag = DeviceArray<int>(1);
    m_mean64 = DeviceArray<double>(size_t(m_ld));
    m_mean32 = DeviceArray<float>(size_t(m_ld));
    // Per-model loss sums: every worker's (evaluate_workers) or a group of subset-loss points.
    m_model_loss = DeviceArray<double>(size_t(std::max(m_m, kSubsetLossGroup)));
    m_model_correct = DeviceArray<double>(m_model_loss.size());
    // The uploads above went through the legacy stream (cudaMemcpy), which our non-blocking
    // stream does not wait for: wait for everything once here.
    const DeviceCallLock lock;
    CUDA_CHECK(cudaDeviceSynchronize());
  }

  ~CudaBackend() override {
    for (auto& [key, exec] : m_graphs) cudaGraphExecDestroy(exec);
  }

 private:  // the contract's implementations: backend.hpp has checked every argument

  std::string do_name() const override {
    return "cuda (" + m_device + ", " +
           (m_gemm.mode() == MathMode::Tf32 ? "TF32 GEMMs" : "FP32 GEMMs") + ")";
  }

  void do_initialize_weights(const ModelConfig& init, uint64_t seed) override {
    if (init.init == "zeros") {
      m_w.zero(m_stream.get());
      return;
    }
    InitLayers layers{};
    if (m_model.layers.size() > size_t(kMaxInitLayers))
      throw config_error("model: the CUDA backend initializes at most " +
                         std::to_string(kMaxInitLayers) + " weight layers, found " +
                         std::to_string(m_model.layers.size()));
    layers.count = int(m_model.layers.size());
    for (int l = 0; l < layers.count; ++l) {
      const LayerSpec& spec = m_model.layers[size_t(l)];
      layers.in[l] = spec.in;
      layers.out[l] = spec.out;
      layers.w_offset[l] = spec.w_offset;
      layers.b_offset[l] = spec.b_offset;
    }
    launch_init_weights(m_w.get(), m_first, m_m, m_ld, layers, init.init == "kaiming", seed,
                        init.same_init, m_stream.get());
  }

  void do_set_weights(const std::vector<double>& w) override { upload_rows(m_w, w, m_m); }
  std::vector<double> do_weights() const override { return download_rows(m_w, m_m); }

  BackendState do_save_state() const override {
    BackendState s;
    s.weights = do_weights();
    if (m_opt.momentum > 0) s.momentum = download_rows(m_momentum, m_m);
    s.loss = do_loss_window();
    return s;
  }

  void do_load_state(const BackendState& s) override {
    upload_rows(m_w, s.weights, m_m);
    if (m_opt.momentum > 0) upload_rows(m_momentum, s.momentum, m_m);
    do_set_loss_window(s.loss);
  }

  int do_scalar_bytes() const override { return int(sizeof(float)); }

  // Chunks of whole rows through one pinned buffer (64 MiB, or one row if a row is larger):
  // a 2-D copy drops the row padding on the way, so the host never holds more than a chunk.
  void do_write_rows(bool momentum,
                  const std::function<void(const char*, size_t)>& sink) const override {
    const DeviceArray<float>& a = momentum ? m_momentum : m_w;
    const size_t row_bytes = size_t(m_model.dim) * sizeof(float);
    const int chunk = pinned_rows(row_bytes);
    for (int k0 = 0; k0 < m_m; k0 += chunk) {
      const int rows = std::min(chunk, m_m - k0);
      CUDA_CHECK(cudaMemcpy2DAsync(m_pinned->get(), row_bytes, a.get() + size_t(k0) * m_ld,
                                   size_t(m_ld) * sizeof(float), row_bytes, size_t(rows),
                                   cudaMemcpyDeviceToHost, m_stream.get()));
      m_stream.sync();
      sink(m_pinned->get(), row_bytes * size_t(rows));
    }
  }

  void do_read_rows(bool momentum, const std::function<void(char*, size_t)>& source) override {
    DeviceArray<float>& a = momentum ? m_momentum : m_w;
    const size_t row_bytes = size_t(m_model.dim) * sizeof(float);
    const int chunk = pinned_rows(row_bytes);
    for (int k0 = 0; k0 < m_m; k0 += chunk) {
      const int rows = std::min(chunk, m_m - k0);
      source(m_pinned->get(), row_bytes * size_t(rows));
      CUDA_CHECK(cudaMemcpy2DAsync(a.get() + size_t(k0) * m_ld, size_t(m_ld) * sizeof(float),
                                   m_pinned->get(), row_bytes, row_bytes, size_t(rows),
                                   cudaMemcpyHostToDevice, m_stream.get()));
      m_stream.sync();  // the buffer is refilled next
    }
  }

  LossWindow do_loss_window() const override {
    const DeviceLossState st = get_state();
    return {st.sum, st.steps, st.first_nonfinite};
  }

  void do_set_loss_window(const LossWindow& w) override {
    DeviceLossState st = get_state();
    st.sum = w.sum;
    st.steps = w.steps;
    st.first_nonfinite = w.first_nonfinite;
    put_state(st);
  }

  void do_sample(int64_t step) override {
    launch_sample(m_offsets.get(), m_shard_indices.get(), m_shared, m_seed, step, m_first, m_m,
                  m_batch, m_indices.get(), m_state.get(), m_stream.get());
  }

  std::vector<int64_t> do_minibatch_indices() const override {
    m_stream.sync();
    return m_indices.fetch();
  }

  // Gather, forward, loss, backward (and the loss window) as one graph per (record_loss, W
  // buffer): W ping-pongs between two buffers, so two captures cover every step.
  void do_local_gradient(bool record_loss) override {
    if (m_options.poison) poison_rows(m_grad);
    if (!m_options.graphs) return gradient_pass(record_loss);
    const auto key = std::make_pair(record_loss, m_w.get());
    auto it = m_graphs.find(key);
    if (it == m_graphs.end()) {
      // The first pass of each kind runs eagerly: cuBLAS picks its kernels and the CUDA
      // runtime loads modules lazily on first use, neither of which may happen inside a capture.
      if (m_eager_done.insert(key).second) return gradient_pass(record_loss);
      it = m_graphs.emplace(key, capture_gradient(record_loss)).first;
    }
    CUDA_CHECK(cudaGraphLaunch(it->second, m_stream.get()));
  }

  std::vector<double> do_gradients() const override { return download_rows(m_grad, m_m); }

  double do_mean_gradient_norm() override {
    launch_row_mean(m_grad.get(), m_m, m_ld, m_model.dim, nullptr, m_mean32.get(), m_stream.get());
    return std::sqrt(sum_squares(m_mean32.get(), nullptr, 1));
  }

  void do_average_gradients() override {
    launch_average_rows(m_grad.get(), m_m, m_ld, m_model.dim, m_stream.get());
  }

  void do_mix_update(const Csr* mixing, double lr, MixForm form) override {
    gossip(mixing ? &m_csr.get(*mixing, m_stream.get()) : nullptr, lr, form, HaloRows{});
  }

  // The fused gossip + update over this backend's rows; a shard's CSR reads halo rows too.
  void gossip(const DeviceCsr* p, double lr, MixForm form, const HaloRows& halo) {
    const bool momentum = m_opt.momentum > 0;
    if (m_options.poison) {
      poison_rows(m_w_next);
      if (momentum) poison_rows(m_momentum_next);
    }
    const GossipParams params{float(lr), float(m_opt.momentum), float(m_opt.weight_decay),
                              m_opt.nesterov, p && form == MixForm::Atc};
    launch_gossip_update(
        p ? p->row_ptr.get() : nullptr, p ? p->col.get() : nullptr, p ? p->val.get() : nullptr, m_m,
        m_ld, m_w.get(), m_grad.get(), momentum ? m_momentum.get() : nullptr,
        momentum ? m_momentum_next.get() : nullptr, m_w_next.get(), halo, params, m_state.get(),
        m_stream.get());
    m_w.swap(m_w_next);  // ping-pong: the kernel never writes what it reads
    if (momentum) m_momentum.swap(m_momentum_next);
  }

  void do_average_weights() override {
    launch_average_rows(m_w.get(), m_m, m_ld, m_model.dim, m_stream.get());
  }

  std::vector<double> do_mean_gradient() override {
    launch_row_mean(m_grad.get(), m_m, m_ld, m_model.dim, m_mean64.get(), nullptr, m_stream.get());
    std::vector<double> out(size_t(m_model.dim));
    copy_to_host(out.data(), m_mean64.get(), out.size());
    return out;
  }

  // W is saved by a copy (not a swap, as on the CPU) so that its address, which the
  // captured graphs hold, does not change.
  void do_perturb_weights(const std::vector<double>& eps, bool per_worker) override {
    const int rows = per_worker ? m_m : 1;
    if (m_eps.size() < size_t(rows) * m_ld) m_eps = DeviceArray<float>(size_t(rows) * m_ld);
    save_weights();
    upload_rows(m_eps, eps, rows);
    launch_add_rows(m_w.get(), m_eps.get(), per_worker, m_m, m_ld, m_stream.get());
  }

  void do_perturb_gaussian(double sigma, uint64_t seed, uint32_t stream) override {
    save_weights();
    launch_add_gaussian(m_w.get(), m_m, m_ld, m_model.dim, sigma, seed, stream, m_stream.get());
  }

  // g in double (the direction) and in float (its norm, as mean_gradient_norm), all on the
  // device: no host round trip in a SAM step.
  void do_perturb_along_mean_gradient(double rho) override {
    launch_row_mean(m_grad.get(), m_m, m_ld, m_model.dim, m_mean64.get(), m_mean32.get(),
                    m_stream.get());
    perturb_along_mean(rho);
  }

  // SAM's step along the mean gradient already in m_mean64 / m_mean32 (a sharded run's mean).
  void perturb_along_mean(double rho) {
    cudaStream_t s = m_stream.get();
    launch_sum_squares(m_mean32.get(), nullptr, 1, m_ld, m_model.dim, m_partials.get(),
                       m_result.get(), s);
    save_weights();
    launch_add_scaled_row(m_w.get(), m_m, m_ld, m_model.dim, m_mean64.get(), m_result.get(), rho,
                          s);
  }

  void do_restore_weights() override {
    CUDA_CHECK(cudaMemcpyAsync(m_w.get(), m_saved.get(), size_t(m_m) * m_ld * sizeof(float),
                               cudaMemcpyDeviceToDevice, m_stream.get()));
  }

  TrainLoss do_take_train_loss() override {
    DeviceLossState st = get_state();
    TrainLoss out;
    out.steps = st.steps;
    out.mean = st.steps ? st.sum / double(st.steps) : std::nan("");
    st.sum = 0;
    st.steps = 0;
    put_state(st);
    return out;
  }

  NonFiniteSteps do_first_nonfinite() const override {
    const DeviceLossState st = get_state();
    return {st.first_nonfinite, st.first_nonfinite_weights, st.first_nonfinite_momentum};
  }

  bool do_weights_finite() override {
    launch_any_nonfinite(m_w.get(), int64_t(m_m) * m_ld, m_flag.get(), m_stream.get());
    int flag = 0;
    copy_to_host(&flag, m_flag.get(), 1);
    return flag == 0;
  }

  double do_consensus_distance() override {
    launch_row_mean(m_w.get(), m_m, m_ld, m_model.dim, m_mean64.get(), nullptr, m_stream.get());
    return sum_squares(m_w.get(), m_mean64.get(), m_m) / m_m;
  }

  EvalStats do_evaluate_mean(Split split) override {
    mean_row();
    return evaluate_mean_row(split);
  }

  // The model whose weights are m_mean32 (w-bar, however it was computed) on a split.
  EvalStats evaluate_mean_row(Split split) {
    const int64_t n = m_rows[int(split)];
    const ModelBatch mean{m_mean32.get(), 0, nullptr, 0, 1};
    zero_model_sums(1);
    for_each_pass(1, n, [&](int, int models, int64_t r0, int rows) {
      eval_pass(mean, models, split, r0, rows);
      launch_model_sums(m_eval->row_loss(), m_eval->row_correct(), rows, models, m_model_loss.get(),
                        m_model_correct.get(), m_stream.get());
    });
    double loss = 0, correct = 0;
    copy_to_host(&loss, m_model_loss.get(), 1);
    copy_to_host(&correct, m_model_correct.get(), 1);
    return {loss / double(n), correct / double(n)};
  }

  std::vector<EvalStats> do_evaluate_workers(Split split) override {
    const int64_t n = m_rows[int(split)];
    zero_model_sums(m_m);
    for_each_pass(m_m, n, [&](int k0, int models, int64_t r0, int rows) {
      eval_pass(workers_from(k0, models), models, split, r0, rows);
      launch_model_sums(m_eval->row_loss(), m_eval->row_correct(), rows, models,
                        m_model_loss.get() + k0, m_model_correct.get() + k0, m_stream.get());
    });
    std::vector<double> loss(m_m), correct(m_m);
    copy_to_host(loss.data(), m_model_loss.get(), size_t(m_m));
    copy_to_host(correct.data(), m_model_correct.get(), size_t(m_m));
    std::vector<EvalStats> out(m_m);
    for (int k = 0; k < m_m; ++k) out[k] = {loss[k] / double(n), correct[k] / double(n)};
    return out;
  }

  EnsembleStats do_evaluate_ensemble(Split split) override {
    mean_row();
    return ensemble_over(split, m_m, ensemble_chunk_rows(split),
                         [&](int64_t r0, int rows) { add_ensemble_probs(split, r0, rows); });
  }

  // Rows in chunks; per chunk, sum_probs(r0, rows) leaves the sum of the workers' softmax in
  // m_probs (here: this backend's workers; a sharded run: every shard's, summed), then the
  // (confidence, correct, p_true) triples of their mean over total_models, and of w-bar's
  // (m_mean32) alone, are binned on the host.
  template <class F>
  EnsembleStats ensemble_over(Split split, int total_models, int rows_per_chunk, F&& sum_probs) {
    const int64_t n = m_rows[int(split)];
    ensure(m_triples, size_t(rows_per_chunk) * 3);
    CalibrationBins ens, single;
    std::vector<double> triples;
    const auto bin = [&](CalibrationBins& bins, int rows) {
      triples.resize(size_t(rows) * 3);
      copy_to_host(triples.data(), m_triples.get(), triples.size());
      for (int r = 0; r < rows; ++r)
        bins.add(triples[3 * r], triples[3 * r + 1] > 0.5, triples[3 * r + 2]);
    };
    const int32_t* y = m_y[int(split)].get();
    const int classes = m_model.classes;
    for (int64_t r0 = 0; r0 < n; r0 += rows_per_chunk) {
      const int rows = int(std::min<int64_t>(rows_per_chunk, n - r0));
      sum_probs(r0, rows);
      launch_ensemble_rows(nullptr, y + r0, rows, 0, classes, total_models, false, true,
                           m_probs.get(), m_triples.get(), m_stream.get());
      bin(ens, rows);
      eval_pass(ModelBatch{m_mean32.get(), 0, nullptr, 0, 1}, 1, split, r0, rows, false);
      launch_ensemble_rows(m_eval->logits(), y + r0, rows, 1, classes, 1, true, true, m_probs.get(),
                           m_triples.get(), m_stream.get());
      bin(single, rows);
    }
    return {ens.stats(), single.stats()};
  }

  // The rows of an ensemble chunk that this backend's evaluation passes hold.
  int ensemble_chunk_rows(Split split) const {
    return int(pass_shape(m_m, m_rows[int(split)], m_plan.eval_capacity).rows);
  }

  // m_probs (rows x classes doubles) = the sum of this backend's workers' softmax on rows
  // [r0, r0 + rows) of a split.
  void add_ensemble_probs(Split split, int64_t r0, int rows) {
    const int classes = m_model.classes;
    ensure(m_probs, size_t(rows) * classes);
    const int models_per_pass =
        int(std::max<int64_t>(1, pass_shape(m_m, rows, m_plan.eval_capacity).models));
    for (int k0 = 0; k0 < m_m; k0 += models_per_pass) {
      const int models = std::min(models_per_pass, m_m - k0);
      eval_pass(workers_from(k0, models), models, split, r0, rows, /*loss=*/false);
      launch_ensemble_rows(m_eval->logits(), m_y[int(split)].get() + r0, rows, models, classes,
                           m_m, k0 == 0, false, m_probs.get(), m_triples.get(), m_stream.get());
    }
  }

  void do_set_curvature_subset(const std::vector<int64_t>& indices) override {
    m_curv_rows = int64_t(indices.size());
    if (indices.empty()) return;
    DeviceArray<int64_t> idx(indices.size());
    CUDA_CHECK(cudaMemcpyAsync(idx.get(), indices.data(), indices.size() * sizeof(int64_t),
                               cudaMemcpyHostToDevice, m_stream.get()));
    m_curv_x = DeviceArray<float>(indices.size() * m_model.input);
    m_curv_y = DeviceArray<int32_t>(indices.size());
    launch_gather_rows(m_x[0].get(), m_y[0].get(), m_model.input, idx.get(), m_curv_rows,
                       m_curv_x.get(), m_curv_y.get(), m_stream.get());
    m_stream.sync();  // idx and the host indices must outlive the copy and the gather
  }

  // --- curvature on vectors the backend owns: rows x ld floats on the device, padding zero ---
  struct Block final : Vectors {
    Block(const void* owner, int64_t rows, int64_t ld, cudaStream_t s)
        : Vectors(owner, rows), a(size_t(rows) * size_t(ld)) {
      a.zero(s);
    }
    DeviceArray<float> a;
  };
  float* ptr(Rows r) const { return static_cast<Block&>(*r.block).a.get() + r.first * m_ld; }

  std::unique_ptr<Vectors> do_vectors(int64_t rows) override {
    return make_block(static_cast<const BackendShape*>(this), rows);
  }

  // A block on this backend's device, owned by `owner` (this, or the sharded backend whose
  // curvature this shard computes).
  std::unique_ptr<Vectors> make_block(const void* owner, int64_t rows) {
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    const double need = double(rows) * double(m_ld) * sizeof(float);
    if (need > double(free_b))
      throw runtime_error("curvature vectors: " + std::to_string(rows) + " x " +
                          std::to_string(m_model.dim) + " floats (" + std::to_string(need / 1e9) +
                          " GB) do not fit in the " + std::to_string(double(free_b) / 1e9) +
                          " GB free on " + m_device +
                          "; lower curvature.probes, the Lanczos steps or the workers");
    return std::make_unique<Block>(owner, rows, m_ld, m_stream.get());
  }

  void do_upload(Rows dst, const std::vector<double>& values) override {
    upload_rows_to(ptr(dst), values, int(dst.count));
  }

  std::vector<double> do_download(Rows src) override {
    std::vector<double> out(size_t(src.count) * m_model.dim);
    download_rows_from(ptr(src), int(src.count), out.data());
    return out;
  }

  void do_copy_weights(Rows dst) override {
    CUDA_CHECK(cudaMemcpyAsync(ptr(dst), m_w.get(), size_t(m_m) * m_ld * sizeof(float),
                               cudaMemcpyDeviceToDevice, m_stream.get()));
  }

  void do_mean_weights(Rows dst) override {
    launch_row_mean(m_w.get(), m_m, m_ld, m_model.dim, nullptr, ptr(dst), m_stream.get());
  }

  void do_fill_probes(Rows dst, Probe kind, uint64_t seed, uint32_t stream,
                      int64_t repeat) override {
    launch_fill_probes(ptr(dst), dst.count, m_ld, m_model.dim, kind, seed, stream, repeat,
                       m_stream.get());
  }

  // Pair i's point is row i mod P: one pass with a shared point (P = 1), else one pass per
  // group of P pairs with a point per model. Each pass batches as many pairs as the
  // evaluation workspace holds.
  void do_hvp(Rows points, Rows dirs, Rows out) override {
    const int64_t np = points.count;
    if (m_options.poison)
      CUDA_CHECK(cudaMemset2DAsync(ptr(out), size_t(m_ld) * sizeof(float), 0xFF,
                                   size_t(m_model.dim) * sizeof(float), size_t(out.count),
                                   m_stream.get()));
    for (int64_t g = 0; g < dirs.count; g += np) {
      const int64_t count = np == 1 ? dirs.count : np;
      over_subset(ptr(points), np == 1 ? 0 : m_ld, ptr(dirs) + g * m_ld, ptr(out) + g * m_ld,
                  count);
      if (np == 1) break;
    }
  }

  std::vector<double> do_dots(Rows a, Rows b) override {
    ensure(m_row_scalars, size_t(a.count));
    launch_row_dots(ptr(a), ptr(b), a.count, m_ld, m_model.dim, m_row_scalars.get(),
                    m_stream.get());
    std::vector<double> out(size_t(a.count));
    copy_to_host(out.data(), m_row_scalars.get(), out.size());
    return out;
  }

  void do_axpy(Rows y, const std::vector<double>& c, Rows x) override {
    put_coefficients(c);
    launch_axpy_rows(ptr(y), ptr(x), x.count == 1 && y.count != 1, m_row_scalars.get(), y.count,
                     m_ld, m_model.dim, m_stream.get());
  }

  void do_scale(Rows x, const std::vector<double>& c) override {
    put_coefficients(c);
    launch_scale_rows(ptr(x), m_row_scalars.get(), x.count, m_ld, m_model.dim, m_stream.get());
  }

  void do_copy(Rows dst, Rows src) override {
    CUDA_CHECK(cudaMemcpyAsync(ptr(dst), ptr(src), size_t(src.count) * m_ld * sizeof(float),
                               cudaMemcpyDeviceToDevice, m_stream.get()));
  }

  // cuBLAS on the basis, in exact FP32 whatever the training math: C = B R^T (nb x nr), then
  // R -= C^T B.
  void do_project_out(Rows r, Rows basis) override {
    const int nb = int(basis.count), nr = int(r.count), d = int(m_model.dim), ld = int(m_ld);
    ensure(m_small, size_t(nb) * nr);
    m_basis_gemm.run(nb, nr, d, MatrixArg{ptr(basis), ld, 0, false}, MatrixArg{ptr(r), ld, 0, true},
                     0.f, m_small.get(), nr, 0, 1);
    m_basis_gemm.run(nr, d, nb, MatrixArg{m_small.get(), nr, 0, true},
                     MatrixArg{ptr(basis), ld, 0, false}, 1.f, ptr(r), ld, 0, 1, -1.f);
  }

  // out (k x d) = C (k x nb) B, C uploaded as floats.
  void do_combine(Rows basis, const std::vector<double>& c, Rows out) override {
    const int nb = int(basis.count), k = int(out.count), d = int(m_model.dim), ld = int(m_ld);
    const std::vector<float> cf(c.begin(), c.end());
    ensure(m_small, cf.size());
    CUDA_CHECK(cudaMemcpyAsync(m_small.get(), cf.data(), cf.size() * sizeof(float),
                               cudaMemcpyHostToDevice, m_stream.get()));
    m_basis_gemm.run(k, d, nb, MatrixArg{m_small.get(), nb, 0, false},
                     MatrixArg{ptr(basis), ld, 0, false}, 0.f, ptr(out), ld, 0, 1);
    m_stream.sync();  // cf must outlive the copy
  }

  // The points in groups of as many models as the loss sums hold, each group one batched pass
  // over the subset writing its gradients straight into grads' rows.
  std::vector<double> do_subset_loss(Rows points, Rows grads) override {
    const int64_t group = int64_t(m_model_loss.size());
    std::vector<double> losses(size_t(points.count));
    std::vector<double> sums;
    for (int64_t i0 = 0; i0 < points.count; i0 += group) {
      const int count = int(std::min(group, points.count - i0));
      zero_model_sums(count);
      over_subset(ptr(points) + i0 * m_ld, m_ld, nullptr,
                  grads.block ? ptr(grads) + i0 * m_ld : nullptr, count);
      sums.resize(size_t(count));
      copy_to_host(sums.data(), m_model_loss.get(), size_t(count));
      for (int i = 0; i < count; ++i)
        losses[size_t(i0 + i)] = sums[size_t(i)] / double(m_curv_rows);
    }
    return losses;
  }

  double do_seconds_per_call(const std::function<void()>& body, int calls) override {
    cudaEvent_t start = nullptr, stop = nullptr;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    float ms = 0;
    try {
      m_stream.sync();
      CUDA_CHECK(cudaEventRecord(start, m_stream.get()));
      for (int i = 0; i < calls; ++i) body();
      CUDA_CHECK(cudaEventRecord(stop, m_stream.get()));
      CUDA_CHECK(cudaEventSynchronize(stop));
      CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    } catch (...) {
      cudaEventDestroy(start);
      cudaEventDestroy(stop);
      throw;
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    return double(ms) / 1e3 / calls;
  }

 private:
  CudaPlan make_plan(const BackendSetup& s) {
    const DeviceList gpus = list_devices();
    if (gpus.devices.empty()) throw runtime_error("--backend cuda: " + gpus.why_none);
    if (m_options.device < 0 || size_t(m_options.device) >= gpus.devices.size())
      throw config_error("devices: GPU " + std::to_string(m_options.device) +
                         " does not exist; the CUDA runtime sees " +
                         std::to_string(gpus.devices.size()) + " (0 to " +
                         std::to_string(gpus.devices.size() - 1) + ")");
    const DeviceInfo& dev = gpus.devices[size_t(m_options.device)];
    CUDA_CHECK(cudaSetDevice(dev.index));
    m_device = dev.name;
    CudaPlanInput in = cuda_plan_input(s);
    in.cnn_paths = m_options.cnn_paths;
    CudaPlan plan = plan_cuda_memory(in);
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    check_plan_fits(plan, int64_t(free_b), dev.name);
    return plan;
  }

  // --- the training step's gradient part ---
  void gradient_pass(bool record_loss) {
    cudaStream_t s = m_stream.get();
    const int64_t rows = int64_t(m_m) * m_batch;
    if (m_augment.on())
      launch_gather_augmented(m_x[0].get(), m_y[0].get(), m_model.input, m_indices.get(), rows,
                              m_batch, m_first, m_augment, m_seed, m_state.get(), m_batch_x.get(),
                              m_batch_y.get(), s);
    else
      launch_gather_rows(m_x[0].get(), m_y[0].get(), m_model.input, m_indices.get(), rows,
                         m_batch_x.get(), m_batch_y.get(), s);
    if (m_options.poison) m_train->poison(s);
    const ModelBatch workers{m_w.get(), m_ld, nullptr, 0, m_m};
    const RowBatch batch{m_batch_x.get(), int64_t(m_batch) * m_model.input, m_batch_y.get(),
                         m_batch, m_batch};
    m_train->forward(workers, batch, m_gemm, s);
    m_train->loss(workers, batch, 1.f / float(m_batch), s);
    m_train->backward(workers, batch, m_grad.get(), m_ld, 0.f, m_gemm, s);
    if (record_loss) launch_record_loss(m_train->row_loss(), rows, m_state.get(), s);
  }

  cudaGraphExec_t capture_gradient(bool record_loss) {
    cudaStream_t s = m_stream.get();
    const CaptureLock alone;  // no other thread's synchronizing call meanwhile (capture_lock.cuh)
    CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    cudaGraph_t graph = nullptr;
    try {
      gradient_pass(record_loss);
    } catch (...) {
      cudaStreamEndCapture(s, &graph);  // leave the stream usable
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    CUDA_CHECK(cudaStreamEndCapture(s, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t rc = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    CUDA_CHECK(rc);
    return exec;
  }

  // --- evaluation and curvature passes on the R-capable workspace ---
  ModelBatch workers_from(int k0, int count) const {
    return ModelBatch{m_w.get() + int64_t(k0) * m_ld, m_ld, nullptr, 0, count};
  }

  // Forward (and loss, scale 1) of `models` on rows [r0, r0 + rows) of a split.
  void eval_pass(const ModelBatch& models, int count, Split split, int64_t r0, int rows,
                 bool with_loss = true) {
    const int features = m_model.input;
    ModelBatch mb = models;
    mb.count = count;
    const RowBatch rb{m_x[int(split)].get() + r0 * features, 0, m_y[int(split)].get() + r0, 0,
                      rows};
    if (m_options.poison) m_eval->poison(m_stream.get());
    m_eval->forward(mb, rb, m_gemm, m_stream.get());
    if (with_loss) m_eval->loss(mb, rb, 1.f, m_stream.get());
  }

  // f(k0, models, r0, rows) over the passes that cover models x rows.
  template <class F>
  void for_each_pass(int models, int64_t rows, F&& f) {
    const PassShape shape = pass_shape(models, rows, m_plan.eval_capacity);
    for (int k0 = 0; k0 < models; k0 += shape.models)
      for (int64_t r0 = 0; r0 < rows; r0 += shape.rows)
        f(k0, std::min(shape.models, models - k0), r0,
          int(std::min<int64_t>(shape.rows, rows - r0)));
  }

  // Over the curvature subset for `count` models at w (row stride w_stride; 0: one shared
  // point): with v (directions, row stride ld) H v summed into out; without, the subset-mean
  // gradient into out (out may be null for the loss alone) and the row losses summed into
  // m_model_loss.
  void over_subset(const float* w, int64_t w_stride, const float* v, float* out, int64_t count) {
    cudaStream_t s = m_stream.get();
    const bool r_pass = v != nullptr;
    const float scale = 1.f / float(m_curv_rows);
    for_each_pass(int(count), m_curv_rows, [&](int k0, int models, int64_t r0, int rows) {
      const ModelBatch mb{w + int64_t(k0) * w_stride, w_stride,
                          r_pass ? v + int64_t(k0) * m_ld : nullptr, m_ld, models};
      const RowBatch rb{m_curv_x.get() + r0 * m_model.input, 0, m_curv_y.get() + r0, 0, rows};
      if (m_options.poison) m_eval->poison(s);
      m_eval->forward(mb, rb, m_gemm, s);
      m_eval->loss(mb, rb, scale, s);
      if (!r_pass)
        launch_model_sums(m_eval->row_loss(), m_eval->row_correct(), rows, models,
                          m_model_loss.get() + k0, m_model_correct.get() + k0, s);
      if (out)
        m_eval->backward(mb, rb, out + int64_t(k0) * m_ld, m_ld, r0 == 0 ? 0.f : 1.f, m_gemm, s);
    });
  }

  // The coefficients of a row operation, on the device.
  void put_coefficients(const std::vector<double>& c) {
    ensure(m_row_scalars, c.size());
    CUDA_CHECK(cudaMemcpyAsync(m_row_scalars.get(), c.data(), c.size() * sizeof(double),
                               cudaMemcpyHostToDevice, m_stream.get()));
    m_stream.sync();  // c must outlive the copy
  }

  // --- small helpers ---
  void save_weights() {
    if (m_saved.empty()) m_saved = DeviceArray<float>(size_t(m_m) * m_ld);
    CUDA_CHECK(cudaMemcpyAsync(m_saved.get(), m_w.get(), size_t(m_m) * m_ld * sizeof(float),
                               cudaMemcpyDeviceToDevice, m_stream.get()));
  }

  void mean_row() {
    launch_row_mean(m_w.get(), m_m, m_ld, m_model.dim, nullptr, m_mean32.get(), m_stream.get());
  }

  double sum_squares(const float* a, const double* mean, int rows) {
    launch_sum_squares(a, mean, rows, m_ld, m_model.dim, m_partials.get(), m_result.get(),
                       m_stream.get());
    double out = 0;
    copy_to_host(&out, m_result.get(), 1);
    return out;
  }

  void zero_model_sums(int count) {
    CUDA_CHECK(
        cudaMemsetAsync(m_model_loss.get(), 0, size_t(count) * sizeof(double), m_stream.get()));
    CUDA_CHECK(
        cudaMemsetAsync(m_model_correct.get(), 0, size_t(count) * sizeof(double), m_stream.get()));
  }

  // NaN over the d data columns of every row (the padding stays zero: gossip reads it).
  void poison_rows(DeviceArray<float>& a) {
    const size_t rows = a.size() / size_t(m_ld);
    CUDA_CHECK(cudaMemset2DAsync(a.get(), size_t(m_ld) * sizeof(float), 0xFF,
                                 size_t(m_model.dim) * sizeof(float), rows, m_stream.get()));
  }

  template <class T>
  void ensure(DeviceArray<T>& a, size_t n) {
    if (a.size() < n) {
      m_stream.sync();  // the old buffer may still be in use by queued work
      a = DeviceArray<T>(n);
    }
  }

  template <class T>
  void copy_to_host(T* dst, const T* src, size_t n) const {
    if (n == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToHost, m_stream.get()));
    m_stream.sync();
  }

  // rows x d doubles (no padding) <-> rows x ld floats on the device (padding zero).
  void upload_rows(DeviceArray<float>& dst, const std::vector<double>& src, int rows) {
    upload_rows_to(dst.get(), src, rows);
  }
  void upload_rows_to(float* dst, const std::vector<double>& src, int rows) {
    const int64_t d = m_model.dim;
    m_staging.assign(size_t(rows) * m_ld, 0.f);
    for (int k = 0; k < rows; ++k)
      for (int64_t i = 0; i < d; ++i)
        m_staging[size_t(k) * m_ld + i] = float(src[size_t(k) * d + i]);
    CUDA_CHECK(cudaMemcpyAsync(dst, m_staging.data(), m_staging.size() * sizeof(float),
                               cudaMemcpyHostToDevice, m_stream.get()));
    m_stream.sync();  // m_staging is reused by the next upload
  }

  void download_rows_into(const DeviceArray<float>& src, int rows, double* out) const {
    download_rows_from(src.get(), rows, out);
  }
  void download_rows_from(const float* src, int rows, double* out) const {
    std::vector<float> host(size_t(rows) * m_ld);
    copy_to_host(host.data(), src, host.size());
    const int64_t d = m_model.dim;
    for (int k = 0; k < rows; ++k)
      for (int64_t i = 0; i < d; ++i) out[size_t(k) * d + i] = double(host[size_t(k) * m_ld + i]);
  }

  // Rows a pinned chunk holds; the buffer is allocated on first use (checkpoints only).
  int pinned_rows(size_t row_bytes) const {
    constexpr size_t kPinned = size_t(64) << 20;
    const size_t rows = std::min<size_t>(
        size_t(m_m), std::max<size_t>(1, kPinned / std::max<size_t>(row_bytes, 1)));
    if (!m_pinned) m_pinned = std::make_unique<PinnedBuffer>(rows * row_bytes);
    return int(rows);
  }

  std::vector<double> download_rows(const DeviceArray<float>& src, int rows) const {
    std::vector<double> out(size_t(rows) * m_model.dim);
    download_rows_into(src, rows, out.data());
    return out;
  }

  DeviceLossState get_state() const {
    DeviceLossState st{};
    copy_to_host(&st, m_state.get(), 1);
    return st;
  }
  void put_state(const DeviceLossState& st) {
    CUDA_CHECK(
        cudaMemcpyAsync(m_state.get(), &st, sizeof st, cudaMemcpyHostToDevice, m_stream.get()));
    m_stream.sync();  // st must outlive the copy
  }

  const ModelSpec m_model;
  const int m_m, m_first, m_batch;  // m_first: the global id of row 0 (a shard's first worker)
  const uint64_t m_seed;
  const OptimizerParams m_opt;
  const AugmentShape m_augment;
  const CudaOptions m_options;
  std::string m_device;
  const CudaPlan m_plan;
  const int64_t m_ld;
  Stream m_stream;
  Gemm m_gemm;        // after the stream: destroyed before it
  Gemm m_basis_gemm;  // exact FP32 for the curvature bases, whatever the training math

  DeviceArray<float> m_w, m_w_next, m_grad, m_momentum, m_momentum_next, m_saved, m_eps;
  DeviceArray<float> m_x[2];
  DeviceArray<int32_t> m_y[2];
  int64_t m_rows[2] = {0, 0};
  DeviceArray<int64_t> m_offsets, m_shard_indices, m_indices;
  bool m_shared = false;  // every worker samples the one shard (partition.kind "shared")
  DeviceArray<float> m_batch_x;
  DeviceArray<int32_t> m_batch_y;
  std::unique_ptr<BatchedNet> m_train, m_eval;
  DeviceArray<DeviceLossState> m_state;
  DeviceArray<double> m_partials, m_result, m_mean64, m_model_loss, m_model_correct;
  DeviceArray<int> m_flag;
  DeviceArray<float> m_mean32;
  DeviceArray<double> m_probs, m_triples;
  DeviceArray<float> m_curv_x;
  DeviceArray<int32_t> m_curv_y;
  int64_t m_curv_rows = 0;
  DeviceArray<double> m_row_scalars;         // per-row dots and coefficients
  DeviceArray<float> m_small;                // project_out's and combine's small matrices
  std::vector<float> m_staging;
  mutable std::unique_ptr<PinnedBuffer> m_pinned;  // the checkpoint stream's chunk
  DeviceCsrCache m_csr;
  std::map<std::pair<bool, const float*>, cudaGraphExec_t> m_graphs;
  std::set<std::pair<bool, const float*>> m_eager_done;
};

// Several shards (setup.devices with more than one entry, several processes, or transport
// "nccl"): sharded_backend.cu.
std::unique_ptr<Backend> make_sharded_cuda_backend(const BackendSetup& setup,
                                                   const CudaOptions& options);

}  // namespace gossamer
