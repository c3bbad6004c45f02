#include "gossamer/topology.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <set>

#include "gossamer/error.hpp"
#include "host_memory.hpp"
#include "gossamer/philox.hpp"
#include "rng.hpp"

namespace gossamer {

void Csr::add_row(const std::vector<std::pair<int, double>>& entries) {
  auto sorted = entries;
  std::sort(sorted.begin(), sorted.end());
  for (const auto& [c, v] : sorted) {
    col.push_back(c);
    val.push_back(v);
  }
  row_ptr.push_back(int(col.size()));
  n = int(row_ptr.size()) - 1;
}

std::vector<double> Csr::dense() const {
  std::vector<double> p(size_t(n) * n, 0.0);
  for (int r = 0; r < n; ++r)
    for (int e = row_ptr[r]; e < row_ptr[r + 1]; ++e) p[size_t(r) * n + col[e]] += val[e];
  return p;
}

Csr Csr::from_dense(const std::vector<double>& p, int n) {
  Csr c;
  for (int r = 0; r < n; ++r) {
    std::vector<std::pair<int, double>> row;
    for (int j = 0; j < n; ++j)
      if (p[size_t(r) * n + j] != 0.0) row.push_back({j, p[size_t(r) * n + j]});
    c.add_row(row);
  }
  c.n = n;
  return c;
}

namespace {

using Edges = std::set<std::pair<int, int>>;  // undirected, stored as (min, max)

void add_edge(Edges& e, int a, int b) {
  if (a != b) e.insert({std::min(a, b), std::max(a, b)});
}

int ceil_log2(int m) {
  int bits = 0;
  while ((1 << bits) < m) ++bits;
  return bits;
}

// Union-find over m workers (path halving): connectivity in O(m) memory, near-linear time.
struct DisjointSets {
  explicit DisjointSets(int m) : parent(static_cast<size_t>(m)), components(m) {
    std::iota(parent.begin(), parent.end(), 0);
  }
  int root(int v) {
    while (parent[size_t(v)] != v) v = parent[size_t(v)] = parent[size_t(parent[size_t(v)])];
    return v;
  }
  void unite(int a, int b) {
    a = root(a), b = root(b);
    if (a != b) parent[size_t(std::max(a, b))] = std::min(a, b), --components;
  }
  std::vector<int> parent;
  int components;
};

bool connected(int m, const Edges& edges) {
  DisjointSets sets(m);
  for (auto [a, b] : edges) sets.unite(a, b);
  return sets.components == 1;
}

Edges undirected_edges(const TopologyConfig& c, int m, uint64_t seed) {
  Edges e;
  if (c.name == "ring") {
    for (int k = 0; k < m; ++k) add_edge(e, k, (k + 1) % m);
  } else if (c.name == "grid" || c.name == "torus") {
    const auto [rows, cols] = grid_shape(m);
    const bool wrap = c.name == "torus";
    for (int r = 0; r < rows; ++r)
      for (int q = 0; q < cols; ++q) {
        const int k = r * cols + q;
        if (q + 1 < cols || (wrap && cols > 1)) add_edge(e, k, r * cols + (q + 1) % cols);
        if (r + 1 < rows || (wrap && rows > 1)) add_edge(e, k, ((r + 1) % rows) * cols + q);
      }
  } else if (c.name == "hypercube") {
    if (m & (m - 1))
      throw config_error("topology.name: \"hypercube\" needs workers to be a power of 2, found " +
                         std::to_string(m));
    for (int k = 0; k < m; ++k)
      for (int bit = 1; bit < m; bit <<= 1) add_edge(e, k, k ^ bit);
  } else if (c.name == "star") {
    for (int k = 1; k < m; ++k) add_edge(e, 0, k);
  } else if (c.name == "erdos_renyi") {
    const double p = c.probability > 0 ? c.probability
                                       : std::min(1.0, m > 1 ? 2.0 * std::log(double(m)) / m : 1.0);
    // Each pair (a, b > a) an edge with probability p, drawn in O(m + edges): the gap to the
    // next edge of row a is geometric, floor(log(u) / log(1 - p)) (Batagelj & Brandes 2005).
    const double log_q = std::log1p(-std::min(p, 1.0 - 1e-16));
    for (uint32_t attempt = 0; attempt < 100; ++attempt) {
      PhiloxStream rng(seed, RngDomain::Topology, attempt);
      e.clear();
      for (int a = 0; a < m; ++a)
        for (int64_t b = a;;) {
          const double skip = p >= 1 ? 0 : std::floor(std::log(rng.uniform()) / log_q);  // u in (0, 1]
          if (skip >= double(m)) break;
          b += 1 + int64_t(skip);
          if (b >= m) break;
          add_edge(e, a, int(b));
        }
      if (connected(m, e)) return e;
    }
    throw config_error("topology.probability: erdos_renyi with p = " + std::to_string(p) + " and " +
                       std::to_string(m) +
                       " workers gave no connected graph in 100 draws; raise it");
  } else if (c.name == "custom") {
    if (!c.edges.is_array())
      throw config_error("topology.edges: expected a list of [i, j] pairs, found " +
                         c.edges.dump());
    for (const auto& pair : c.edges) {
      if (!pair.is_array() || pair.size() != 2 || !pair[0].is_number_integer() ||
          !pair[1].is_number_integer())
        throw config_error("topology.edges: expected [i, j] pairs of worker indices, found " +
                           pair.dump());
      const int a = pair[0], b = pair[1];
      if (a < 0 || b < 0 || a >= m || b >= m)
        throw config_error("topology.edges: edge " + pair.dump() + " names a worker outside 0.." +
                           std::to_string(m - 1));
      add_edge(e, a, b);
    }
  }
  return e;
}

// Symmetric weights on an undirected graph; the diagonal takes the rest of each row.
Csr weigh(int m, const Edges& edges, const std::string& rule) {
  std::vector<int> deg(m, 0);
  for (auto [a, b] : edges) ++deg[a], ++deg[b];
  const int max_deg = m ? *std::max_element(deg.begin(), deg.end()) : 0;
  std::vector<std::vector<std::pair<int, double>>> rows(m);
  for (auto [a, b] : edges) {
    // uniform: 1/(max_deg+1), which is 1/(deg+1) on a regular graph; metropolis (Xiao & Boyd 2004).
    const double w =
        rule == "metropolis" ? 1.0 / (1 + std::max(deg[a], deg[b])) : 1.0 / (1 + max_deg);
    rows[a].push_back({b, w});
    rows[b].push_back({a, w});
  }
  Csr p;
  for (int k = 0; k < m; ++k) {
    double off = 0;
    for (auto& [j, w] : rows[k]) off += w;
    rows[k].push_back({k, 1.0 - off});
    p.add_row(rows[k]);
  }
  return p;
}

Csr custom_matrix(const nlohmann::json& matrix, int m) {
  const auto where = [](int r, int j) {
    return "topology.matrix[" + std::to_string(r) + "][" + std::to_string(j) + "]";
  };
  if (!matrix.is_array() || int(matrix.size()) != m)
    throw config_error(
        "topology.matrix: expected " + std::to_string(m) + " rows (one per worker), found " +
        (matrix.is_array() ? std::to_string(matrix.size()) + " rows" : matrix.dump()));
  std::vector<double> p(size_t(m) * m);
  for (int r = 0; r < m; ++r) {
    const auto& row = matrix[r];
    if (!row.is_array() || int(row.size()) != m)
      throw config_error("topology.matrix[" + std::to_string(r) + "]: expected a row of " +
                         std::to_string(m) + " numbers, found " + row.dump());
    double sum = 0;
    for (int j = 0; j < m; ++j) {
      if (!row[j].is_number() || row[j].get<double>() < 0)
        throw config_error(where(r, j) + ": expected a nonnegative number, found " + row[j].dump());
      sum += p[size_t(r) * m + j] = row[j].get<double>();
    }
    if (std::fabs(sum - 1.0) > 1e-9)
      throw config_error("topology.matrix[" + std::to_string(r) +
                         "]: expected a row summing to 1 (row-stochastic), found sum " +
                         std::to_string(sum));
  }
  return Csr::from_dense(p, m);
}

}  // namespace

TopologySchedule::TopologySchedule(const TopologyConfig& c, int m, uint64_t seed)
    : m_name(c.name), m_shuffle(c.shuffle), m_seed(seed) {
  const bool fixed_weights = c.name == "exponential" || c.name == "one_peer_exponential" ||
                             c.name == "complete" || (c.name == "custom" && !c.matrix.is_null());
  if (fixed_weights && c.weights != "uniform")
    throw config_error("topology.weights: \"" + c.weights + "\" does not apply to " + c.name +
                       ", whose weights are fixed; remove it or use an undirected topology");
  const int tau = ceil_log2(m);
  if (c.name == "exponential") {
    // Static, directed: k averages itself and k + 2^i mod m, i < ceil(log2 m), weights
    // 1/(1+ceil(log2 m)).
    Csr p;
    for (int k = 0; k < m; ++k) {
      std::vector<std::pair<int, double>> row{{k, 1.0 / (1 + tau)}};
      for (int i = 0; i < tau; ++i) row.push_back({(k + (1 << i)) % m, 1.0 / (1 + tau)});
      p.add_row(row);
    }
    m_phases.push_back(p);
  } else if (c.name == "one_peer_exponential") {
    // Time-varying: at step t, k averages with k + 2^(t mod ceil(log2 m)), weights 1/2.
    for (int i = 0; i < std::max(tau, 1); ++i) {
      Csr p;
      for (int k = 0; k < m; ++k)
        p.add_row(m == 1
                      ? std::vector<std::pair<int, double>>{{0, 1.0}}
                      : std::vector<std::pair<int, double>>{{k, 0.5}, {(k + (1 << i)) % m, 0.5}});
      m_phases.push_back(p);
    }
  } else if (c.name == "complete") {
    // m entries a row: m^2 in all (exact averaging is C-SGD's or local SGD's job at large m).
    check_host_memory(double(m) * double(m) * (sizeof(int) + sizeof(double)),
                      "the complete topology's mixing matrix (" + std::to_string(m) + " x " +
                          std::to_string(m) + " entries)",
                      "workers, or use algorithm csgd or local_sgd for exact averaging");
    Csr p;
    for (int k = 0; k < m; ++k) {
      std::vector<std::pair<int, double>> row;
      for (int j = 0; j < m; ++j) row.push_back({j, 1.0 / m});
      p.add_row(row);
    }
    m_phases.push_back(p);
  } else if (c.name == "custom" && !c.matrix.is_null()) {
    m_phases.push_back(custom_matrix(c.matrix, m));
  } else {
    m_phases.push_back(weigh(m, undirected_edges(c, m, seed), c.weights));
  }
  for (auto& p : m_phases) p.n = m;
  if (c.name == "custom") {
    // A graph in pieces never reaches consensus: almost surely a mistake in the edge list.
    Edges links;
    for (int r = 0; r < m; ++r)
      for (int e = m_phases[0].row_ptr[r]; e < m_phases[0].row_ptr[r + 1]; ++e)
        if (m_phases[0].val[e] != 0) add_edge(links, r, m_phases[0].col[e]);
    if (!connected(m, links))
      throw config_error(std::string(c.matrix.is_null() ? "topology.edges" : "topology.matrix") +
                         ": the graph is not connected over the " + std::to_string(m) +
                         " workers, so they would never reach consensus");
  }
}

const Csr& TopologySchedule::at(int64_t step) {
  const Csr& base = m_phases[size_t(step % int64_t(m_phases.size()))];
  if (!m_shuffle) return base;
  // P'_ij = P_{pi(i) pi(j)}: row i of P' is row pi(i) of P with columns mapped by pi^-1.
  const int m = base.n;
  std::vector<int> pi(m), inv(m);
  for (int i = 0; i < m; ++i) {
    pi[i] = int(philox_permute(uint64_t(i), uint64_t(m), m_seed, 0xFFFFFFFFu, uint64_t(step)));
    inv[pi[i]] = i;
  }
  m_shuffled = Csr{};
  for (int i = 0; i < m; ++i) {
    std::vector<std::pair<int, double>> row;
    for (int e = base.row_ptr[pi[i]]; e < base.row_ptr[pi[i] + 1]; ++e)
      row.push_back({inv[base.col[e]], base.val[e]});
    m_shuffled.add_row(row);
  }
  return m_shuffled;
}

namespace {

// P^T as a CSR (columns sorted within each row), in O(nnz).
Csr transposed(const Csr& p) {
  Csr t;
  t.n = p.n;
  t.row_ptr.assign(size_t(p.n) + 1, 0);
  for (int c : p.col) ++t.row_ptr[size_t(c) + 1];
  for (int r = 0; r < p.n; ++r) t.row_ptr[r + 1] += t.row_ptr[r];
  t.col.resize(p.col.size());
  t.val.resize(p.val.size());
  std::vector<int> next(t.row_ptr.begin(), t.row_ptr.end() - 1);
  for (int r = 0; r < p.n; ++r)  // rows in order: each transposed row comes out sorted
    for (int e = p.row_ptr[r]; e < p.row_ptr[r + 1]; ++e) {
      const int at = next[p.col[e]]++;
      t.col[at] = r;
      t.val[at] = p.val[e];
    }
  return t;
}

// P == P^T within tol, entry by entry on the sparsity patterns (an entry absent on one side
// counts as 0).
bool symmetric_csr(const Csr& p, double tol) {
  const Csr t = transposed(p);
  for (int r = 0; r < p.n; ++r) {
    int a = p.row_ptr[r], b = t.row_ptr[r];
    const int a_end = p.row_ptr[r + 1], b_end = t.row_ptr[r + 1];
    while (a < a_end || b < b_end) {
      const int ca = a < a_end ? p.col[a] : INT32_MAX, cb = b < b_end ? t.col[b] : INT32_MAX;
      const double va = ca <= cb ? p.val[a] : 0.0, vb = cb <= ca ? t.val[b] : 0.0;
      if (std::fabs(va - vb) > tol) return false;
      if (ca <= cb) ++a;
      if (cb <= ca) ++b;
    }
  }
  return true;
}

// Weakly connected over the union of the phases: union-find over every nonzero entry, O(m)
// memory and O(nnz) time.
bool connected_union(const TopologySchedule& s) {
  DisjointSets sets(s.phase(0).n);
  for (int i = 0; i < s.phases(); ++i) {
    const Csr& p = s.phase(i);
    for (int r = 0; r < p.n; ++r)
      for (int e = p.row_ptr[r]; e < p.row_ptr[r + 1]; ++e)
        if (p.val[e] != 0) sets.unite(r, p.col[e]);
  }
  return sets.components == 1;
}

}  // namespace

MixingProperties analyze_topology(const TopologySchedule& s) {
  MixingProperties props;
  const int m = s.phase(0).n;
  const double tol = 1e-12 * std::max(1, m);
  props.min_degree = m;
  props.nonnegative = props.row_stochastic = props.column_stochastic = props.symmetric = true;
  for (int i = 0; i < s.phases(); ++i) {
    const Csr& p = s.phase(i);
    std::vector<double> col_sum(size_t(m), 0.0);
    for (int r = 0; r < m; ++r) {
      double row_sum = 0;
      int degree = 0;
      for (int e = p.row_ptr[r]; e < p.row_ptr[r + 1]; ++e) {
        row_sum += p.val[e];
        col_sum[size_t(p.col[e])] += p.val[e];
        if (p.val[e] < 0) props.nonnegative = false;
        if (p.col[e] != r && p.val[e] != 0) ++degree;
      }
      props.min_degree = std::min(props.min_degree, degree);
      props.max_degree = std::max(props.max_degree, degree);
      if (std::fabs(row_sum - 1) > tol) props.row_stochastic = false;
    }
    for (double c : col_sum)
      if (std::fabs(c - 1) > tol) props.column_stochastic = false;
    if (!symmetric_csr(p, tol)) props.symmetric = false;
  }
  props.connected = connected_union(s);
  props.gap = schedule_gap(s, false);
  const SpectralGap period = s.phases() > 1 ? schedule_gap(s, true) : props.gap;
  props.period_gap_sigma = period.gap_sigma;
  return props;
}

}  // namespace gossamer
