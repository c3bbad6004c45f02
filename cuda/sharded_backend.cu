// The CUDA backend sharded (docs/ARCHITECTURE.md, "Shards"): W's rows split into contiguous
// blocks, one CudaBackend a block on its GPU (several may share one GPU), the foreign rows each
// shard's rows of P read copied into its halo every step by a ShardTransport (device copies, or
// NCCL between GPUs and processes), and every reduction over workers summed across the shards.
//
// The gossip is bit-identical to one GPU (each row's entries in the same order, the same fused
// kernel); the reductions (means, the consensus distance, the loss) sum per-shard partial sums,
// so they agree with one GPU to rounding. Curvature runs on the first shard of this process,
// on blocks holding all m rows there.
//
// Several processes (Processes::world > 1): each holds the shards of its devices; whatever the
// contract returns for all workers (weights, gradients, per-worker evaluations, checkpoint rows)
// is gathered to every process through the transport's host all-reduce, so every process runs
// the same trainer and only rank 0 writes.
#include <algorithm>
#include <chrono>
#include <set>

#include "cuda_backend.cuh"
#include "shard_transport.cuh"

namespace gossamer {

class ShardedCudaBackend final : public Backend {
 public:
  ShardedCudaBackend(const BackendSetup& s, const CudaOptions& options)
      : BackendShape(backend_shape(s)),
        m_devices(s.devices.empty() ? std::vector<int>{0} : s.devices),
        m_processes(s.processes),
        m_layout(check_layout(s, int(m_devices.size()))),
        m_d(s.model->dim),
        m_halo(m_layout) {
    const std::string transport = choose_transport(s);  // refuse a bad layout before allocating
    const int per_process = int(m_devices.size());
    for (int i = 0; i < per_process; ++i) {
      const int g = m_processes.rank * per_process + i;  // the global shard id
      BackendSetup sub = s;
      sub.workers = m_layout.count(g);
      sub.first_worker = s.first_worker + m_layout.first(g);
      sub.devices.clear();
      CudaOptions o = options;
      o.device = m_devices[size_t(i)];
      Part p;
      p.b = std::make_unique<CudaBackend>(sub, o);  // checks the ordinal and the memory plan
      p.device = o.device;
      p.shard = g;
      p.first = m_layout.first(g);
      p.count = m_layout.count(g);
      p.sum = DeviceArray<double>(size_t(p.b->m_ld));
      p.sum.zero(p.b->m_stream.get());  // the padding is all-reduced too
      m_parts.push_back(std::move(p));
    }
    m_ld = m_parts[0].b->m_ld;
    m_transport = transport == "nccl"
                      ? make_nccl_transport(ends(0), m_layout.shards(), m_processes)
                      : make_copy_transport(ends(0));
  }

  ~ShardedCudaBackend() override {
    m_transport.reset();
    for (Part& p : m_parts) {
      cudaSetDevice(p.device);  // each shard frees its memory on its own GPU
      p.b.reset();
      for (auto& h : p.halo) h = DeviceArray<float>();
      p.sum = DeviceArray<double>();
    }
  }

  // Row bytes the halo exchanges have moved (bench).
  int64_t bytes_exchanged() const { return m_transport->bytes_exchanged(); }

 private:
  struct Part {
    std::unique_ptr<CudaBackend> b;
    int device = 0, shard = 0, first = 0, count = 0;
    DeviceArray<double> sum;      // ld doubles: the shard's row sums, then every shard's
    DeviceArray<float> halo[3];   // the foreign neighbours' W, G and momentum rows
  };

  static ShardLayout check_layout(const BackendSetup& s, int per_process) {
    const int shards = per_process * s.processes.world;
    if (shards > s.workers)
      throw config_error("devices: " + std::to_string(shards) + " shards (" +
                         std::to_string(per_process) + " device entries x " +
                         std::to_string(s.processes.world) + " processes) for " +
                         std::to_string(s.workers) + " workers; expected at most one shard a worker");
    return ShardLayout(s.workers, shards);
  }

