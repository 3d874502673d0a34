#include "softmax_kl.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace tfkd {
namespace {

#define TFKD_INLINE inline __attribute__((always_inline))
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TFKD_X86 1
#define TFKD_TARGET(arch) __attribute__((target(arch)))
#endif

template <typename F> struct ExpConstants;
template <> struct ExpConstants<float> {
  using Bits = uint32_t;
  static constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  static constexpr float kLo = -87.0f;
  static constexpr int kMantissa = 23;
  static constexpr int kLogTerms = 4;  // atanh series: error < 1e-9 on |u| <= 0.172
  static constexpr Bits kBias = 127;
  static constexpr float kLn2Hi = 0.693145751953125f, kLn2Lo = 1.428606765330187e-06f;
  // Degree 5, fitted for least maximum relative error on |r| <= ln2/2 (1.7e-7
  // in float32): more accurate than degree 6 Taylor (2.4e-7), one FMA fewer.
  template <typename X>  // float, or a vector of floats
  static TFKD_INLINE X poly(X r) {
    return 1.0f + r * (0.99999970f + r * (0.49999151f + r * (0.16667636f + r * (0.041897930f +
           r * 0.0082903141f))));
  }
};
template <> struct ExpConstants<double> {
  using Bits = uint64_t;
  static constexpr double kMagic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double kLo = -708.0;
  static constexpr int kMantissa = 52;
  static constexpr int kLogTerms = 12;  // atanh series: error < 1e-18 on |u| <= 0.172
  static constexpr Bits kBias = 1023;
  static constexpr double kLn2Hi = 0.6931471803691238, kLn2Lo = 1.9082149292705877e-10;
  static TFKD_INLINE double poly(double r) {  // degree 12 Taylor: error < 2e-16 on |r| <= ln2/2
    return 1.0 + r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 +
           r * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 +
           r * (1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600))))))))))));
  }
};

// exp's range reduction, for a value or a vector of values of F: x = n ln2 + r
// with n an integer and |r| <= ln2 / 2 (ln2 in two parts, so r stays
// accurate). Adding the magic constant 1.5 * 2^mantissa rounds x log2(e) to
// the nearest integer n and leaves n in the low bits of the sum k, returned.
template <typename F, typename X>
TFKD_INLINE X reduce_exp(X x, X* n, X* r) {
  using C = ExpConstants<F>;
  const X k = x * F(1.4426950408889634) + C::kMagic;
  *n = k - C::kMagic;
  *r = (x - *n * C::kLn2Hi) - *n * C::kLn2Lo;
  return k;
}

// Branch-free exp(x) that vectorises inside `omp simd` loops: exp(r) by a
// polynomial, 2^n written into the exponent bits of the scale. Results below the
// smallest normal number (x < kLo) are 0: far below the rounding error of a
// softmax whose largest term is exp(0) = 1; so is -inf. NaN stays NaN, which
// is how the callers find rows with no defined KL. Below kLo the bit
// arithmetic makes garbage, which the last line discards: unsigned, so no
// undefined behaviour. For x <= 0 only: both callers pass logits minus their
// row's maximum.
template <typename F>
TFKD_INLINE F vexp(F x) {
  using C = ExpConstants<F>;
  using Bits = typename C::Bits;
  F n, r;
  const F k = reduce_exp<F>(x, &n, &r);
  Bits kb, mb;
  const F magic = C::kMagic;
  std::memcpy(&kb, &k, sizeof(F));
  std::memcpy(&mb, &magic, sizeof(F));
  const Bits sb = (kb - mb + C::kBias) << C::kMantissa;
  F scale;
  std::memcpy(&scale, &sb, sizeof(F));
  const F y = C::poly(r) * scale;
  return x < C::kLo ? F(0) : y;
}

