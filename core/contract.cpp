// The backend contract's checks (include/gossamer/backend.hpp): every public method of the three
// facets validates its arguments here, once, for every backend, then calls the backend's do_
// implementation. A backend never sees a call with the wrong sizes.
#include <chrono>
#include <cmath>
#include <utility>

#include "gossamer/backend.hpp"
#include "gossamer/error.hpp"
#include "gossamer/philox.hpp"

namespace gossamer {
namespace {

std::string count(int64_t n) { return std::to_string(n); }

// Exactly rows x d values.
void check_row_values(size_t values, int64_t rows, int64_t dim, const std::string& what) {
  if (int64_t(values) != rows * dim)
    throw runtime_error(what + ": expected " + count(rows * dim) + " values (" + count(rows) +
                        " rows of d = " + count(dim) + "), got " + count(int64_t(values)));
}

// Whole rows of d values; returns their number.
int64_t whole_rows(size_t values, int64_t dim, const char* what) {
  if (dim <= 0 || int64_t(values) % dim != 0)
    throw runtime_error(std::string(what) + ": expected whole rows of d = " + count(dim) +
                        " values, got " + count(int64_t(values)));
  return int64_t(values) / dim;
}

void check_finite(double x, const char* what) {
  if (!std::isfinite(x)) throw runtime_error(std::string(what) + ": not finite");
}

}  // namespace

Shape backend_shape(const BackendSetup& s) {
  if (!s.model || !s.data || !s.partition)
    throw runtime_error("backend setup: the model, the data and the partition are required");
  if (s.workers < 1 || s.batch < 1)
    throw runtime_error("backend setup: workers (" + count(s.workers) + ") and batch (" +
                        count(s.batch) + ") must be >= 1");
  return Shape{s.workers, s.model->dim, s.optimizer.momentum > 0, s.data->train.n};
}

// --- state and stepping ---

void Stepping::initialize_weights(const ModelConfig& init, uint64_t seed) {
  m_perturbed = false;
  do_initialize_weights(init, seed);
}

void Stepping::set_weights(const std::vector<double>& w) {
  check_row_values(w.size(), workers(), dim(), "set_weights");
  m_perturbed = false;
  do_set_weights(w);
}

void Stepping::load_state(const BackendState& s) {
  check_row_values(s.weights.size(), workers(), dim(), "load_state: weights");
  if (has_momentum() != !s.momentum.empty())
    throw runtime_error("load_state: the state has " + std::string(s.momentum.empty() ? "no " : "") +
                        "momentum buffers, the optimizer " +
                        (has_momentum() ? "uses" : "does not use") + " them");
  if (has_momentum()) check_row_values(s.momentum.size(), workers(), dim(), "load_state: momentum");
  set_loss_window(s.loss);
  m_perturbed = false;
  do_load_state(s);
}

void Stepping::write_rows(bool momentum,
                          const std::function<void(const char*, size_t)>& sink) const {
  if (momentum && !has_momentum())
    throw runtime_error("checkpoint rows: the optimizer keeps no momentum buffers");
  do_write_rows(momentum, sink);
}

void Stepping::read_rows(bool momentum, const std::function<void(char*, size_t)>& source) {
  if (momentum && !has_momentum())
    throw runtime_error("checkpoint rows: the optimizer keeps no momentum buffers");
  m_perturbed = false;
  do_read_rows(momentum, source);
}

void Stepping::set_loss_window(const LossWindow& w) {
  if (w.steps < 0 || w.first_nonfinite < -1)
    throw runtime_error("loss window: negative step count (" + count(w.steps) + ") or first step (" +
                        count(w.first_nonfinite) + ")");
  do_set_loss_window(w);
}

void Stepping::sample(int64_t step) {
  if (step < 0) throw runtime_error("sample: negative step " + count(step));
  do_sample(step);
}

void Stepping::mix_update(const Csr* mixing, double lr, MixForm form) {
  if (mixing && mixing->n != workers())
    throw runtime_error("mix_update: a mixing matrix of " + count(mixing->n) + " rows for " +
                        count(workers()) + " workers");
  check_finite(lr, "mix_update: the learning rate");
  do_mix_update(mixing, lr, form);
}

void Stepping::perturb_weights(const std::vector<double>& eps) {
  const int64_t n = int64_t(eps.size()), d = dim(), all = int64_t(workers()) * d;
  if (n != d && n != all)
    throw runtime_error("perturb_weights: expected d = " + count(d) + " or m x d = " + count(all) +
                        " values, got " + count(n));
  do_perturb_weights(eps, n == all && n != d);
  m_perturbed = true;
}

void Stepping::perturb_gaussian(double sigma, uint64_t seed, uint32_t stream) {
  if (!(sigma >= 0) || !std::isfinite(sigma))
    throw runtime_error("perturb_gaussian: sigma must be finite and >= 0");
  do_perturb_gaussian(sigma, seed, stream);
  m_perturbed = true;
}

void Stepping::perturb_along_mean_gradient(double rho) {
  if (!(rho >= 0) || !std::isfinite(rho))
    throw runtime_error("perturb_along_mean_gradient: rho must be finite and >= 0");
  do_perturb_along_mean_gradient(rho);
  m_perturbed = true;
}

void Stepping::restore_weights() {
  if (!m_perturbed) throw runtime_error("restore_weights: no perturb_weights since the last restore");
  m_perturbed = false;
  do_restore_weights();
}

double Stepping::seconds_per_call(const std::function<void()>& body, int calls) {
  if (calls < 1) throw runtime_error("seconds_per_call: calls must be >= 1");
  return do_seconds_per_call(body, calls);
}

void Stepping::do_perturb_gaussian(double sigma, uint64_t seed, uint32_t stream) {
  std::vector<double> eps(static_cast<size_t>(dim()));
  for (size_t i = 0; i < eps.size(); ++i)
    eps[i] = sigma * curvature_probe(Probe::Normal, seed, stream, uint64_t(i));
  do_perturb_weights(eps, false);
}

void Stepping::do_perturb_along_mean_gradient(double rho) {
  std::vector<double> g = mean_gradient();
  double norm = 0;
  for (double v : g) norm += v * v;
  norm = std::sqrt(norm);
  for (auto& v : g) v = norm > 0 ? rho * v / norm : 0.0;
  do_perturb_weights(g, false);
}

double Stepping::do_seconds_per_call(const std::function<void()>& body, int calls) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) body();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / calls;
}