  std::string choose_transport(const BackendSetup& s) const {
    const std::set<int> distinct(m_devices.begin(), m_devices.end());
    const bool repeats = distinct.size() != m_devices.size();
    if (s.transport == "copy" && m_processes.world > 1)
      throw config_error("transport: \"copy\" moves rows inside one process; a run of " +
                         std::to_string(m_processes.world) + " processes needs \"nccl\" or \"auto\"");
    if (s.transport == "nccl" && repeats)
      throw config_error("transport: \"nccl\" takes one shard a GPU (NCCL refuses two ranks on "
                         "one device); devices repeats an ordinal: use \"copy\" or \"auto\"");
    if (s.transport != "auto") return s.transport;
    return m_processes.world > 1 || (!repeats && m_devices.size() > 1) ? "nccl" : "copy";
  }

  // The transport's view of the local shards; `arrays` of W, G, momentum as the exchange reads.
  std::vector<ShardEnd> ends(int arrays) const {
    std::vector<ShardEnd> out;
    for (const Part& p : m_parts) {
      ShardEnd e;
      e.shard = p.shard;
      e.device = p.device;
      e.stream = p.b->m_stream.get();
      e.first = p.first;
      const float* rows[3] = {p.b->m_w.get(), p.b->m_grad.get(), p.b->m_momentum.get()};
      for (int a = 0; a < arrays; ++a) {
        e.rows[a] = rows[a];
        e.halo[a] = p.halo[a].get();
      }
      out.push_back(e);
    }
    return out;
  }

  template <class F>
  void each(F&& f) const {
    for (Part& p : m_parts) {
      CUDA_CHECK(cudaSetDevice(p.device));
      f(p);
    }
  }
  // This process's first shard (curvature, w-bar's evaluation), its GPU made current.
  CudaBackend& lead() const {
    CUDA_CHECK(cudaSetDevice(m_parts[0].device));
    return *m_parts[0].b;
  }
  void sync_all() const {
    each([](Part& p) { p.b->m_stream.sync(); });
  }

  // One value a shard over every shard (global order), each process filling its own.
  template <class F>
  std::vector<double> per_shard(F&& value) const {
    std::vector<double> v(size_t(m_layout.shards()), 0.0);
    each([&](Part& p) { v[size_t(p.shard)] = value(p); });
    m_transport->all_reduce_host(ends(0), v);
    return v;
  }
  static int64_t earliest(const std::vector<double>& steps) {
    int64_t out = -1;
    for (double s : steps)
      if (s >= 0 && (out < 0 || int64_t(s) < out)) out = int64_t(s);
    return out;
  }

  // width values a worker over all workers in worker order: rows(p) gives a shard's.
  template <class F>
  std::vector<double> gather(int64_t width, F&& rows) const {
    std::vector<double> out(size_t(workers()) * size_t(width), 0.0);
    each([&](Part& p) {
      const std::vector<double> part = rows(p);
      std::copy(part.begin(), part.end(), out.begin() + int64_t(p.first) * width);
    });
    m_transport->all_reduce_host(ends(0), out);
    return out;
  }
  std::vector<double> rows_of(const std::vector<double>& v, const Part& p, int64_t width) const {
    const auto b = v.begin() + int64_t(p.first) * width;
    return std::vector<double>(b, b + int64_t(p.count) * width);
  }

  // Every shard's m_mean64 / m_mean32 = the mean over all workers of W (or G).
  void global_mean(bool grads) {
    const int64_t d = m_d;
    each([&](Part& p) {
      launch_row_sum(grads ? p.b->m_grad.get() : p.b->m_w.get(), p.count, m_ld, d, p.sum.get(),
                     p.b->m_stream.get());
    });
    std::vector<double*> sums;
    for (Part& p : m_parts) sums.push_back(p.sum.get());
    m_transport->all_reduce(ends(0), sums, size_t(m_ld));
    each([&](Part& p) {
      launch_divide_row(p.sum.get(), m_ld, d, double(workers()), p.b->m_mean64.get(),
                        p.b->m_mean32.get(), p.b->m_stream.get());
    });
  }

