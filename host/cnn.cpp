// The passes of cnn.hpp: one function walks the nodes forward (with R where an HVP is asked) and
// back, so the loss, the gradient and the HVP share every line of the layers' math.
#include "cnn.hpp"

#include <algorithm>
#include <array>
#include <cmath>

namespace gossamer {
namespace {

template <class T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;

enum class Mode { Logits, Loss, Grad, Hvp };

// The output columns ow of kernel column j whose input column ow s + j - pad lies in [0, in_w):
// [first, last), so that the loops over them need no test per element (and vectorize at stride 1).
struct ValidColumns {
  int first, last;
};
ValidColumns valid_columns(const ConvShape& s, int j) {
  const int lo = s.pad - j, hi = s.in_w - 1 - j + s.pad;  // ow s >= lo and ow s <= hi
  const int first = lo <= 0 ? 0 : (lo + s.stride - 1) / s.stride;
  const int last = hi < 0 ? 0 : std::min(s.out_w, hi / s.stride + 1);
  return {std::min(first, last), last};
}

// col[(c, i, j)][(b, oh, ow)] = x[c][b, oh s + i - pad, ow s + j - pad] (0 outside).
template <class T>
void im2col(const ConvShape& s, int batch, const RowMat<T>& x, RowMat<T>& col) {
  const int64_t in_hw = int64_t(s.in_h) * s.in_w;
  col.resize(int64_t(s.cin) * s.kh * s.kw, int64_t(batch) * s.out_h * s.out_w);
  for (int c = 0; c < s.cin; ++c)
    for (int i = 0; i < s.kh; ++i)
      for (int j = 0; j < s.kw; ++j) {
        T* dst = col.row((int64_t(c) * s.kh + i) * s.kw + j).data();
        const auto [first, last] = valid_columns(s, j);
        for (int b = 0; b < batch; ++b)
          for (int oh = 0; oh < s.out_h; ++oh) {
            T* out = dst + (int64_t(b) * s.out_h + oh) * s.out_w;
            const int ih = oh * s.stride + i - s.pad;
            if (ih < 0 || ih >= s.in_h) {
              std::fill(out, out + s.out_w, T(0));
              continue;
            }
            const T* in = x.row(c).data() + b * in_hw + int64_t(ih) * s.in_w;
            const int shift = j - s.pad;
            std::fill(out, out + first, T(0));
            if (s.stride == 1)  // a copy
              std::copy(in + first + shift, in + last + shift, out + first);
            else
              for (int ow = first; ow < last; ++ow) out[ow] = in[ow * s.stride + shift];
            std::fill(out + last, out + s.out_w, T(0));
          }
      }
}

// The adjoint of im2col: dx += col2im(dcol).
template <class T>
void col2im_add(const ConvShape& s, int batch, const RowMat<T>& dcol, RowMat<T>& dx) {
  const int64_t in_hw = int64_t(s.in_h) * s.in_w;
  for (int c = 0; c < s.cin; ++c)
    for (int i = 0; i < s.kh; ++i)
      for (int j = 0; j < s.kw; ++j) {
        const T* src = dcol.row((int64_t(c) * s.kh + i) * s.kw + j).data();
        const auto [first, last] = valid_columns(s, j);
        for (int b = 0; b < batch; ++b)
          for (int oh = 0; oh < s.out_h; ++oh) {
            const int ih = oh * s.stride + i - s.pad;
            if (ih < 0 || ih >= s.in_h) continue;
            const T* d = src + (int64_t(b) * s.out_h + oh) * s.out_w;
            T* in = dx.row(c).data() + b * in_hw + int64_t(ih) * s.in_w;
            const int shift = j - s.pad;
            if (s.stride == 1)  // contiguous: vectorized
              for (int ow = first; ow < last; ++ow) in[ow + shift] += d[ow];
            else
              for (int ow = first; ow < last; ++ow) in[ow * s.stride + shift] += d[ow];
          }
      }
}

template <class T>
class Pass {
 public:
  Pass(const ModelSpec& m, const T* w, const T* v, int batch, Mode mode, CnnWorkspace<T>& ws)
      : m_m(m), m_w(w), m_v(v), m_b(batch), m_mode(mode), ws(ws) {
    const size_t n = m.nodes.size();
    for (auto* a : {&ws.y, &ws.ry, &ws.dy, &ws.rdy, &ws.col, &ws.rcol}) a->resize(n);
    ws.arg.resize(n);
    ws.stats.resize(n);
  }

