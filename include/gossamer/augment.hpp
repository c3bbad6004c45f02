// Data augmentation of image rows (off by default): random crop with zero padding and random
// horizontal flip, as torchvision's RandomCrop(padding) then RandomHorizontalFlip. The draws are a
// function of (seed, worker, step, sample slot): Philox in its own domain, so the CPU backend and
// the CUDA backend's gather kernel augment every minibatch identically, and a resumed run repeats.
// Rows are images in channel planes: value (c, y, x) at c * height * width + y * width + x.
#pragma once
#include <cstdint>

#include "gossamer/philox.hpp"

namespace gossamer {

struct AugmentShape {
  int height = 0, width = 0, channels = 0;
  int crop = 0;  // padding p: the image shifts by (dy, dx) in [-p, p]^2, zeros fill in
  bool flip = false;
  bool on() const { return crop > 0 || flip; }
};

struct AugmentDraw {
  int dy = 0, dx = 0;
  bool flip = false;
};

// Worker `worker`'s sample slot j at `step`: counter (step * batch + j) of stream `worker`.
GOSSAMER_HD AugmentDraw augment_draw(const AugmentShape& a, uint64_t seed, uint32_t worker,
                                     uint64_t step, uint32_t batch, uint32_t j) {
  const Philox4 r = philox_draw(seed, RngDomain::Augment, worker, step * batch + j);
  AugmentDraw d;
  const uint32_t span = 2u * uint32_t(a.crop) + 1u;
  d.dy = a.crop > 0 ? int(r.v[0] % span) - a.crop : 0;
  d.dx = a.crop > 0 ? int(r.v[1] % span) - a.crop : 0;
  d.flip = a.flip && (r.v[2] & 1u);
  return d;
}

// Output value i (0 <= i < channels * height * width) of the augmented row: out(c, y, x) =
// in(c, y + dy, x' + dx) with x' = width - 1 - x when flipped, else x; 0 outside the image.
template <class T>
GOSSAMER_HD T augment_value(const T* in, const AugmentShape& a, const AugmentDraw& d, int64_t i) {
  const int64_t plane = int64_t(a.height) * a.width;
  const int c = int(i / plane), y = int((i % plane) / a.width), x = int(i % a.width);
  const int sy = y + d.dy, sx = (d.flip ? a.width - 1 - x : x) + d.dx;
  if (sy < 0 || sy >= a.height || sx < 0 || sx >= a.width) return T(0);
  return in[c * plane + int64_t(sy) * a.width + sx];
}

}  // namespace gossamer