  // --- state and stepping ---
  std::string do_name() const override {
    std::string gpus;
    for (int dev : m_devices) gpus += (gpus.empty() ? "" : ",") + std::to_string(dev);
    std::string out = m_parts[0].b->do_name() + ", " + std::to_string(m_layout.shards()) +
                      " shards on GPUs [" + gpus + "]";
    if (m_processes.world > 1)
      out += " x " + std::to_string(m_processes.world) + " processes (rank " +
             std::to_string(m_processes.rank) + ")";
    return out + " (" + m_transport->name() + " transport)";
  }
  void do_initialize_weights(const ModelConfig& init, uint64_t seed) override {
    each([&](Part& p) { p.b->do_initialize_weights(init, seed); });
  }
  void do_set_weights(const std::vector<double>& w) override {
    each([&](Part& p) { p.b->do_set_weights(rows_of(w, p, m_d)); });
  }
  std::vector<double> do_weights() const override {
    return gather(m_d, [](Part& p) { return p.b->do_weights(); });
  }
  BackendState do_save_state() const override {
    BackendState st;
    st.weights = do_weights();
    if (has_momentum())
      st.momentum = gather(m_d, [](Part& p) { return p.b->download_rows(p.b->m_momentum, p.count); });
    st.loss = do_loss_window();
    return st;
  }
  void do_load_state(const BackendState& st) override {
    each([&](Part& p) {
      p.b->upload_rows(p.b->m_w, rows_of(st.weights, p, m_d), p.count);
      if (has_momentum()) p.b->upload_rows(p.b->m_momentum, rows_of(st.momentum, p, m_d), p.count);
    });
    do_set_loss_window(st.loss);
  }
  int do_scalar_bytes() const override { return int(sizeof(float)); }

  // One process: each shard streams its rows in turn. Several: each shard's rows gathered to
  // every process, so the file rank 0 writes holds every row in worker order.
  void do_write_rows(bool momentum,
                     const std::function<void(const char*, size_t)>& sink) const override {
    if (m_processes.world == 1) {
      each([&](Part& p) { p.b->do_write_rows(momentum, sink); });
      return;
    }
    for (int g = 0; g < m_layout.shards(); ++g) {
      std::vector<double> rows(size_t(m_layout.count(g)) * size_t(m_d), 0.0);
      each([&](Part& p) {
        if (p.shard == g) rows = p.b->download_rows(momentum ? p.b->m_momentum : p.b->m_w, p.count);
      });
      m_transport->all_reduce_host(ends(0), rows);
      const std::vector<float> f(rows.begin(), rows.end());
      sink(reinterpret_cast<const char*>(f.data()), f.size() * sizeof(float));
    }
  }
  void do_read_rows(bool momentum, const std::function<void(char*, size_t)>& source) override {
    if (m_processes.world == 1) {
      each([&](Part& p) { p.b->do_read_rows(momentum, source); });
      return;
    }
    for (int g = 0; g < m_layout.shards(); ++g) {  // every process reads the whole file
      std::vector<float> f(size_t(m_layout.count(g)) * size_t(m_d));
      source(reinterpret_cast<char*>(f.data()), f.size() * sizeof(float));
      each([&](Part& p) {
        if (p.shard == g)
          p.b->upload_rows(momentum ? p.b->m_momentum : p.b->m_w,
                           std::vector<double>(f.begin(), f.end()), p.count);
      });
    }
  }