// Branch-free log(x) for normal x > 0 that vectorises: x = 2^e m with
// m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(u) = 2 (u + u^3/3 + ...) with
// u = (m - 1) / (m + 1), |u| <= 0.172.
template <typename F>
TFKD_INLINE F vlog(F x) {
  using C = ExpConstants<F>;
  using Bits = typename C::Bits;
  constexpr Bits kMantissaMask = (Bits{1} << C::kMantissa) - 1;
  constexpr Bits kOne = C::kBias << C::kMantissa;  // bits of 1.0
  Bits b;
  std::memcpy(&b, &x, sizeof(F));
  using Signed = std::make_signed_t<Bits>;  // int32 lanes for float: no 64-bit conversions
  F e = F(static_cast<Signed>(b >> C::kMantissa) - static_cast<Signed>(C::kBias));
  const Bits mb = (b & kMantissaMask) | kOne;
  F m;
  std::memcpy(&m, &mb, sizeof(F));  // m in [1, 2)
  const bool big = m > F(1.4142135623730951);
  m = big ? m * F(0.5) : m;
  e = big ? e + 1 : e;
  const F u = (m - 1) / (m + 1);
  const F u2 = u * u;
  F series = F(1) / F(2 * C::kLogTerms + 1);
  for (int k = C::kLogTerms - 1; k >= 0; --k) series = series * u2 + F(1) / F(2 * k + 1);
  return e * F(0.6931471805599453) + 2 * u * series;
}

#ifdef TFKD_X86
// AVX-512 float tiles (16 rows, the v4 copy's float tile) get three
// instructions the compiler does not emit from the generic code: vscalefps
// for exp's 2^n, and gathers / scatters for a tile's left-over columns. Each
// helper carries the v4 target instead of TFKD_INLINE: the compiler inlines
// it into the v4 copy, the only caller, once the tile is inlined there.
// row_kl (long rows) stays generic: this exp does not make it faster.
namespace avx512 {
#define TFKD_V4 inline TFKD_TARGET("arch=x86-64-v4")
using Floats = float __attribute__((vector_size(64)));
using Ints = int32_t __attribute__((vector_size(64)));

// vexp's reduction and polynomial; 2^n and the zeros below kLo (NaN kept)
// by one masked vscalefps instead of integer arithmetic and a select.
TFKD_V4 Floats exp(Floats x) {
  using C = ExpConstants<float>;
  Floats n, r;
  reduce_exp<float>(x, &n, &r);
  constexpr int kNotLessThan = 5, kCurrentRounding = 4;  // _CMP_NLT_US, _MM_FROUND_CUR_DIRECTION
  const uint16_t keep = __builtin_ia32_cmpps512_mask(x, Floats{} + C::kLo, kNotLessThan, 0xFFFF,
                                                     kCurrentRounding);
  return __builtin_ia32_scalefps512_mask(C::poly(r), n, Floats{}, keep, kCurrentRounding);
}

// Offsets of column 0 in 16 rows of `a` floats (a <= kMaxTileActions).
TFKD_V4 Ints row_offsets(int64_t a) {
  return Ints{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15} * static_cast<int32_t>(a);
}

// out[l] = x[l * a] for l < 16: one column down a tile's rows.
TFKD_V4 void load_column(const float* x, int64_t a, float* out) {
  const Floats v =
      __builtin_ia32_gathersiv16sf(Floats{}, x, row_offsets(a), 0xFFFF, sizeof(float));
  std::memcpy(out, &v, sizeof(v));
}

// out[l * a] = x[l] for l < 16.
TFKD_V4 void store_column(const float* x, int64_t a, float* out) {
  Floats v;
  std::memcpy(&v, x, sizeof(v));
  __builtin_ia32_scattersiv16sf(out, 0xFFFF, row_offsets(a), v, sizeof(float));
}

// Whether a tile of L rows of F is the AVX-512 float tile: 16 floats fill
// a vector only in the v4 copy (rows_f32_v4), so nothing else runs the above.
template <typename F, int L>
constexpr bool kFloatTile = std::is_same_v<F, float> && L == 16;
#undef TFKD_V4
}  // namespace avx512
#endif

// Rows of at most this many actions go through tile_kl, longer ones row_kl:
// toward 100 actions the tiles' transposes cost as much as they save.
constexpr int64_t kMaxTileActions = 64;

// Whether a row's softmax sums say it has no defined KL (see below).
template <typename F>
TFKD_INLINE bool undefined_sums(F zt, F zs) {
  return (zt != zt) | (zs != zs);
}

