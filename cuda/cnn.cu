// The passes of the batched CNN (cnn.cuh). For model k of a pass (K models, R rows each), with
// N = R oh ow output columns and kc = cin kh kw:
//   forward    col_k = im2col(X_k)  (kc x N),  Y_k = W_k col_k + b_k           (cout x N)
//   R-forward  R{Y_k} = V_k col_k + W_k im2col(R{X_k}) + v_k
//   backward   dW_k = dY_k col_k^T,  db_k = rowsum dY_k,  dX_k += col2im(W_k^T dY_k)
//   R-backward R{dW_k} = R{dY_k} col_k^T + dY_k im2col(R{X_k})^T,
//              R{dX_k} += col2im(W_k^T R{dY_k} + V_k^T dY_k)
// Each is one strided-batched GEMM over the K models (W_k at w + k w_stride inside W[m][d]),
// except for a convolution of few columns (kc <= kSmallConv: the first layer on the image, a
// 1 x 1 shortcut, a small classifier), whose forward and weight gradient are one kernel each that
// gathers the columns' entries from the input (no im2col; the forward adds the bias). With
// kept_columns each convolution keeps its columns (and their R twin) from the forward pass for the
// backward, which then writes W^T dY over them for col2im; without, they are recomputed in the
// backward pass into one buffer of the largest layer's columns (cnn_pair_sizes's col_at). A
// node's gradient is accumulated where its output feeds two nodes (a residual block's input) or
// where its reader writes only part of it (a max pool's chosen inputs, a pool that leaves an odd
// row out), so the backward pass zeroes those first; with stored_grads every other gradient its
// one reader stores whole (cnn_gradient_stored), which saves a pass of writes and one of reads
// over it. Each of these fused paths (CnnPaths, CudaOptions::cnn_paths) can be turned off alone;
// all off is the general path. Everything is queued on the stream: the training step is captured
// in a CUDA graph with it.
#include "cnn.cuh"
#include "kernels.cuh"