  // The window: a base (set by set_loss_window) and the shards' windows since, each the sum of
  // its own per-step means, weighted by its share of the workers.
  LossWindow do_loss_window() const override {
    LossWindow w = m_base;
    const std::vector<double> sums = per_shard([&](Part& p) {
      return p.b->do_loss_window().sum * double(p.count) / double(workers());
    });
    for (double s : sums) w.sum += s;
    w.steps += lead().do_loss_window().steps;
    if (w.first_nonfinite < 0)
      w.first_nonfinite =
          earliest(per_shard([](Part& p) { return double(p.b->do_loss_window().first_nonfinite); }));
    return w;
  }
  void do_set_loss_window(const LossWindow& w) override {
    m_base = w;
    each([](Part& p) { p.b->do_set_loss_window(LossWindow{}); });
  }
  void do_sample(int64_t step) override {
    each([&](Part& p) { p.b->do_sample(step); });
  }
  std::vector<int64_t> do_minibatch_indices() const override {
    const int64_t batch = int64_t(m_parts[0].b->m_batch);
    const std::vector<double> all = gather(batch, [](Part& p) {
      const std::vector<int64_t> idx = p.b->do_minibatch_indices();
      return std::vector<double>(idx.begin(), idx.end());
    });
    return std::vector<int64_t>(all.begin(), all.end());
  }
  void do_local_gradient(bool record_loss) override {
    each([&](Part& p) { p.b->do_local_gradient(record_loss); });
  }
  std::vector<double> do_gradients() const override {
    return gather(m_d, [](Part& p) { return p.b->do_gradients(); });
  }
  double do_mean_gradient_norm() override {
    global_mean(true);
    CudaBackend& b = lead();
    return std::sqrt(b.sum_squares(b.m_mean32.get(), nullptr, 1));
  }
  void do_average_gradients() override {
    global_mean(true);
    each([&](Part& p) {
      launch_set_rows(p.b->m_grad.get(), p.count, m_ld, m_d, p.b->m_mean32.get(), p.b->m_stream.get());
    });
  }
  // Each shard's rows of P (columns renumbered: its rows, then its halo), the halo's rows
  // exchanged after the gradients are in, then every shard's fused gossip + update.
  void do_mix_update(const Csr* mixing, double lr, MixForm form) override {
    if (!mixing) {
      each([&](Part& p) { p.b->gossip(nullptr, lr, form, HaloRows{}); });
      return;
    }
    const HaloPlan& plan = m_halo.plan(*mixing);
    const bool atc = form == MixForm::Atc;
    const int arrays = atc ? (has_momentum() ? 3 : 2) : 1;
    each([&](Part& p) {
      const size_t need = plan.shards[size_t(p.shard)].halo.size() * size_t(m_ld);
      for (int a = 0; a < arrays; ++a)
        if (p.halo[a].size() < need) {
          p.b->m_stream.sync();  // the old halo may still be read by a queued gossip
          p.halo[a] = DeviceArray<float>();
          size_t free_b = 0, total_b = 0;
          CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
          if (double(need) * sizeof(float) > double(free_b))
            throw runtime_error(
                "devices: shard " + std::to_string(p.shard) + "'s halo (" +
                std::to_string(plan.shards[size_t(p.shard)].halo.size()) + " foreign rows of " +
                std::to_string(m_d) + " floats) does not fit in the " +
                std::to_string(double(free_b) / 1e9) + " GB free on GPU " + std::to_string(p.device) +
                "; use more devices, fewer workers or a sparser topology (gossamer plan shows the halo)");
          p.halo[a] = DeviceArray<float>(need);
          p.halo[a].zero(p.b->m_stream.get());  // the padding the exchange copies over stays 0
        }
    });
    m_transport->exchange(m_halo.runs(), ends(arrays), arrays, m_ld);
    each([&](Part& p) {
      const DeviceCsr& local = p.b->m_csr.get(plan.shards[size_t(p.shard)].local, p.b->m_stream.get());
      p.b->gossip(&local, lr, form,
                  HaloRows{p.halo[0].get(), atc ? p.halo[1].get() : nullptr,
                           atc && has_momentum() ? p.halo[2].get() : nullptr});
    });
  }
  void do_average_weights() override {
    global_mean(false);
    each([&](Part& p) {
      launch_set_rows(p.b->m_w.get(), p.count, m_ld, m_d, p.b->m_mean32.get(), p.b->m_stream.get());
    });
  }
  std::vector<double> do_mean_gradient() override {
    global_mean(true);
    CudaBackend& b = lead();
    std::vector<double> out(static_cast<size_t>(m_d));
    b.copy_to_host(out.data(), b.m_mean64.get(), out.size());
    return out;
  }
  void do_perturb_weights(const std::vector<double>& eps, bool per_worker) override {
    each([&](Part& p) { p.b->do_perturb_weights(per_worker ? rows_of(eps, p, m_d) : eps, per_worker); });
  }
  void do_perturb_gaussian(double sigma, uint64_t seed, uint32_t stream) override {
    each([&](Part& p) { p.b->do_perturb_gaussian(sigma, seed, stream); });
  }
  void do_perturb_along_mean_gradient(double rho) override {
    global_mean(true);
    each([&](Part& p) { p.b->perturb_along_mean(rho); });
  }
  void do_restore_weights() override {
    each([](Part& p) { p.b->do_restore_weights(); });
  }
  TrainLoss do_take_train_loss() override {
    const LossWindow w = do_loss_window();
    TrainLoss out;
    out.steps = w.steps;
    out.mean = w.steps ? w.sum / double(w.steps) : std::nan("");
    do_set_loss_window(LossWindow{0, 0, w.first_nonfinite});
    return out;
  }
  NonFiniteSteps do_first_nonfinite() const override {
    NonFiniteSteps out;
    out.loss = do_loss_window().first_nonfinite;
    out.weights = earliest(per_shard([](Part& p) { return double(p.b->do_first_nonfinite().weights); }));
    out.momentum = earliest(per_shard([](Part& p) { return double(p.b->do_first_nonfinite().momentum); }));
    return out;
  }
  double do_seconds_per_call(const std::function<void()>& body, int calls) override {
    sync_all();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i) body();
    sync_all();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / calls;
  }