template <typename F>
TFKD_INLINE void fill_nan(F* kl, F* g, int64_t a) {
  *kl = std::numeric_limits<F>::quiet_NaN();
  std::fill(g, g + a, std::numeric_limits<F>::quiet_NaN());
}

// Both paths compute, with x = (t - max t) / T and y = (s - max s) / S
// (subtracting the maximum first is exact for nearby values, which keeps
// large logits with small temperatures accurate), e = exp(x), f = exp(y):
//
//   kl   = sum_a p_a (x_a - y_a) + log(zs / zt) = A / zt + log(zs / zt)
//   grad = (f / zs - e / zt) / S
//
// with zt = sum e, zs = sum f and A = sum_a e_a (x_a - y_a), so one pass
// gives the sums and A, and a second turns e and f into the gradient.
// Masked actions (e = 0) add nothing to A: 0 log 0 = 0.
//
// A row holding NaN or +inf, or whose teacher or student logits are all
// -inf, has no defined KL and gets NaN. Exactly those rows have a NaN among
// their x and y (+inf - +inf, -inf - -inf, NaN), as every other x and y lies
// in [-inf, 0]; vexp keeps the NaN, so zt or zs ends NaN just for them (no
// extra work per element).

// One long row: SIMD runs along the actions. `et` is scratch of `a` elements.
template <typename F>
TFKD_INLINE void row_kl(const F* __restrict t, const F* __restrict s, int64_t a, F inv_t,
                        F inv_s, F w, F* __restrict kl, F* __restrict g, F* __restrict et) {
  F mt = -std::numeric_limits<F>::infinity(), ms = mt;
#pragma omp simd reduction(max : mt, ms)
  for (int64_t j = 0; j < a; ++j) {
    mt = t[j] > mt ? t[j] : mt;
    ms = s[j] > ms ? s[j] : ms;
  }
  F zt = 0, zs = 0, acc = 0;
#pragma omp simd reduction(+ : zt, zs, acc)
  for (int64_t j = 0; j < a; ++j) {
    const F x = (t[j] - mt) * inv_t, y = (s[j] - ms) * inv_s;
    const F e = vexp(x), f = vexp(y);
    et[j] = e;
    g[j] = f;
    zt += e;
    zs += f;
    acc += e > 0 ? e * (x - y) : F(0);
  }
  if (undefined_sums(zt, zs)) return fill_nan(kl, g, a);
  const F rt = F(1) / zt, rs = F(1) / zs;
  *kl = acc * rt + std::log(zs * rt);
  const F gt = rt * w * inv_s, gs = rs * w * inv_s;
#pragma omp simd
  for (int64_t j = 0; j < a; ++j) g[j] = g[j] * gs - et[j] * gt;
}

// A vector of L lanes of F (GCC / Clang vector extension); L = the SIMD
// width of the instruction set a kernel is compiled for.
template <typename F, int L>
struct Lanes {
  typedef F type __attribute__((vector_size(L * sizeof(F))));
};

// One butterfly of an in-register transpose: rows `lo` and `lo + K` of an
// L x L block swap their off-diagonal K x K sub-blocks.
template <int K, typename V, int... C>
TFKD_INLINE void butterfly(V& lo, V& hi, std::integer_sequence<int, C...>) {
  constexpr int L = sizeof...(C);
  const V a = __builtin_shufflevector(lo, hi, ((C & K) ? L + C - K : C)...);
  const V b = __builtin_shufflevector(lo, hi, ((C & K) ? L + C : C + K)...);
  lo = a;
  hi = b;
}

// Transposes the L x L block held as L row vectors: log2(L) butterfly stages.
template <int L, int K = L / 2, typename V>
TFKD_INLINE void transpose(V* v) {
  if constexpr (K >= 1) {
    for (int r = 0; r < L; ++r)
      if (!(r & K)) butterfly<K>(v[r], v[r + K], std::make_integer_sequence<int, L>{});
    transpose<L, K / 2>(v);
  }
}