namespace gossamer {
namespace {

int64_t count(const CnnNode& n, int models, int rows) {
  return int64_t(models) * rows * n.c * n.h * n.w;
}

PoolKind pool_kind(CnnNode::Op op) {
  return op == CnnNode::Op::MaxPool   ? PoolKind::Max
         : op == CnnNode::Op::AvgPool ? PoolKind::Avg
                                      : PoolKind::Gap;
}

}  // namespace

BatchedCnn::BatchedCnn(const ModelSpec& model, int64_t capacity, bool with_r,
                       const CnnPaths& paths)
    : BatchedNet(capacity, with_r),
      m_model(model),
      m_paths(paths),
      m_stored(paths.stored_grads ? cnn_gradient_stored(model)
                                  : std::vector<bool>(model.nodes.size())),
      m_fused(cnn_fusions(model, paths)) {
  const CnnPairSizes z = cnn_pair_sizes(model, paths);
  const size_t P = size_t(capacity);
  const auto twin = [&](int64_t n) { return with_r ? P * size_t(n) : 0; };
  for (size_t i = 0; i < z.node.size(); ++i) {
    m_y.emplace_back(P * size_t(z.value[i]));
    m_dy.emplace_back(P * size_t(with_r ? z.grad_r[i] : z.grad[i]));
    m_ry.emplace_back(twin(z.node[i]));
    m_rdy.emplace_back(twin(z.grad_r[i]));
    m_xh.emplace_back(P * size_t(z.normed[i]));
    m_rxh.emplace_back(twin(z.normed[i]));
    m_stats.emplace_back(P * size_t(z.stats[i]));
    m_arg.emplace_back(P * size_t(z.arg[i]));
  }
  m_image = DeviceArray<float>(P * size_t(z.image));
  m_col_at = z.col_at;
  m_col = DeviceArray<float>(P * size_t(z.col));
  m_rcol = DeviceArray<float>(twin(z.col));
  m_partials = DeviceArray<double>(size_t(z.partials));
  m_logits = DeviceArray<float>(P * size_t(z.logits));
  m_rlogits = DeviceArray<float>(twin(z.logits));
}

void BatchedCnn::poison(cudaStream_t s) {
  for (auto* group : {&m_y, &m_dy, &m_ry, &m_rdy, &m_xh, &m_rxh, &m_stats})
    for (auto& a : *group) poison_floats(a, s);
  for (auto* a : {&m_image, &m_col, &m_rcol, &m_logits, &m_rlogits}) poison_floats(*a, s);
  poison_outputs(s);
}

void BatchedCnn::conv_forward(int i, const ConvShape& c, int j, float* y, float* ry, int act,
                              const ModelBatch& mb, int rows, const Gemm& gemm, cudaStream_t s) {
  const int K = mb.count, kc = c.cin * c.kh * c.kw, N = rows * c.out_h * c.out_w;
  if (small(c)) {  // few columns: one kernel, no columns, the bias (and act) included
    SmallConvOut out;
    out.y = y, out.ry = ry, out.act = m_model.activation;  // y null: act_from_output
    if (act >= 0) {
      out.a = value(act);
      out.ra = ry ? m_ry[size_t(act)].get() : nullptr;
    }
    launch_small_conv(in(j), r_in(j, ry != nullptr), c, rows, K, mb.w, mb.w_stride, mb.v,
                      mb.v_stride, out, s);
    return;
  }
  if (act >= 0) throw runtime_error("conv_forward: an activation fused into a GEMM convolution");
  const long long col_stride = (long long)kc * N, y_stride = (long long)c.cout * N;
  launch_im2col(in(j), c, rows, K, col(i), s);
  const MatrixArg columns{col(i), N, col_stride, false};
  const MatrixArg weight{mb.w + c.w_offset, kc, mb.w_stride, false};
  gemm.run(c.cout, N, kc, weight, columns, 0.f, y, N, y_stride, K);
  if (ry) {
    gemm.run(c.cout, N, kc, MatrixArg{mb.v + c.w_offset, kc, mb.v_stride, false}, columns, 0.f, ry,
             N, y_stride, K);
    if (const float* rx = r_in(j, true)) {
      launch_im2col(rx, c, rows, K, rcol(i), s);
      gemm.run(c.cout, N, kc, weight, MatrixArg{rcol(i), N, col_stride, false}, 1.f, ry, N,
               y_stride, K);
    }
  }
  launch_channel_bias(y, ry, mb.w, mb.w_stride, mb.v, mb.v_stride, c.b_offset, c.cout, N, K, s);
}

void BatchedCnn::conv_backward(int i, const ConvShape& c, int j, const float* dy, const float* rdy,
                               const ModelBatch& mb, int rows, float* out, int64_t out_stride,
                               float beta, const Gemm& gemm, cudaStream_t s) {
  const int K = mb.count, kc = c.cin * c.kh * c.kw, N = rows * c.out_h * c.out_w;
  const long long col_stride = (long long)kc * N, y_stride = (long long)c.cout * N;
  const float* rx = r_in(j, rdy != nullptr);
  // The parameters: dW = dY col^T (R: R{dY} col^T + dY R{col}^T), the bias the row sums. A
  // convolution of few columns sums its long rows in one kernel instead, gathering the columns'
  // entries from its input.
  const int pool = m_fused.weight_grad_through_pool[size_t(i)];
  if (small(c) && pool >= 0 && !rdy) {  // dY from the pool's: cnn_fusions' comment
    const CnnNode& p = m_model.nodes[size_t(pool)];
    PoolGradient through;
    through.dy = m_dy[size_t(pool)].get(), through.x = value(p.input);
    through.kind = pool_kind(p.op), through.act = m_model.activation;
    through.ih = c.out_h, through.iw = c.out_w, through.oh = p.h, through.ow = p.w;
    launch_small_weight_grad(nullptr, in(j), nullptr, nullptr, c, rows, K, m_partials.get(),
                             int64_t(m_partials.size()), out, out_stride, beta, s, &through);
  } else if (small(c)) {
    launch_small_weight_grad(rdy ? rdy : dy, in(j), rx ? dy : nullptr, rx, c, rows, K,
                             m_partials.get(), int64_t(m_partials.size()), out, out_stride, beta,
                             s);
  } else {
    if (!m_paths.kept_columns) {  // recomputed (in one buffer), or kept from the forward pass
      launch_im2col(in(j), c, rows, K, col(i), s);
      if (rx) launch_im2col(rx, c, rows, K, rcol(i), s);
    }
    gemm.run(c.cout, kc, N, MatrixArg{rdy ? rdy : dy, N, y_stride, false},
             MatrixArg{col(i), N, col_stride, true}, beta, out + c.w_offset, kc, out_stride, K);
    if (rx)
      gemm.run(c.cout, kc, N, MatrixArg{dy, N, y_stride, false},
               MatrixArg{rcol(i), N, col_stride, true}, 1.f, out + c.w_offset, kc, out_stride, K);
    launch_channel_sums(rdy ? rdy : dy, nullptr, nullptr, nullptr, c.cout, N, K, out, out_stride,
                        c.b_offset, beta, s);
  }
  if (j < 0) return;  // the image needs no gradient
  // The input: dX += col2im(W^T dY) (R: col2im(W^T R{dY} + V^T dY)), through the columns' buffer,
  // free now (the kept columns are the forward pass's: one backward pass a forward pass).
  const MatrixArg weight_t{mb.w + c.w_offset, kc, mb.w_stride, true};
  gemm.run(kc, N, c.cout, weight_t, MatrixArg{dy, N, y_stride, false}, 0.f, col(i), N, col_stride,
           K);
  launch_col2im_add(col(i), c, rows, K, m_dy[size_t(j)].get(), accumulates(j), s);
  if (!rdy) return;
  gemm.run(kc, N, c.cout, weight_t, MatrixArg{rdy, N, y_stride, false}, 0.f, rcol(i), N, col_stride,
           K);
  gemm.run(kc, N, c.cout, MatrixArg{mb.v + c.w_offset, kc, mb.v_stride, true},
           MatrixArg{dy, N, y_stride, false}, 1.f, rcol(i), N, col_stride, K);
  launch_col2im_add(rcol(i), c, rows, K, m_rdy[size_t(j)].get(), accumulates(j), s);
}

void BatchedCnn::forward_node(int i, const ModelBatch& mb, int rows, const Gemm& gemm,
                              cudaStream_t s) {
  const CnnNode& n = m_model.nodes[size_t(i)];
  const bool r = mb.v != nullptr;
  const int K = mb.count, j = n.input;
  float* y = value(i);
  float* ry = r ? m_ry[size_t(i)].get() : nullptr;
  const int64_t cnt = count(n, K, rows);
  switch (n.op) {
    case CnnNode::Op::Conv: {
      const size_t next = size_t(i) + 1;  // the activation this convolution's kernel computes
      const bool fused = next < m_model.nodes.size() && m_fused.act_in_conv[next];
      conv_forward(i, n.conv, j, y, ry, fused ? int(next) : -1, mb, rows, gemm, s);
      break;
    }
    case CnnNode::Op::Act:
      if (m_fused.act_in_conv[size_t(i)]) break;  // computed with its input
      launch_act_forward(in(j), r_in(j, r), y, ry, cnt, m_model.activation, s);
      break;
    case CnnNode::Op::MaxPool:
    case CnnNode::Op::AvgPool:
    case CnnNode::Op::Gap: {
      const auto [ih, iw] = in_hw(j);
      // The backward finds the choices again in the activation's output (act_from_output).
      const bool no_arg = j >= 0 && m_fused.act_from_output[size_t(j)];
      int32_t* arg = no_arg ? nullptr : m_arg[size_t(i)].get();
      launch_pool(pool_kind(n.op), in(j), r_in(j, r), y, ry, arg, int64_t(K) * rows * n.c, ih, iw,
                  n.h, n.w, s);
      break;
    }
    case CnnNode::Op::GroupNorm:
      launch_group_norm(in(j), r_in(j, r), m_xh[size_t(i)].get(),
                        r ? m_rxh[size_t(i)].get() : nullptr, y, ry, m_stats[size_t(i)].get(), mb.w,
                        mb.w_stride, mb.v, mb.v_stride, n.conv.b_offset, n.c, n.groups, rows,
                        n.h * n.w, K, s);
      break;
    case CnnNode::Op::Add:
      if (n.conv.w_offset >= 0) {  // the 1 x 1 shortcut
        conv_forward(i, n.conv, n.other, y, ry, -1, mb, rows, gemm, s);
      } else {
        CUDA_CHECK(cudaMemcpyAsync(y, in(n.other), size_t(cnt) * sizeof(float),
                                   cudaMemcpyDeviceToDevice, s));
        if (ry) {
          if (const float* r_other = r_in(n.other, r))
            CUDA_CHECK(cudaMemcpyAsync(ry, r_other, size_t(cnt) * sizeof(float),
                                       cudaMemcpyDeviceToDevice, s));
          else
            CUDA_CHECK(cudaMemsetAsync(ry, 0, size_t(cnt) * sizeof(float), s));
        }
      }
      launch_add(y, in(j), cnt, s);
      if (const float* rx = r_in(j, r)) launch_add(ry, rx, cnt, s);
      break;
  }
}

void BatchedCnn::backward_node(int i, const ModelBatch& mb, int rows, float* out,
                               int64_t out_stride, float beta, const Gemm& gemm, cudaStream_t s) {
  const CnnNode& n = m_model.nodes[size_t(i)];
  const bool r = mb.v != nullptr;
  const int K = mb.count, j = n.input;
  const float* dy = m_dy[size_t(i)].get();
  const float* rdy = r ? m_rdy[size_t(i)].get() : nullptr;
  float* dx = j < 0 ? nullptr : m_dy[size_t(j)].get();
  float* rdx = j < 0 || !r ? nullptr : m_rdy[size_t(j)].get();
  const int64_t cnt = count(n, K, rows);
  switch (n.op) {
    case CnnNode::Op::Conv:
      conv_backward(i, n.conv, j, dy, rdy, mb, rows, out, out_stride, beta, gemm, s);
      break;
    case CnnNode::Op::Act:
      if (m_fused.act_in_pool[size_t(i)]) break;  // its reader, a pool, ran it
      if (dx)
        launch_act_backward_add(in(j), r_in(j, r), dy, rdy, dx, rdx, cnt, m_model.activation,
                                accumulates(j), s);
      break;
    case CnnNode::Op::MaxPool:
    case CnnNode::Op::AvgPool:
    case CnnNode::Op::Gap:
      if (dx) {
        const auto [ih, iw] = in_hw(j);
        const int64_t planes = int64_t(K) * rows * n.c;
        if (m_fused.act_in_pool[size_t(j)]) {  // through the activation j to its input z
          const int z = m_model.nodes[size_t(j)].input;
          // Without R, z's weight gradient reads this pool's dy itself (weight_grad_through_pool).
          if (!r && m_fused.weight_grad_through_pool[size_t(z)] == i) break;
          // The activation's derivatives from its input z, or from its output (act_from_output).
          const bool of_output = m_fused.act_from_output[size_t(j)];
          launch_pool_act_backward(pool_kind(n.op), dy, rdy,
                                   of_output ? nullptr : m_arg[size_t(i)].get(),
                                   of_output ? in(j) : in(z), of_output, r_in(z, r),
                                   m_dy[size_t(z)].get(), r ? m_rdy[size_t(z)].get() : nullptr,
                                   planes, ih, iw, n.h, n.w, m_model.activation, accumulates(z), s);
        } else {
          launch_pool_backward(pool_kind(n.op), dy, rdy, m_arg[size_t(i)].get(), dx, rdx, planes,
                               ih, iw, n.h, n.w, accumulates(j), s);
        }
      }
      break;
    case CnnNode::Op::GroupNorm: {
      // The scales' gradient sum dY x^ (R: R{dY} x^ + dY R{x^}), the shifts' sum dY (R{dY}).
      const float* xh = m_xh[size_t(i)].get();
      const float* rxh = r ? m_rxh[size_t(i)].get() : nullptr;
      const int64_t cols = int64_t(rows) * n.h * n.w;
      launch_channel_sums(r ? rdy : dy, xh, r ? dy : nullptr, rxh, n.c, cols, K, out, out_stride,
                          n.conv.b_offset, beta, s);
      launch_channel_sums(r ? rdy : dy, nullptr, nullptr, nullptr, n.c, cols, K, out, out_stride,
                          n.conv.b_offset + n.c, beta, s);
      if (dx)
        launch_group_norm_backward(dy, rdy, xh, rxh, m_stats[size_t(i)].get(), mb.w, mb.w_stride,
                                   mb.v, mb.v_stride, n.conv.b_offset, n.c, n.groups, rows,
                                   n.h * n.w, K, accumulates(j), dx, rdx, s);
      break;
    }
    case CnnNode::Op::Add:
      if (dx) launch_add_or_copy(dx, dy, cnt, accumulates(j), s);
      if (rdx) launch_add_or_copy(rdx, rdy, cnt, accumulates(j), s);
      if (n.conv.w_offset >= 0) {
        conv_backward(i, n.conv, n.other, dy, rdy, mb, rows, out, out_stride, beta, gemm, s);
      } else if (n.other >= 0) {
        launch_add_or_copy(m_dy[size_t(n.other)].get(), dy, cnt, accumulates(n.other), s);
        if (r) launch_add_or_copy(m_rdy[size_t(n.other)].get(), rdy, cnt, accumulates(n.other), s);
      }
      break;
  }
}

void BatchedCnn::forward(const ModelBatch& mb, const RowBatch& rb, const Gemm& gemm,
                         cudaStream_t s) {
  check_fits(mb, rb);
  const int K = mb.count, R = rb.count, last = int(m_model.nodes.size()) - 1;
  launch_load_image(rb.x, rb.x_stride, R, K, m_model.image_c,
                    int64_t(m_model.image_h) * m_model.image_w, m_image.get(), s);
  for (int i = 0; i <= last; ++i) forward_node(i, mb, R, gemm, s);
  // The classifier's [k][classes][row] as the loss's [k][row][classes].
  launch_batched_transpose(value(last), m_logits.get(), K, m_model.classes, R, s);
  if (mb.v)
    launch_batched_transpose(m_ry[size_t(last)].get(), m_rlogits.get(), K, m_model.classes, R, s);
}

void BatchedCnn::loss(const ModelBatch& mb, const RowBatch& rb, float scale, cudaStream_t s) {
  check_fits(mb, rb);
  launch_softmax_xent(m_logits.get(), mb.v ? m_rlogits.get() : nullptr, rb.y, rb.y_stride, rb.count,
                      mb.count, m_model.classes, scale, m_row_loss.get(), m_row_correct.get(), s);
}

void BatchedCnn::backward(const ModelBatch& mb, const RowBatch& rb, float* out, int64_t out_stride,
                          float beta, const Gemm& gemm, cudaStream_t s) {
  check_fits(mb, rb);
  const bool r = mb.v != nullptr;
  const int K = mb.count, R = rb.count, last = int(m_model.nodes.size()) - 1;
  for (int i = 0; i < last; ++i) {
    // Its one reader stores all of it, or (cnn_pair_sizes's grad 0) nobody writes it at all.
    if (!accumulates(i) || m_dy[size_t(i)].empty()) continue;
    const size_t bytes = size_t(count(m_model.nodes[size_t(i)], K, R)) * sizeof(float);
    CUDA_CHECK(cudaMemsetAsync(m_dy[size_t(i)].get(), 0, bytes, s));
    if (r) CUDA_CHECK(cudaMemsetAsync(m_rdy[size_t(i)].get(), 0, bytes, s));
  }
  // dL/dz (and R{dL/dz}) that loss() left in place of the logits, back as [k][classes][row].
  launch_batched_transpose(m_logits.get(), m_dy[size_t(last)].get(), K, R, m_model.classes, s);
  if (r)
    launch_batched_transpose(m_rlogits.get(), m_rdy[size_t(last)].get(), K, R, m_model.classes, s);
  for (int i = last; i >= 0; --i) backward_node(i, mb, R, out, out_stride, beta, gemm, s);
}

}  // namespace gossamer