  // --- evaluation ---
  bool do_weights_finite() override {
    const std::vector<double> bad = per_shard([](Part& p) { return p.b->do_weights_finite() ? 0.0 : 1.0; });
    return std::all_of(bad.begin(), bad.end(), [](double b) { return b == 0; });
  }
  double do_consensus_distance() override {
    global_mean(false);
    const std::vector<double> parts = per_shard(
        [](Part& p) { return p.b->sum_squares(p.b->m_w.get(), p.b->m_mean64.get(), p.count); });
    double sum = 0;
    for (double s : parts) sum += s;  // shard order
    return sum / workers();
  }
  EvalStats do_evaluate_mean(Split split) override {
    global_mean(false);
    return lead().evaluate_mean_row(split);
  }
  std::vector<EvalStats> do_evaluate_workers(Split split) override {
    const std::vector<double> all = gather(2, [&](Part& p) {
      std::vector<double> v;
      for (const EvalStats& e : p.b->do_evaluate_workers(split)) {
        v.push_back(e.loss);
        v.push_back(e.accuracy);
      }
      return v;
    });
    std::vector<EvalStats> out(static_cast<size_t>(workers()));
    for (size_t k = 0; k < out.size(); ++k) out[k] = {all[2 * k], all[2 * k + 1]};
    return out;
  }
  // Per chunk of rows: every shard's softmax sums, summed over the shards into the lead's.
  EnsembleStats do_evaluate_ensemble(Split split) override {
    global_mean(false);
    const std::vector<double> chunk = per_shard([&](Part& p) { return double(p.b->ensemble_chunk_rows(split)); });
    const int rows_per_chunk = int(*std::min_element(chunk.begin(), chunk.end()));
    const size_t classes = size_t(m_parts[0].b->m_model.classes);
    CudaBackend& lead_b = lead();
    return lead_b.ensemble_over(split, workers(), rows_per_chunk, [&](int64_t r0, int rows) {
      each([&](Part& p) { p.b->add_ensemble_probs(split, r0, rows); });
      std::vector<double*> probs;
      for (Part& p : m_parts) probs.push_back(p.b->m_probs.get());
      m_transport->all_reduce(ends(0), probs, size_t(rows) * classes);
      lead();
    });
  }