// x: L rows of `a` values (row stride a) -> out[j * L + l] = x[l * a + j].
// Whole L x L blocks go through registers. Each of the last a % L columns
// is read down the L rows (nothing past them) into one vector and stored
// whole: as L scalar stores, the wide loads that follow would wait for them
// (store forwarding fails there).
template <typename F, int L>
TFKD_INLINE void load_transposed(const F* __restrict x, int64_t a, F* __restrict out) {
  using V = typename Lanes<F, L>::type;
  int64_t c0 = 0;
  for (; c0 + L <= a; c0 += L) {
    V v[L];
    for (int l = 0; l < L; ++l) std::memcpy(&v[l], x + l * a + c0, sizeof(V));
    transpose<L>(v);
    for (int j = 0; j < L; ++j) std::memcpy(out + (c0 + j) * L, &v[j], sizeof(V));
  }
#ifdef TFKD_X86
  if constexpr (avx512::kFloatTile<F, L>) {
    for (int64_t j = c0; j < a; ++j) avx512::load_column(x + j, a, out + j * L);
    return;
  }
#endif
  for (int64_t j = c0; j < a; ++j)
#pragma omp simd
    for (int l = 0; l < L; ++l) out[j * L + l] = x[l * a + j];
}

// The inverse: x[j * L + l] -> out[l * a + j], writing only the L rows.
template <typename F, int L>
TFKD_INLINE void store_transposed(const F* __restrict x, int64_t a, F* __restrict out) {
  using V = typename Lanes<F, L>::type;
  int64_t c0 = 0;
  for (; c0 + L <= a; c0 += L) {
    V v[L];
    for (int j = 0; j < L; ++j) std::memcpy(&v[j], x + (c0 + j) * L, sizeof(V));
    transpose<L>(v);
    for (int l = 0; l < L; ++l) std::memcpy(out + l * a + c0, &v[l], sizeof(V));
  }
#ifdef TFKD_X86
  if constexpr (avx512::kFloatTile<F, L>) {
    for (int64_t j = c0; j < a; ++j) avx512::store_column(x + j * L, a, out + j);
    return;
  }
#endif
  for (int64_t j = c0; j < a; ++j)
#pragma omp simd
    for (int l = 0; l < L; ++l) out[l * a + j] = x[j * L + l];
}