// --- curvature ---

void Curvature::set_curvature_subset(const std::vector<int64_t>& indices) {
  const int64_t n = train_rows();
  for (size_t i = 0; i < indices.size(); ++i)
    if (indices[i] < 0 || indices[i] >= n)
      throw runtime_error("set_curvature_subset: index " + count(indices[i]) + " (entry " +
                          count(int64_t(i)) + ") is outside the training set's " + count(n) +
                          " rows");
  do_set_curvature_subset(indices);
  m_subset = int64_t(indices.size());
}

std::unique_ptr<Vectors> Curvature::vectors(int64_t rows) {
  if (rows < 1) throw runtime_error("vectors: a block needs at least 1 row, got " + count(rows));
  return do_vectors(rows);
}

void Curvature::check_rows(Rows r, const char* what) const {
  if (!r.block || r.block->owner() != static_cast<const BackendShape*>(this))
    throw runtime_error(std::string(what) + ": a block of another backend (or none)");
  if (r.first < 0 || r.count < 1 || r.first + r.count > r.block->rows())
    throw runtime_error(std::string(what) + ": rows [" + count(r.first) + ", " +
                        count(r.first + r.count) + ") of a block of " + count(r.block->rows()));
}

void Curvature::check_subset() const {
  if (m_subset == 0)
    throw runtime_error("curvature: the curvature subset is empty (set_curvature_subset first)");
}

void Curvature::upload(Rows dst, const std::vector<double>& values) {
  check_rows(dst, "upload");
  check_row_values(values.size(), dst.count, dim(), "upload");
  do_upload(dst, values);
}

std::vector<double> Curvature::download(Rows src) {
  check_rows(src, "download");
  return do_download(src);
}

void Curvature::copy_weights(Rows dst) {
  check_rows(dst, "copy_weights");
  if (dst.count != workers())
    throw runtime_error("copy_weights: " + count(dst.count) + " rows for " + count(workers()) +
                        " workers");
  do_copy_weights(dst);
}

void Curvature::mean_weights(Rows dst) {
  check_rows(dst, "mean_weights");
  if (dst.count != 1) throw runtime_error("mean_weights: expected 1 row, got " + count(dst.count));
  do_mean_weights(dst);
}

void Curvature::fill_probes(Rows dst, Probe kind, uint64_t seed, uint32_t stream, int64_t repeat) {
  check_rows(dst, "fill_probes");
  if (repeat < 1) throw runtime_error("fill_probes: repeat must be >= 1, got " + count(repeat));
  do_fill_probes(dst, kind, seed, stream, repeat);
}

void Curvature::hvp(Rows points, Rows dirs, Rows out) {
  check_rows(points, "hvp: points");
  check_rows(dirs, "hvp: dirs");
  check_rows(out, "hvp: out");
  if (out.count != dirs.count || dirs.count % points.count != 0)
    throw runtime_error("hvp: " + count(points.count) + " points, " + count(dirs.count) +
                        " directions and " + count(out.count) +
                        " outputs (the points must divide the directions; one output each)");
  if (out.block == dirs.block || out.block == points.block)
    throw runtime_error("hvp: out must be a block apart from the points and the directions");
  check_subset();
  do_hvp(points, dirs, out);
}