  // The image rows (batch x c h w) as [c][sample h w].
  void load(const ConstRowMap<T>& x) {
    const int64_t hw = int64_t(m_m.image_h) * m_m.image_w;
    ws.image.resize(m_m.image_c, int64_t(m_b) * hw);
    for (int b = 0; b < m_b; ++b)
      for (int c = 0; c < m_m.image_c; ++c)
        std::copy_n(x.row(b).data() + c * hw, hw, ws.image.row(c).data() + b * hw);
  }

  void forward() {
    for (size_t i = 0; i < m_m.nodes.size(); ++i) forward_node(int(i));
  }

  // The loss of the last node's logits; with a backward mode, dY (and R{dY}) of the last node.
  BatchResult loss(const int32_t* y) {
    const int last = int(m_m.nodes.size()) - 1;
    RowMat<T>& logits = ws.logits;
    logits = ws.y[size_t(last)].transpose();
    const T scale = m_mode == Mode::Loss ? T(1) : T(1) / T(m_b);
    BatchResult r;
    for (Eigen::Index i = 0; i < logits.rows(); ++i) {
      bool correct = false;
      r.loss_sum += double(softmax_xent_row(logits.row(i).data(), int(logits.cols()), y[i], scale, &correct));
      r.correct += correct;
    }
    if (m_mode == Mode::Loss) return r;
    ws.dy[size_t(last)] = logits.transpose();
    if (m_mode == Mode::Hvp) {
      // R{dZ} = P .* (R{Z} - rowsum(P .* R{Z})) / B with P the softmax (rows: samples).
      RowMat<T> p = logits * T(m_b);
      for (Eigen::Index i = 0; i < p.rows(); ++i) p(i, y[i]) += T(1);
      const RowMat<T> rz = ws.ry[size_t(last)].transpose();
      const Vec<T> dot = p.cwiseProduct(rz).rowwise().sum();
      ws.rdy[size_t(last)] = (p.cwiseProduct(rz.colwise() - dot) / T(m_b)).transpose();
    }
    return r;
  }

  // Every parameter's gradient (or, for an HVP, R{gradient} = H v) into out.
  void backward(T* out) {
    const int last = int(m_m.nodes.size()) - 1;
    for (int i = 0; i < last; ++i) {
      const CnnNode& n = m_m.nodes[size_t(i)];
      ws.dy[size_t(i)].setZero(n.c, int64_t(m_b) * n.h * n.w);
      if (hvp()) ws.rdy[size_t(i)].setZero(n.c, int64_t(m_b) * n.h * n.w);
    }
    for (int i = last; i >= 0; --i) backward_node(i, out);
  }

 private:
  bool hvp() const { return m_mode == Mode::Hvp; }
  const RowMat<T>& in(int j) const { return j < 0 ? ws.image : ws.y[size_t(j)]; }
  const RowMat<T>* r_in(int j) const { return j < 0 || !hvp() ? nullptr : &ws.ry[size_t(j)]; }
  static ConstRowMap<T> weight(const T* p, const ConvShape& s) {
    return ConstRowMap<T>(p + s.w_offset, s.cout, int64_t(s.cin) * s.kh * s.kw);
  }
  static Eigen::Map<const Vec<T>> bias(const T* p, const ConvShape& s) {
    return Eigen::Map<const Vec<T>>(p + s.b_offset, s.cout);
  }

