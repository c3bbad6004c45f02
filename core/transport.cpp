// Shard layouts and halo plans (transport.hpp): which foreign rows each shard's rows of the
// mixing matrix read, found from the CSR alone.
#include "gossamer/transport.hpp"

#include <algorithm>
#include <map>

#include "gossamer/error.hpp"

namespace gossamer {

ShardLayout::ShardLayout(int workers, int shards) {
  if (shards < 1 || shards > workers)
    throw config_error("shards: " + std::to_string(shards) + " shards for " +
                       std::to_string(workers) + " workers; expected 1 to the number of workers");
  m_first.push_back(0);
  for (int s = 0; s < shards; ++s)
    m_first.push_back(m_first.back() + workers / shards + (s < workers % shards ? 1 : 0));
}

int ShardLayout::owner(int worker) const {
  return int(std::upper_bound(m_first.begin(), m_first.end(), worker) - m_first.begin()) - 1;
}

HaloPlan plan_halo(const Csr& mixing, const ShardLayout& layout) {
  HaloPlan plan;
  for (int s = 0; s < layout.shards(); ++s) {
    const int first = layout.first(s), count = layout.count(s);
    ShardMixing sm;
    // The halo in ascending worker order, then the rows renumbered; entries keep their order
    // in each row, so a row's sum runs in the same order as unsharded.
    for (int k = first; k < first + count; ++k)
      for (int e = mixing.row_ptr[size_t(k)]; e < mixing.row_ptr[size_t(k) + 1]; ++e) {
        const int c = mixing.col[size_t(e)];
        if (c < first || c >= first + count) sm.halo.push_back(c);
      }
    std::sort(sm.halo.begin(), sm.halo.end());
    sm.halo.erase(std::unique(sm.halo.begin(), sm.halo.end()), sm.halo.end());
    // Where the shard reads most foreign rows (a shuffled ring's scattered neighbours, dense
    // graphs), it takes all of them: one contiguous run from each other shard (an all-gather)
    // instead of many single rows; the rows it reads and their order are the same.
    const int foreign = layout.first(layout.shards()) - count;
    if (int64_t(sm.halo.size()) * 2 > foreign) {
      sm.halo.clear();
      for (int k = 0; k < layout.first(layout.shards()); ++k)
        if (k < first || k >= first + count) sm.halo.push_back(k);
    }
    sm.local.n = count;
    for (int k = first; k < first + count; ++k) {
      for (int e = mixing.row_ptr[size_t(k)]; e < mixing.row_ptr[size_t(k) + 1]; ++e) {
        const int c = mixing.col[size_t(e)];
        const int local =
            c >= first && c < first + count
                ? c - first
                : count + int(std::lower_bound(sm.halo.begin(), sm.halo.end(), c) - sm.halo.begin());
        sm.local.col.push_back(local);
        sm.local.val.push_back(mixing.val[size_t(e)]);
      }
      sm.local.row_ptr.push_back(int(sm.local.col.size()));
    }
    for (size_t slot = 0; slot < sm.halo.size(); ++slot)
      plan.copies.push_back({layout.owner(sm.halo[slot]), s, sm.halo[slot], int64_t(slot)});
    plan.shards.push_back(std::move(sm));
  }
  return plan;
}

std::vector<RowRun> row_runs(const std::vector<RowCopy>& copies) {
  std::vector<RowRun> runs;
  for (const RowCopy& c : copies) {
    if (!runs.empty()) {
      RowRun& r = runs.back();
      if (r.from == c.from && r.to == c.to && r.worker + r.count == c.worker &&
          r.slot + r.count == c.slot) {
        ++r.count;
        continue;
      }
    }
    runs.push_back({c.from, c.to, c.worker, c.slot, 1});
  }
  return runs;
}

const HaloPlan& HaloPlanner::plan(const Csr& mixing) {
  if (!(mixing == m_for)) {
    m_plan = plan_halo(mixing, m_layout);
    m_runs = row_runs(m_plan.copies);
    m_for = mixing;
  }
  return m_plan;
}

}  // namespace gossamer