  // --- curvature: the lead shard computes on blocks this backend owns, on its GPU ---
  void do_set_curvature_subset(const std::vector<int64_t>& indices) override {
    lead().do_set_curvature_subset(indices);
  }
  std::unique_ptr<Vectors> do_vectors(int64_t rows) override {
    return lead().make_block(static_cast<const BackendShape*>(this), rows);
  }
  void do_upload(Rows dst, const std::vector<double>& v) override { lead().do_upload(dst, v); }
  std::vector<double> do_download(Rows src) override { return lead().do_download(src); }
  void do_copy_weights(Rows dst) override {
    if (m_processes.world > 1) return lead().do_upload(dst, do_weights());
    sync_all();
    CudaBackend& b = lead();
    for (Part& p : m_parts)
      CUDA_CHECK(cudaMemcpyPeerAsync(b.ptr(dst) + int64_t(p.first) * m_ld, m_parts[0].device,
                                     p.b->m_w.get(), p.device,
                                     size_t(p.count) * size_t(m_ld) * sizeof(float),
                                     b.m_stream.get()));
    b.m_stream.sync();
  }
  void do_mean_weights(Rows dst) override {
    global_mean(false);
    CudaBackend& b = lead();
    CUDA_CHECK(cudaMemcpyAsync(b.ptr(dst), b.m_mean32.get(), size_t(m_ld) * sizeof(float),
                               cudaMemcpyDeviceToDevice, b.m_stream.get()));
  }
  void do_fill_probes(Rows dst, Probe kind, uint64_t seed, uint32_t stream, int64_t repeat) override {
    lead().do_fill_probes(dst, kind, seed, stream, repeat);
  }
  void do_hvp(Rows points, Rows dirs, Rows out) override { lead().do_hvp(points, dirs, out); }
  std::vector<double> do_dots(Rows a, Rows b) override { return lead().do_dots(a, b); }
  void do_axpy(Rows y, const std::vector<double>& c, Rows x) override { lead().do_axpy(y, c, x); }
  void do_scale(Rows x, const std::vector<double>& c) override { lead().do_scale(x, c); }
  void do_copy(Rows dst, Rows src) override { lead().do_copy(dst, src); }
  void do_project_out(Rows r, Rows basis) override { lead().do_project_out(r, basis); }
  void do_combine(Rows basis, const std::vector<double>& c, Rows out) override {
    lead().do_combine(basis, c, out);
  }
  std::vector<double> do_subset_loss(Rows points, Rows grads) override {
    return lead().do_subset_loss(points, grads);
  }

  const std::vector<int> m_devices;  // this process's GPUs, one shard each
  const Processes m_processes;
  const ShardLayout m_layout;        // over every process's shards
  const int64_t m_d;
  int64_t m_ld = 0;
  mutable std::vector<Part> m_parts;
  std::unique_ptr<ShardTransport> m_transport;
  LossWindow m_base;
  HaloPlanner m_halo;                // each step's halo, planned when the mixing matrix changes
};

std::unique_ptr<Backend> make_sharded_cuda_backend(const BackendSetup& setup,
                                                   const CudaOptions& options) {
  return std::make_unique<ShardedCudaBackend>(setup, options);
}

}  // namespace gossamer