  // y (and ry) = the convolution of input j; its columns kept in slot i for the backward pass.
  void conv_forward(const ConvShape& s, int j, int i, RowMat<T>& y, RowMat<T>* ry) {
    im2col(s, m_b, in(j), ws.col[size_t(i)]);
    y.noalias() = weight(m_w, s) * ws.col[size_t(i)];
    y.colwise() += bias(m_w, s);
    if (!ry) return;
    ry->noalias() = weight(m_v, s) * ws.col[size_t(i)];
    ry->colwise() += bias(m_v, s);
    if (const RowMat<T>* rx = r_in(j)) {
      im2col(s, m_b, *rx, ws.rcol[size_t(i)]);
      ry->noalias() += weight(m_w, s) * ws.rcol[size_t(i)];
    }
  }

  // The convolution's parameters' gradient (or H v) from dY (and R{dY}), and dX (R{dX}) into
  // input j's gradients.
  void conv_backward(const ConvShape& s, int j, int i, const RowMat<T>& dy, const RowMat<T>* rdy,
                     T* out) {
    Eigen::Map<RowMat<T>> gw(out + s.w_offset, s.cout, int64_t(s.cin) * s.kh * s.kw);
    Eigen::Map<Vec<T>> gb(out + s.b_offset, s.cout);
    if (hvp()) {
      gw.noalias() = *rdy * ws.col[size_t(i)].transpose();
      if (r_in(j)) gw.noalias() += dy * ws.rcol[size_t(i)].transpose();
      gb = rdy->rowwise().sum();
    } else {
      gw.noalias() = dy * ws.col[size_t(i)].transpose();
      gb = dy.rowwise().sum();
    }
    if (j < 0) return;  // the image needs no gradient
    ws.dcol.noalias() = weight(m_w, s).transpose() * dy;
    col2im_add(s, m_b, ws.dcol, ws.dy[size_t(j)]);
    if (!hvp()) return;
    ws.rdcol.noalias() = weight(m_w, s).transpose() * *rdy;
    ws.rdcol.noalias() += weight(m_v, s).transpose() * dy;
    col2im_add(s, m_b, ws.rdcol, ws.rdy[size_t(j)]);
  }

  // A 2 x 2 pool's windows: f(o, window) for each output element o, window its four input
  // elements in row order.
  template <class F>
  void each_pool_window(const CnnNode& n, const CnnNode* src, F&& f) const {
    const int ih = src ? src->h : m_m.image_h, iw = src ? src->w : m_m.image_w;
    for (int b = 0; b < m_b; ++b)
      for (int oh = 0; oh < n.h; ++oh)
        for (int ow = 0; ow < n.w; ++ow) {
          const int64_t base = (int64_t(b) * ih + 2 * oh) * iw + 2 * ow;
          const std::array<int64_t, 4> window{base, base + 1, base + iw, base + iw + 1};
          f((int64_t(b) * n.h + oh) * n.w + ow, window);
        }
  }

  // The 2 x 2 pools' and the global average's maps from input element to output element.
  template <class F>
  void each_window(const CnnNode& n, const CnnNode* src, F&& f) const {
    if (n.op != CnnNode::Op::Gap) {
      each_pool_window(n, src, [&](int64_t o, const std::array<int64_t, 4>& window) {
        for (int64_t e : window) f(o, e);
      });
      return;
    }
    const int64_t hw = src ? int64_t(src->h) * src->w : int64_t(m_m.image_h) * m_m.image_w;
    for (int64_t b = 0; b < m_b; ++b)
      for (int64_t p = 0; p < hw; ++p) f(b, b * hw + p);
  }
  const CnnNode* node(int j) const { return j < 0 ? nullptr : &m_m.nodes[size_t(j)]; }
  int64_t window(const CnnNode& n, int j) const {
    return n.op == CnnNode::Op::Gap ? int64_t(node(j) ? node(j)->h * node(j)->w : m_m.image_h * m_m.image_w) : 4;
  }

