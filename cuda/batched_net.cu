// What the batched networks share: the per-pair loss buffers, the capacity check, the kind's
// factory.
#include <string>

#include "cnn.cuh"
#include "mlp.cuh"

namespace gossamer {

BatchedNet::BatchedNet(int64_t capacity, bool with_r)
    : m_capacity(capacity),
      m_with_r(with_r),
      m_row_loss(size_t(capacity)),
      m_row_correct(size_t(capacity)) {}

void BatchedNet::check_fits(const ModelBatch& models, const RowBatch& rows) const {
  if (int64_t(models.count) * rows.count > m_capacity)
    throw runtime_error("batched network: " + std::to_string(models.count) + " models x " +
                        std::to_string(rows.count) + " rows exceed the capacity of " +
                        std::to_string(m_capacity) + " (model, row) pairs");
  if (models.v && !m_with_r)
    throw runtime_error("batched network: an R-operator pass on buffers built without one");
}

void BatchedNet::poison_outputs(cudaStream_t s) { poison_floats(m_row_loss, s); }

std::unique_ptr<BatchedNet> make_batched_net(const ModelSpec& model, int64_t capacity,
                                             bool with_r, const CnnPaths& cnn_paths) {
  if (model.kind == ModelKind::Cnn)
    return std::make_unique<BatchedCnn>(model, capacity, with_r, cnn_paths);
  return std::make_unique<BatchedMlp>(model, capacity, with_r);
}

}  // namespace gossamer