// L short rows with the rows in SIMD lanes: the logits are transposed into
// [a][L] scratch, every loop then runs across rows, so a row of a few actions
// (Atari's 18) costs no loop remainder and no horizontal reduction.
// `buf` is scratch of 2 * a * L elements.
template <typename F, int L>
TFKD_INLINE void tile_kl(const F* __restrict t, const F* __restrict s, int64_t a, F inv_t,
                         F inv_s, const F* __restrict w, F* __restrict kl, F* __restrict g,
                         F* __restrict buf) {
  F* et = buf;  // [a][L]: t, then exp(x)
  F* es = buf + a * L;  // s, then exp(y), then the gradient
  load_transposed<F, L>(t, a, et);
  load_transposed<F, L>(s, a, es);
  F mt[L], ms[L], zt[L], zs[L], acc[L];
  for (int l = 0; l < L; ++l) {
    mt[l] = ms[l] = -std::numeric_limits<F>::infinity();
    zt[l] = zs[l] = acc[l] = 0;
  }
  for (int64_t j = 0; j < a; ++j) {
#pragma omp simd
    for (int l = 0; l < L; ++l) {
      const F x = et[j * L + l], y = es[j * L + l];
      mt[l] = x > mt[l] ? x : mt[l];
      ms[l] = y > ms[l] ? y : ms[l];
    }
  }
#ifdef TFKD_X86
  if constexpr (avx512::kFloatTile<F, L>) {  // the loop below, on whole vectors
    using V = avx512::Floats;
    V mtv, msv, ztv{}, zsv{}, accv{};
    std::memcpy(&mtv, mt, sizeof(V));
    std::memcpy(&msv, ms, sizeof(V));
    for (int64_t j = 0; j < a; ++j) {
      V x, y;
      std::memcpy(&x, et + j * L, sizeof(V));
      std::memcpy(&y, es + j * L, sizeof(V));
      x = (x - mtv) * inv_t;
      y = (y - msv) * inv_s;
      const V e = avx512::exp(x), f = avx512::exp(y);
      std::memcpy(et + j * L, &e, sizeof(V));
      std::memcpy(es + j * L, &f, sizeof(V));
      ztv += e;
      zsv += f;
      accv = e > 0 ? accv + e * (x - y) : accv;
    }
    std::memcpy(zt, &ztv, sizeof(V));
    std::memcpy(zs, &zsv, sizeof(V));
    std::memcpy(acc, &accv, sizeof(V));
  } else
#endif
  for (int64_t j = 0; j < a; ++j) {
#pragma omp simd
    for (int l = 0; l < L; ++l) {
      const F x = (et[j * L + l] - mt[l]) * inv_t, y = (es[j * L + l] - ms[l]) * inv_s;
      const F e = vexp(x), f = vexp(y);
      et[j * L + l] = e;
      es[j * L + l] = f;
      zt[l] += e;
      zs[l] += f;
      acc[l] = e > 0 ? acc[l] + e * (x - y) : acc[l];  // (a masked FMA, not a select and add)
    }
  }
  F rt[L], rs[L];
  int undefined = 0;
#pragma omp simd reduction(| : undefined)
  for (int l = 0; l < L; ++l) {
    const F r = F(1) / (zt[l] * zs[l]);  // zt, zs in [1, a]: one division for both
    rt[l] = zs[l] * r;
    rs[l] = zt[l] * r;
    kl[l] = acc[l] * rt[l] + vlog(zs[l] * rt[l]);
    rt[l] *= w[l] * inv_s;
    rs[l] *= w[l] * inv_s;
    undefined |= undefined_sums(zt[l], zs[l]);
  }
  for (int64_t j = 0; j < a; ++j) {
#pragma omp simd
    for (int l = 0; l < L; ++l) es[j * L + l] = es[j * L + l] * rs[l] - et[j * L + l] * rt[l];
  }
  store_transposed<F, L>(es, a, g);
  if (undefined)
    for (int l = 0; l < L; ++l)
      if (undefined_sums(zt[l], zs[l])) fill_nan(kl + l, g + l * a, a);
}

// Asks for t[i, i + count) and s[i, i + count) to be loaded into the cache:
// the rows after next, so that inputs larger than the cache arrive while the
// current rows are computed. Two tiles ahead is the distance that pays best.
template <typename F>
TFKD_INLINE void prefetch_rows(const F* t, const F* s, int64_t i, int64_t count) {
  for (int64_t k = 0; k < count; k += 64 / sizeof(F)) {
    __builtin_prefetch(t + i + k);
    __builtin_prefetch(s + i + k);
  }
}

// Rows [begin, end) with tiles of L rows; the last partial tile goes through
// a zero-padded copy, so no read or write leaves the caller's buffers.
// grad_scale (n values, or null for all ones) multiplies each gradient row.
template <typename F, int L>
TFKD_INLINE void rows_kl(const F* t, const F* s, const F* grad_scale, int64_t begin,
                         int64_t end, int64_t a, F inv_t, F inv_s, F* kl, F* grad) {
  if (a > kMaxTileActions) {
    std::vector<F> et(static_cast<size_t>(a));
    for (int64_t r = begin; r < end; ++r) {
      if (r + 2 < end) prefetch_rows(t, s, (r + 2) * a, a);
      row_kl(t + r * a, s + r * a, a, inv_t, inv_s, grad_scale ? grad_scale[r] : F(1), kl + r,
             grad + r * a, et.data());
    }
    return;
  }
  alignas(64) F buf[2 * kMaxTileActions * L];
  F w[L];
  std::fill(w, w + L, F(1));
  int64_t r = begin;
  for (; r + L <= end; r += L) {
    if (r + 3 * L <= end) prefetch_rows(t, s, (r + 2 * L) * a, L * a);
    tile_kl<F, L>(t + r * a, s + r * a, a, inv_t, inv_s, grad_scale ? grad_scale + r : w,
                  kl + r, grad + r * a, buf);
  }
  if (r < end) {
    const int64_t rows = end - r;
    std::vector<F> pad(static_cast<size_t>(3 * a * L), F(0));
    F* t_pad = pad.data();
    F* s_pad = t_pad + a * L;
    F* g_pad = s_pad + a * L;
    F kl_pad[L];
    std::copy(t + r * a, t + end * a, t_pad);
    std::copy(s + r * a, s + end * a, s_pad);
    if (grad_scale) std::copy(grad_scale + r, grad_scale + end, w);
    tile_kl<F, L>(t_pad, s_pad, a, inv_t, inv_s, w, kl_pad, g_pad, buf);
    std::copy(kl_pad, kl_pad + rows, kl + r);
    std::copy(g_pad, g_pad + rows * a, grad + r * a);
  }
}