  // f(c, e) over the elements (channel c, column e) of sample b's group g.
  template <class F>
  static void each_in_group(const CnnNode& n, int b, int g, F&& f) {
    const int cg = n.c / n.groups;
    const int64_t hw = int64_t(n.h) * n.w;
    for (int c = g * cg; c < (g + 1) * cg; ++c)
      for (int64_t p = 0; p < hw; ++p) f(c, int64_t(b) * hw + p);
  }
  static double group_size(const CnnNode& n) { return double(n.c / n.groups) * n.h * n.w; }

  // x^ kept in col[i] (R{x^} in rcol[i]), sigma and R{sigma} in stats[i].
  void group_norm_forward(const CnnNode& n, int j, int i, RowMat<T>& y, RowMat<T>* ry) {
    const RowMat<T>& x = in(j);
    const RowMat<T>* rx = r_in(j);
    RowMat<T>& xh = ws.col[size_t(i)];
    RowMat<T>& rxh = ws.rcol[size_t(i)];
    std::vector<T>& st = ws.stats[size_t(i)];
    const int G = n.groups;
    st.assign(size_t(2 * m_b * G), T(0));
    xh.resize(x.rows(), x.cols());
    y.resize(x.rows(), x.cols());
    if (ry) rxh.setZero(x.rows(), x.cols()), ry->resize(x.rows(), x.cols());
    const T* scale = m_w + n.conv.b_offset;
    const T* shift = scale + n.c;
    const double size = group_size(n);
    for (int b = 0; b < m_b; ++b)
      for (int g = 0; g < G; ++g) {
        double sum = 0, sq = 0;
        each_in_group(n, b, g, [&](int c, int64_t e) { sum += double(x(c, e)); });
        const double mu = sum / size;
        each_in_group(n, b, g, [&](int c, int64_t e) { sq += (double(x(c, e)) - mu) * (double(x(c, e)) - mu); });
        const double sigma = std::sqrt(sq / size + 1e-5);
        st[size_t(b * G + g)] = T(sigma);
        each_in_group(n, b, g, [&](int c, int64_t e) {
          xh(c, e) = T((double(x(c, e)) - mu) / sigma);
          y(c, e) = (T(1) + scale[c]) * xh(c, e) + shift[c];
        });
        if (!ry || !rx) continue;
        double rsum = 0, a = 0;
        each_in_group(n, b, g, [&](int c, int64_t e) {
          rsum += double((*rx)(c, e));
          a += double(xh(c, e)) * double((*rx)(c, e));
        });
        const double rmu = rsum / size, rsigma = a / size;
        st[size_t(m_b * G + b * G + g)] = T(rsigma);
        each_in_group(n, b, g, [&](int c, int64_t e) {
          rxh(c, e) = T((double((*rx)(c, e)) - rmu - double(xh(c, e)) * rsigma) / sigma);
        });
      }
    if (!ry) return;
    const T* rscale = m_v + n.conv.b_offset;
    const T* rshift = rscale + n.c;
    for (int c = 0; c < n.c; ++c)
      ry->row(c) = rscale[c] * xh.row(c) + (T(1) + scale[c]) * rxh.row(c) +
                   RowMat<T>::Constant(1, x.cols(), rshift[c]);
  }

