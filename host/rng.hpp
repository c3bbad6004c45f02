// A host-side stream over Philox: a UniformRandomBitGenerator for the one-off draws of a
// run's setup (synthetic data, partition, random graphs, init), each in its own domain.
#pragma once
#include <cstdint>

#include "gossamer/philox.hpp"

namespace gossamer {

class PhiloxStream {
 public:
  using result_type = uint32_t;
  PhiloxStream(uint64_t seed, RngDomain domain, uint32_t stream)
      : m_seed(seed), m_domain(domain), m_stream(stream) {}
  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return 0xFFFFFFFFu; }
  result_type operator()() {
    if (m_used == 4) {
      m_block = philox_draw(m_seed, m_domain, m_stream, m_counter++);
      m_used = 0;
    }
    return m_block.v[m_used++];
  }
  double normal() {
    const uint32_t a = (*this)(), b = (*this)();
    return philox_normal(a, b);
  }
  double uniform() { return philox_uniform((*this)()); }  // (0, 1]

 private:
  uint64_t m_seed;
  RngDomain m_domain;
  uint32_t m_stream;
  uint64_t m_counter = 0;
  Philox4 m_block{};
  int m_used = 4;
};

}  // namespace gossamer