template <typename F>
TFKD_INLINE void scale_rows_kernel(const F* x, const F* __restrict w, int64_t begin,
                                   int64_t end, int64_t a, F* out) {  // out may be x
  for (int64_t r = begin; r < end; ++r) {
    const F wr = w[r];
#pragma omp simd
    for (int64_t j = 0; j < a; ++j) out[r * a + j] = x[r * a + j] * wr;
  }
}

// One compiled copy of the kernels per instruction set, its tile as wide as
// its vectors: AVX-512 16 floats / 8 doubles, AVX2 8 / 4, SSE2 4 / 2. The
// copy is chosen once, at load time, from the CPU (see simd_level()).
template <typename F>
struct Kernels {
  void (*rows)(const F*, const F*, const F*, int64_t, int64_t, int64_t, F, F, F*, F*);
  void (*scale)(const F*, const F*, int64_t, int64_t, int64_t, F*);
};

#define TFKD_KERNELS(suffix, attributes, bytes)                                                \
  attributes void rows_f32_##suffix(const float* t, const float* s, const float* w,          \
                                    int64_t b, int64_t e, int64_t a, float it, float is,      \
                                    float* kl, float* g) {                                    \
    rows_kl<float, bytes / 4>(t, s, w, b, e, a, it, is, kl, g);                               \
  }                                                                                          \
  attributes void rows_f64_##suffix(const double* t, const double* s, const double* w,       \
                                    int64_t b, int64_t e, int64_t a, double it, double is,    \
                                    double* kl, double* g) {                                  \
    rows_kl<double, bytes / 8>(t, s, w, b, e, a, it, is, kl, g);                              \
  }                                                                                          \
  attributes void scale_f32_##suffix(const float* x, const float* w, int64_t b, int64_t e,    \
                                     int64_t a, float* out) {                                 \
    scale_rows_kernel(x, w, b, e, a, out);                                                    \
  }                                                                                          \
  attributes void scale_f64_##suffix(const double* x, const double* w, int64_t b, int64_t e,  \
                                     int64_t a, double* out) {                                \
    scale_rows_kernel(x, w, b, e, a, out);                                                    \
  }

TFKD_KERNELS(baseline, , 16)
#ifdef TFKD_X86
TFKD_KERNELS(v3, TFKD_TARGET("arch=x86-64-v3"), 32)
TFKD_KERNELS(v4, TFKD_TARGET("arch=x86-64-v4"), 64)
#endif
#undef TFKD_KERNELS

enum class Isa { kBaseline, kV3, kV4 };

// The best instruction set of this CPU, capped by the environment variable
// TFKD_SIMD ("x86-64-v3" or "baseline"; for tests of the other paths).
Isa detect_isa() {
  Isa isa = Isa::kBaseline;
#ifdef TFKD_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) isa = Isa::kV4;
  else if (__builtin_cpu_supports("x86-64-v3")) isa = Isa::kV3;
#endif
  const char* cap = std::getenv("TFKD_SIMD");
  if (cap != nullptr) {
    const std::string value(cap);
    if (value == "baseline") isa = Isa::kBaseline;
    else if (value == "x86-64-v3" && isa == Isa::kV4) isa = Isa::kV3;
  }
  return isa;
}

const Isa kIsa = detect_isa();