  void group_norm_backward(const CnnNode& n, int j, int i, const RowMat<T>& dy,
                           const RowMat<T>* rdy, T* out) {
    const RowMat<T>& xh = ws.col[size_t(i)];
    const RowMat<T>& rxh = ws.rcol[size_t(i)];
    const std::vector<T>& st = ws.stats[size_t(i)];
    const T* scale = m_w + n.conv.b_offset;
    for (int c = 0; c < n.c; ++c) {  // the scales' and shifts' gradients (or H v)
      T* gs = out + n.conv.b_offset;
      if (rdy) {
        gs[c] = rdy->row(c).dot(xh.row(c)) + dy.row(c).dot(rxh.row(c));
        gs[n.c + c] = rdy->row(c).sum();
      } else {
        gs[c] = dy.row(c).dot(xh.row(c));
        gs[n.c + c] = dy.row(c).sum();
      }
    }
    if (j < 0) return;
    const T* rscale = rdy ? m_v + n.conv.b_offset : nullptr;
    const int G = n.groups;
    const double size = group_size(n);
    const auto dxh_of = [&](int c, int64_t e) { return double(dy(c, e)) * (1 + double(scale[c])); };
    for (int b = 0; b < m_b; ++b)
      for (int g = 0; g < G; ++g) {
        const double sigma = double(st[size_t(b * G + g)]);
        double a = 0, bb = 0;  // mean(dx^), mean(dx^ x^)
        each_in_group(n, b, g, [&](int c, int64_t e) {
          const double dxh = dxh_of(c, e);
          a += dxh;
          bb += dxh * double(xh(c, e));
        });
        a /= size, bb /= size;
        const auto dx_of = [&](int c, int64_t e) {
          return (dxh_of(c, e) - a - double(xh(c, e)) * bb) / sigma;
        };
        each_in_group(n, b, g, [&](int c, int64_t e) { ws.dy[size_t(j)](c, e) += T(dx_of(c, e)); });
        if (!rdy) continue;
        const double rsigma = double(st[size_t(m_b * G + b * G + g)]);
        const auto rdxh_of = [&](int c, int64_t e) {
          return double((*rdy)(c, e)) * (1 + double(scale[c])) + double(dy(c, e)) * double(rscale[c]);
        };
        double ra = 0, rb = 0;
        each_in_group(n, b, g, [&](int c, int64_t e) {
          const double rdxh = rdxh_of(c, e);
          ra += rdxh;
          rb += rdxh * double(xh(c, e)) + dxh_of(c, e) * double(rxh(c, e));
        });
        ra /= size, rb /= size;
        each_in_group(n, b, g, [&](int c, int64_t e) {
          const double rdx = -rsigma / sigma * dx_of(c, e) +
                             (rdxh_of(c, e) - ra - double(rxh(c, e)) * bb - double(xh(c, e)) * rb) / sigma;
          ws.rdy[size_t(j)](c, e) += T(rdx);
        });
      }
  }

