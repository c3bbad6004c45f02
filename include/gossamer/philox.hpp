// Philox4x32-10 counter-based RNG (Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC 2011), and what gossamer draws from it. A draw is a pure function of
// (key, counter), so the CPU and the GPU produce the same stream with no state to share:
// worker k's minibatch at step t is a function of (seed, k, t) alone.
#pragma once
#include <cmath>
#include <cstdint>

#include "gossamer/hostdevice.hpp"

namespace gossamer {

struct Philox4 {
  uint32_t v[4];
};

GOSSAMER_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// Ten rounds of Philox4x32 on counter c with key (k0, k1).
GOSSAMER_HD Philox4 philox4x32(Philox4 c, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, c.v[0], hi0, lo0);
    philox_mulhilo(0xCD9E8D57u, c.v[2], hi1, lo1);
    c = Philox4{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

// Stream domains: the first counter word says what a draw is for, so streams never overlap.
enum class RngDomain : uint32_t {
  Sample = 1,     // minibatch permutation: counter (domain, worker, epoch lo, epoch hi)
  Init = 2,       // weight init: (domain, worker, index lo, index hi)
  Partition = 3,  // host-side partition and topology draws
  Topology = 4,
  Data = 5,       // synthetic data
  Curvature = 6,  // probes and perturbations of the curvature estimators
  Augment = 7,    // data augmentation: (domain, worker, counter lo, counter hi)
};

GOSSAMER_HD Philox4 philox_draw(uint64_t seed, RngDomain domain, uint32_t a, uint64_t b) {
  return philox4x32(Philox4{{static_cast<uint32_t>(domain), a, static_cast<uint32_t>(b),
                             static_cast<uint32_t>(b >> 32)}},
                    static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Uniform in (0, 1], from 32 bits.
GOSSAMER_HD double philox_uniform(uint32_t bits) {
  return (bits + 1.0) * (1.0 / 4294967296.0);
}

// Standard normal by Box-Muller from two 32-bit words.
GOSSAMER_HD double philox_normal(uint32_t u0, uint32_t u1) {
  const double r = sqrt(-2.0 * log(philox_uniform(u0)));
  return r * cos(6.283185307179586 * philox_uniform(u1));
}

// The curvature estimators' random vectors: entry i of probe `stream` (the Curvature domain's
// counter i). Rademacher: +-1 from bit 0 of the first word; Normal: Box-Muller. A function of
// (seed, stream, i) alone, so the host and the device draw the same probes.
enum class Probe { Rademacher, Normal };

GOSSAMER_HD double curvature_probe(Probe kind, uint64_t seed, uint32_t stream, uint64_t i) {
  const Philox4 r = philox_draw(seed, RngDomain::Curvature, stream, i);
  if (kind == Probe::Rademacher) return (r.v[0] & 1u) ? 1.0 : -1.0;
  return philox_normal(r.v[0], r.v[1]);
}

// The initial value of weight i of a layer with fan_in inputs and fan_out outputs, for the worker
// whose Init stream is `stream`: N(0, std^2) with Kaiming std sqrt(2 / fan_in) (He et al. 2015)
// or Xavier std sqrt(2 / (fan_in + fan_out)) (Glorot & Bengio 2010). The host (model.cpp, the
// CPU backend) and the CUDA backend's initialization kernel draw the same numbers.
GOSSAMER_HD double initial_weight(bool kaiming, int fan_in, int fan_out, uint64_t seed,
                                  uint32_t stream, uint64_t i) {
  const double std_dev = kaiming ? sqrt(2.0 / fan_in) : sqrt(2.0 / (fan_in + fan_out));
  const Philox4 r = philox_draw(seed, RngDomain::Init, stream, i);
  return std_dev * philox_normal(r.v[0], r.v[1]);
}

// A pseudo-random permutation of {0, ..., n-1}, evaluated at one point i: a balanced
// Feistel network over the smallest even-bit power of two >= n, whose rounds are
// Philox, with cycle walking to stay below n (Black & Rogaway 2002). Expected walks < 4.
GOSSAMER_HD uint64_t philox_permute(uint64_t i, uint64_t n, uint64_t seed, uint32_t worker,
                                    uint64_t epoch) {
  if (n <= 1) return 0;
  int bits = 2;
  while ((uint64_t{1} << bits) < n) bits += 2;
  const int half = bits / 2;
  const uint64_t mask = (uint64_t{1} << half) - 1;
  uint64_t x = i;
  do {
    uint64_t left = x >> half, right = x & mask;
    for (uint32_t round = 0; round < 4; ++round) {
      const Philox4 r =
          philox4x32(Philox4{{static_cast<uint32_t>(RngDomain::Sample) | (round << 8), worker,
                              static_cast<uint32_t>(epoch), static_cast<uint32_t>(right)}},
                     static_cast<uint32_t>(seed),
                     static_cast<uint32_t>(seed >> 32) ^ static_cast<uint32_t>(epoch >> 32));
      const uint64_t next = left ^ (r.v[0] & mask);
      left = right;
      right = next;
    }
    x = (left << half) | right;
  } while (x >= n);
  return x;
}

// Worker k's j-th sample at step t with per-worker batch b, from its shard of size n:
// position p = t*b + j of an endless stream that visits the shard once per epoch in a
// fresh random order (sampling without replacement within an epoch).
GOSSAMER_HD uint64_t minibatch_position(uint64_t seed, uint32_t worker, uint64_t step,
                                        uint32_t batch, uint32_t j, uint64_t shard_size) {
  const uint64_t p = step * batch + j;
  return philox_permute(p % shard_size, shard_size, seed, worker, p / shard_size);
}

}  // namespace gossamer