template <typename F> Kernels<F> kernels();
template <> Kernels<float> kernels<float>() {
#ifdef TFKD_X86
  if (kIsa == Isa::kV4) return {rows_f32_v4, scale_f32_v4};
  if (kIsa == Isa::kV3) return {rows_f32_v3, scale_f32_v3};
#endif
  return {rows_f32_baseline, scale_f32_baseline};
}
template <> Kernels<double> kernels<double>() {
#ifdef TFKD_X86
  if (kIsa == Isa::kV4) return {rows_f64_v4, scale_f64_v4};
  if (kIsa == Isa::kV3) return {rows_f64_v3, scale_f64_v3};
#endif
  return {rows_f64_baseline, scale_f64_baseline};
}

// Runs fn over [0, n) on up to max_threads threads (0: one per core), the
// caller's included, in blocks of whole tiles that each thread takes in turn
// from a shared counter: on a shared machine a thread that loses its core for
// a while leaves its blocks to the others instead of holding everyone up.
// Below ~32k elements per thread, threads cost more than they save.
template <typename Fn>
void parallel_rows(int64_t n, int64_t a, int max_threads, Fn fn) {
  constexpr int64_t kMinElementsPerThread = 32768;
  constexpr int64_t kBlockElements = 16384;  // ~20 us of work: small enough to balance
  int hw = max_threads > 0 ? max_threads : static_cast<int>(std::thread::hardware_concurrency());
  int64_t by_size = (n * a) / kMinElementsPerThread;
  int64_t threads = std::max<int64_t>(1, std::min<int64_t>({static_cast<int64_t>(std::max(hw, 1)), by_size, n}));
  if (threads == 1) {
    fn(int64_t{0}, n);
    return;
  }
  const int64_t tiles_per_block = std::max<int64_t>(1, kBlockElements / (kTileRows * a));
  const int64_t block_rows = tiles_per_block * kTileRows;
  std::atomic<int64_t> next{0};
  auto worker = [&] {
    for (int64_t b; (b = next.fetch_add(block_rows)) < n;) fn(b, std::min(n, b + block_rows));
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  for (int64_t k = 1; k < threads; ++k) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
}

}  // namespace

void softmax_kl(const float* t, const float* s, int64_t n, int64_t a, float temperature,
                float student_temperature, float* kl, float* grad, int max_threads) {
  parallel_rows(n, a, max_threads, [=](int64_t b, int64_t e) {
    softmax_kl_rows(t, s, b, e, a, temperature, student_temperature, kl, grad);
  });
}

void softmax_kl(const double* t, const double* s, int64_t n, int64_t a, double temperature,
                double student_temperature, double* kl, double* grad, int max_threads) {
  parallel_rows(n, a, max_threads, [=](int64_t b, int64_t e) {
    softmax_kl_rows(t, s, b, e, a, temperature, student_temperature, kl, grad);
  });
}

void softmax_kl_rows(const float* t, const float* s, int64_t begin, int64_t end, int64_t a,
                     float temperature, float student_temperature, float* kl, float* grad,
                     const float* grad_scale) {
  kernels<float>().rows(t, s, grad_scale, begin, end, a, 1.0f / temperature,
                        1.0f / student_temperature, kl, grad);
}

void softmax_kl_rows(const double* t, const double* s, int64_t begin, int64_t end, int64_t a,
                     double temperature, double student_temperature, double* kl, double* grad,
                     const double* grad_scale) {
  kernels<double>().rows(t, s, grad_scale, begin, end, a, 1.0 / temperature,
                         1.0 / student_temperature, kl, grad);
}

void scale_rows_range(const float* x, const float* w, int64_t begin, int64_t end, int64_t a,
                      float* out) {
  kernels<float>().scale(x, w, begin, end, a, out);
}

void scale_rows_range(const double* x, const double* w, int64_t begin, int64_t end, int64_t a,
                      double* out) {
  kernels<double>().scale(x, w, begin, end, a, out);
}

const char* simd_level() {
  switch (kIsa) {
    case Isa::kV4: return "x86-64-v4 (AVX-512)";
    case Isa::kV3: return "x86-64-v3 (AVX2, FMA)";
    default: return "baseline";
  }
}

}  // namespace tfkd