  void forward_node(int i) {
    const CnnNode& n = m_m.nodes[size_t(i)];
    RowMat<T>& y = ws.y[size_t(i)];
    RowMat<T>* ry = hvp() ? &ws.ry[size_t(i)] : nullptr;
    const int j = n.input;
    const int64_t cols = int64_t(m_b) * n.h * n.w;
    const RowMat<T>* rx = r_in(j);
    const Activation act = m_m.activation;
    switch (n.op) {
      case CnnNode::Op::Conv:
        conv_forward(n.conv, j, i, y, ry);
        break;
      case CnnNode::Op::Act:
        apply_activation<ActOf::Value>(act, in(j), y);
        if (ry) {
          if (rx) {
            apply_activation<ActOf::Derivative>(act, in(j), *ry);
            ry->array() *= rx->array();
          } else {
            ry->setZero(n.c, cols);
          }
        }
        break;
      case CnnNode::Op::MaxPool: {
        y.resize(n.c, cols);
        std::vector<int64_t>& arg = ws.arg[size_t(i)];
        arg.resize(size_t(n.c * cols));
        for (int c = 0; c < n.c; ++c) {
          const T* x = in(j).row(c).data();
          int64_t* a = arg.data() + int64_t(c) * cols;
          T* out = y.row(c).data();
          each_pool_window(n, node(j), [&](int64_t o, const std::array<int64_t, 4>& window) {
            int64_t best = window[0];
            for (int q = 1; q < 4; ++q)
              if (x[window[q]] > x[best]) best = window[q];  // the first of equal maxima
            a[o] = best;
            out[o] = x[best];
          });
        }
        if (ry) {
          ry->setZero(n.c, cols);
          if (rx)
            for (int c = 0; c < n.c; ++c)
              for (int64_t o = 0; o < cols; ++o) (*ry)(c, o) = (*rx)(c, arg[size_t(int64_t(c) * cols + o)]);
        }
        break;
      }
      case CnnNode::Op::AvgPool:
      case CnnNode::Op::Gap: {
        const T scale = T(1) / T(window(n, j));
        const auto average = [&](const RowMat<T>& x, RowMat<T>& out) {
          out.setZero(n.c, cols);
          for (int c = 0; c < n.c; ++c) {
            const T* src = x.row(c).data();
            T* dst = out.row(c).data();
            each_window(n, node(j), [&](int64_t o, int64_t e) { dst[o] += src[e]; });
          }
          out *= scale;
        };
        average(in(j), y);
        if (ry) {
          if (rx)
            average(*rx, *ry);
          else
            ry->setZero(n.c, cols);
        }
        break;
      }
      case CnnNode::Op::GroupNorm:
        group_norm_forward(n, j, i, y, ry);
        break;
      case CnnNode::Op::Add:
        if (n.conv.w_offset >= 0) {
          conv_forward(n.conv, n.other, i, y, ry);
        } else {
          y = in(n.other);
          if (ry) {
            if (const RowMat<T>* r_other = r_in(n.other))
              *ry = *r_other;
            else
              ry->setZero(n.c, cols);  // the image's R is 0
          }
        }
        y += in(j);
        if (ry && rx) *ry += *rx;
        break;
    }
  }

  void backward_node(int i, T* out) {
    const CnnNode& n = m_m.nodes[size_t(i)];
    const RowMat<T>& dy = ws.dy[size_t(i)];
    const RowMat<T>* rdy = hvp() ? &ws.rdy[size_t(i)] : nullptr;
    const int j = n.input;
    const Activation act = m_m.activation;
    switch (n.op) {
      case CnnNode::Op::Conv:
        conv_backward(n.conv, j, i, dy, rdy, out);
        break;
      case CnnNode::Op::Act: {
        if (j < 0) break;
        RowMat<T>& d = ws.act_scratch;
        apply_activation<ActOf::Derivative>(act, in(j), d);
        ws.dy[size_t(j)] += d.cwiseProduct(dy);
        if (rdy) {
          ws.rdy[size_t(j)] += d.cwiseProduct(*rdy);
          if (const RowMat<T>* rx = r_in(j)) {
            apply_activation<ActOf::SecondDerivative>(act, in(j), d);
            ws.rdy[size_t(j)] += d.cwiseProduct(*rx).cwiseProduct(dy);
          }
        }
        break;
      }
      case CnnNode::Op::MaxPool: {
        if (j < 0) break;
        const int64_t cols = dy.cols();
        const std::vector<int64_t>& arg = ws.arg[size_t(i)];
        for (int c = 0; c < n.c; ++c)
          for (int64_t o = 0; o < cols; ++o) {
            const int64_t e = arg[size_t(int64_t(c) * cols + o)];
            ws.dy[size_t(j)](c, e) += dy(c, o);
            if (rdy) ws.rdy[size_t(j)](c, e) += (*rdy)(c, o);
          }
        break;
      }
      case CnnNode::Op::AvgPool:
      case CnnNode::Op::Gap: {
        if (j < 0) break;
        const T scale = T(1) / T(window(n, j));
        const auto spread = [&](const RowMat<T>& d, RowMat<T>& target) {
          for (int c = 0; c < n.c; ++c) {
            const T* src = d.row(c).data();
            T* dst = target.row(c).data();
            each_window(n, node(j), [&](int64_t o, int64_t e) { dst[e] += scale * src[o]; });
          }
        };
        spread(dy, ws.dy[size_t(j)]);
        if (rdy) spread(*rdy, ws.rdy[size_t(j)]);
        break;
      }
      case CnnNode::Op::GroupNorm:
        group_norm_backward(n, j, i, dy, rdy, out);
        break;
      case CnnNode::Op::Add:
        ws.dy[size_t(j)] += dy;  // an Add's input is its block's last convolution, never the image
        if (rdy) ws.rdy[size_t(j)] += *rdy;
        if (n.conv.w_offset >= 0) {
          conv_backward(n.conv, n.other, i, dy, rdy, out);
        } else if (n.other >= 0) {
          ws.dy[size_t(n.other)] += dy;
          if (rdy) ws.rdy[size_t(n.other)] += *rdy;
        }
        break;
    }
  }

