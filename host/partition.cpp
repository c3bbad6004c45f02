#include "gossamer/partition.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "gossamer/error.hpp"
#include "rng.hpp"

namespace gossamer {
namespace {

Partition from_lists(const std::vector<std::vector<int64_t>>& lists) {
  Partition p;
  p.offsets.push_back(0);
  for (const auto& l : lists) {
    p.indices.insert(p.indices.end(), l.begin(), l.end());
    p.offsets.push_back(int64_t(p.indices.size()));
  }
  return p;
}

std::vector<std::vector<int64_t>> dirichlet_split(const Dataset& train, int m, double alpha,
                                                  PhiloxStream& rng) {
  std::vector<std::vector<int64_t>> lists(m), by_class(train.classes);
  for (int64_t i = 0; i < train.n; ++i) by_class[train.y[i]].push_back(i);
  // Dir(alpha) proportions from Gamma(alpha, 1) draws, in logs: Gamma(a) = Gamma(a + 1) U^(1/a)
  // (Marsaglia & Tsang 2000), so log g = log Gamma(a + 1) + log(U) / a. Plain draws underflow
  // to 0 for tiny alpha (all m of them for alpha <= 1e-6: 0/0 cut points); in logs the largest
  // is scaled to 1 and the proportions tend to "one worker takes the class", as they should.
  std::gamma_distribution<double> gamma(alpha + 1.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<double> log_g(m);
  for (auto& members : by_class) {
    std::shuffle(members.begin(), members.end(), rng);
    for (auto& v : log_g) v = std::log(gamma(rng)) + std::log1p(-uniform(rng)) / alpha;
    const double top = *std::max_element(log_g.begin(), log_g.end());
    std::vector<double> p(m);
    double total = 0;
    for (int k = 0; k < m; ++k) total += (p[k] = std::exp(log_g[k] - top));
    // Cut points at the cumulative proportions.
    double cum = 0;
    size_t start = 0;
    for (int k = 0; k < m; ++k) {
      cum += p[k];
      const size_t end =
          k == m - 1 ? members.size() : size_t(std::llround(cum / total * double(members.size())));
      for (size_t i = start; i < std::max(start, end); ++i) lists[k].push_back(members[i]);
      start = std::max(start, end);
    }
  }
  return lists;
}

}  // namespace

Partition make_partition(const PartitionConfig& c, const Dataset& train, int m, uint64_t seed) {
  if (c.kind == "shared") {
    Partition p;
    p.shared = true;
    p.worker_count = m;
    p.offsets = {0, train.n};
    p.indices.resize(size_t(train.n));
    std::iota(p.indices.begin(), p.indices.end(), 0);
    return p;
  }
  if (train.n < m)
    throw config_error("workers: " + std::to_string(m) + " workers but only " +
                       std::to_string(train.n) + " training samples for a " + c.kind +
                       " partition; lower workers, use more data, or set partition.kind "
                       "\"shared\" (every worker samples the whole training set)");
  PhiloxStream rng(seed, RngDomain::Partition, 0);
  std::vector<std::vector<int64_t>> lists(m);
  if (c.kind == "iid") {
    std::vector<int64_t> perm(train.n);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int k = 0; k < m; ++k)
      lists[k].assign(perm.begin() + train.n * k / m, perm.begin() + train.n * (k + 1) / m);
  } else if (c.kind == "dirichlet") {
    // Redraw a few times if some worker got nothing (likely only for tiny alpha and small data).
    for (int attempt = 0; attempt < 20; ++attempt) {
      lists = dirichlet_split(train, m, c.alpha, rng);
      if (std::none_of(lists.begin(), lists.end(), [](const auto& l) { return l.empty(); })) break;
      if (attempt == 19)
        throw config_error(
            "partition.alpha: with alpha " + std::to_string(c.alpha) + ", " + std::to_string(m) +
            " workers and " + std::to_string(train.n) +
            " samples some worker got no data in 20 draws; raise alpha or lower workers");
    }
  } else {  // shards
    const int64_t shards = int64_t(m) * c.classes_per_worker;
    if (shards > train.n)
      throw config_error("partition.classes_per_worker: " + std::to_string(shards) +
                         " shards for " + std::to_string(train.n) +
                         " samples; lower it or workers");
    std::vector<int64_t> order(train.n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return train.y[a] < train.y[b]; });
    std::vector<int64_t> shard_ids(shards);
    std::iota(shard_ids.begin(), shard_ids.end(), 0);
    std::shuffle(shard_ids.begin(), shard_ids.end(), rng);
    for (int64_t s = 0; s < shards; ++s) {
      const int64_t id = shard_ids[s], k = s / c.classes_per_worker;
      lists[k].insert(lists[k].end(), order.begin() + train.n * id / shards,
                      order.begin() + train.n * (id + 1) / shards);
    }
  }
  Partition p = from_lists(lists);
  p.worker_count = m;
  return p;
}

}  // namespace gossamer
