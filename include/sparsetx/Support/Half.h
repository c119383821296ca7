//===- Half.h - bf16 and fp16 on the host -----------------------*- C++ -*-===//
//
// The two 16-bit formats as the GPU converts them (cvt.rn.bf16.f32,
// cvt.rn.f16.f32): round to nearest even, values beyond the format's range
// become infinities, NaN stays NaN. The CPU backend's gradient conversions
// (the all-reduce in 16 bits) use them, so that the CPU is a bit-exact
// reference for the kernels.
//
//===----------------------------------------------------------------------===//

#ifndef SPARSETX_SUPPORT_HALF_H
#define SPARSETX_SUPPORT_HALF_H

#include <cstdint>
#include <cstring>

namespace sparsetx {

inline uint16_t floatToBF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  // NaN: keep the sign, make sure a mantissa bit survives the truncation
  // (adding the rounding bias could carry a NaN into the exponent or sign).
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu))
    return static_cast<uint16_t>((u >> 16) | 0x0040u);
  // Round to nearest even; a carry into the exponent rounds up to the next
  // binade or to infinity, as it should.
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float bf16ToFloat(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t floatToFP16(float f) {
  // _Float16's conversion is IEEE round to nearest even (overflow to inf).
  _Float16 h = static_cast<_Float16>(f);
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}

inline float fp16ToFloat(uint16_t bits) {
  _Float16 h;
  std::memcpy(&h, &bits, 2);
  return static_cast<float>(h);
}

} // namespace sparsetx

#endif // SPARSETX_SUPPORT_HALF_H