std::vector<double> Curvature::dots(Rows a, Rows b) {
  check_rows(a, "dots");
  check_rows(b, "dots");
  if (a.count != b.count)
    throw runtime_error("dots: " + count(a.count) + " rows against " + count(b.count));
  return do_dots(a, b);
}

void Curvature::axpy(Rows y, const std::vector<double>& c, Rows x) {
  check_rows(y, "axpy");
  check_rows(x, "axpy");
  if ((x.count != y.count && x.count != 1) || int64_t(c.size()) != y.count)
    throw runtime_error("axpy: " + count(y.count) + " rows, " + count(x.count) + " rows and " +
                        count(int64_t(c.size())) + " coefficients");
  do_axpy(y, c, x);
}

void Curvature::scale(Rows x, const std::vector<double>& c) {
  check_rows(x, "scale");
  if (int64_t(c.size()) != x.count)
    throw runtime_error("scale: " + count(x.count) + " rows and " + count(int64_t(c.size())) +
                        " coefficients");
  do_scale(x, c);
}

void Curvature::copy(Rows dst, Rows src) {
  check_rows(dst, "copy");
  check_rows(src, "copy");
  if (dst.count != src.count)
    throw runtime_error("copy: " + count(src.count) + " rows into " + count(dst.count));
  do_copy(dst, src);
}

void Curvature::project_out(Rows r, Rows basis) {
  check_rows(r, "project_out");
  check_rows(basis, "project_out: basis");
  if (r.block == basis.block && r.first < basis.first + basis.count &&
      basis.first < r.first + r.count)
    throw runtime_error("project_out: the rows overlap the basis");
  do_project_out(r, basis);
}

void Curvature::combine(Rows basis, const std::vector<double>& c, Rows out) {
  check_rows(basis, "combine: basis");
  check_rows(out, "combine");
  if (int64_t(c.size()) != basis.count * out.count)
    throw runtime_error("combine: " + count(int64_t(c.size())) + " coefficients for " +
                        count(basis.count) + " basis rows x " + count(out.count) + " outputs");
  if (out.block == basis.block) throw runtime_error("combine: out must be apart from the basis");
  do_combine(basis, c, out);
}

void Curvature::hvp_into(const std::vector<double>& points, const std::vector<double>& dirs,
                         std::vector<double>& out) {
  const int64_t d = dim(), pairs = whole_rows(dirs.size(), d, "hvp: dirs");
  if (int64_t(points.size()) != d && int64_t(points.size()) != pairs * d)
    throw runtime_error("hvp: points: expected d = " + count(d) + " values (one point) or " +
                        count(pairs * d) + " (one per direction), got " +
                        count(int64_t(points.size())));
  out.resize(dirs.size());
  if (pairs == 0) return;
  auto p = vectors(int64_t(points.size()) / d), v = vectors(pairs), h = vectors(pairs);
  upload(all_rows(*p), points);
  upload(all_rows(*v), dirs);
  hvp(all_rows(*p), all_rows(*v), all_rows(*h));
  out = download(all_rows(*h));
}

std::vector<double> Curvature::subset_loss(Rows points, Rows grads) {
  check_rows(points, "subset_loss: points");
  if (grads.block) {
    check_rows(grads, "subset_loss: grads");
    if (grads.count != points.count)
      throw runtime_error("subset_loss: " + count(points.count) + " points and " +
                          count(grads.count) + " gradient rows (one each)");
    if (grads.block == points.block)
      throw runtime_error("subset_loss: grads must be a block apart from the points");
  }
  check_subset();
  return do_subset_loss(points, grads);
}

std::vector<double> Curvature::subset_loss(const std::vector<double>& points,
                                           std::vector<double>* grads) {
  const int64_t n = whole_rows(points.size(), dim(), "subset_loss: points");
  check_subset();
  if (grads) grads->clear();
  if (n == 0) return {};
  auto p = vectors(n);
  upload(all_rows(*p), points);
  const std::unique_ptr<Vectors> g = grads ? vectors(n) : nullptr;
  const std::vector<double> losses = subset_loss(all_rows(*p), g ? all_rows(*g) : Rows{});
  if (grads) *grads = download(all_rows(*g));
  return losses;
}

// --- reports ---

std::string NonFiniteSteps::describe() const {
  const std::pair<int64_t, const char*> events[] = {
      {loss, "the training loss"}, {weights, "the weights"}, {momentum, "the momentum buffers"}};
  int64_t first = -1;
  for (const auto& [step, name] : events)
    if (step >= 0 && (first < 0 || step < first)) first = step;
  if (first < 0) return "";
  std::string what;
  for (const auto& [step, name] : events)
    if (step == first) what += (what.empty() ? "" : " and ") + std::string(name);
  return "NaN or Inf in " + what + " at step " + std::to_string(first);
}

}  // namespace gossamer