  const ModelSpec& m_m;
  const T* m_w;
  const T* m_v;
  const int m_b;
  const Mode m_mode;
  CnnWorkspace<T>& ws;
};

template <class T>
BatchResult run(const ModelSpec& model, const T* w, const T* v, const ConstRowMap<T>& x,
                const int32_t* y, T* out, Mode mode, CnnWorkspace<T>& ws) {
  Pass<T> pass(model, w, v, int(x.rows()), mode, ws);
  pass.load(x);
  pass.forward();
  if (mode == Mode::Logits) return {};
  const BatchResult r = pass.loss(y);
  if (mode == Mode::Grad || mode == Mode::Hvp) pass.backward(out);
  return r;
}

}  // namespace

template <class T>
const RowMat<T>& cnn_logits(const ModelSpec& model, const T* w, const ConstRowMap<T>& x,
                            CnnWorkspace<T>& ws) {
  run<T>(model, w, nullptr, x, nullptr, nullptr, Mode::Logits, ws);
  ws.logits = ws.y.back().transpose();
  return ws.logits;
}

template <class T>
BatchResult cnn_loss(const ModelSpec& model, const T* w, const ConstRowMap<T>& x, const int32_t* y,
                     CnnWorkspace<T>& ws) {
  return run<T>(model, w, nullptr, x, y, nullptr, Mode::Loss, ws);
}

template <class T>
BatchResult cnn_loss_grad(const ModelSpec& model, const T* w, const ConstRowMap<T>& x,
                          const int32_t* y, T* g, CnnWorkspace<T>& ws) {
  return run<T>(model, w, nullptr, x, y, g, Mode::Grad, ws);
}

template <class T>
BatchResult cnn_hvp(const ModelSpec& model, const T* w, const T* v, const ConstRowMap<T>& x,
                    const int32_t* y, T* hv, CnnWorkspace<T>& ws) {
  return run<T>(model, w, v, x, y, hv, Mode::Hvp, ws);
}

#define GOSSAMER_CNN(T)                                                                           \
  template const RowMat<T>& cnn_logits<T>(const ModelSpec&, const T*, const ConstRowMap<T>&,      \
                                          CnnWorkspace<T>&);                                      \
  template BatchResult cnn_loss<T>(const ModelSpec&, const T*, const ConstRowMap<T>&,             \
                                   const int32_t*, CnnWorkspace<T>&);                             \
  template BatchResult cnn_loss_grad<T>(const ModelSpec&, const T*, const ConstRowMap<T>&,        \
                                        const int32_t*, T*, CnnWorkspace<T>&);                    \
  template BatchResult cnn_hvp<T>(const ModelSpec&, const T*, const T*, const ConstRowMap<T>&,    \
                                  const int32_t*, T*, CnnWorkspace<T>&);
GOSSAMER_CNN(float)
GOSSAMER_CNN(double)
#undef GOSSAMER_CNN

}  // namespace gossamer
