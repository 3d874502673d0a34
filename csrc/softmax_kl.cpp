#include "softmax_kl.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

namespace tfkd {
namespace {

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define TFKD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TFKD_CLONES
#endif
#define TFKD_INLINE inline __attribute__((always_inline))

template <typename F> struct ExpConstants;
template <> struct ExpConstants<float> {
  using Bits = uint32_t;
  static constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  static constexpr float kLo = -87.0f, kHi = 88.0f;
  static constexpr int kMantissa = 23;
  static constexpr Bits kBias = 127;
  static constexpr float kLn2Hi = 0.693145751953125f, kLn2Lo = 1.428606765330187e-06f;
  static TFKD_INLINE float poly(float r) {  // degree 6 Taylor: error ~1 ulp on |r| <= ln2/2
    return 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
  }
};
template <> struct ExpConstants<double> {
  using Bits = uint64_t;
  static constexpr double kMagic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double kLo = -708.0, kHi = 709.0;
  static constexpr int kMantissa = 52;
  static constexpr Bits kBias = 1023;
  static constexpr double kLn2Hi = 0.6931471803691238, kLn2Lo = 1.9082149292705877e-10;
  static TFKD_INLINE double poly(double r) {  // degree 12 Taylor: error < 2e-16 on |r| <= ln2/2
    return 1.0 + r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 +
           r * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 +
           r * (1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600))))))))))));
  }
};

// Branch-free exp(x) that vectorises inside `omp simd` loops: x = n ln2 + r
// with |r| <= ln2 / 2, exp(r) by its Taylor polynomial, 2^n written into the
// exponent bits. Adding the magic constant 1.5 * 2^mantissa rounds x log2(e)
// to the nearest integer n and leaves n in the low bits. Results below the
// smallest normal number flush to 0: far below the rounding error of a
// softmax whose largest term is exp(0) = 1. NaN stays NaN.
template <typename F>
TFKD_INLINE F vexp(F x) {
  using C = ExpConstants<F>;
  using Bits = typename C::Bits;
  F xc = x > C::kLo ? x : C::kLo;  // NaN becomes kLo here and is restored below
  xc = xc < C::kHi ? xc : C::kHi;
  const F k = xc * F(1.4426950408889634) + C::kMagic;
  const F n = k - C::kMagic;
  const F r = (xc - n * C::kLn2Hi) - n * C::kLn2Lo;
  Bits kb, mb;
  const F magic = C::kMagic;
  std::memcpy(&kb, &k, sizeof(F));
  std::memcpy(&mb, &magic, sizeof(F));
  const Bits sb = (kb - mb + C::kBias) << C::kMantissa;
  F scale;
  std::memcpy(&scale, &sb, sizeof(F));
  const F y = C::poly(r) * scale;
  return x != x ? x : (x <= C::kLo ? F(0) : y);
}

// One row. `pt` is scratch of `a` elements for the teacher's exp terms.
template <typename F>
TFKD_INLINE void row_kl(const F* __restrict t, const F* __restrict s, int64_t a, F inv_t,
                        F inv_s, F* __restrict kl, F* __restrict g, F* __restrict pt) {
  const F inf = std::numeric_limits<F>::infinity();
  F mt = -inf, ms = -inf;
  int nans = 0;
#pragma omp simd reduction(max : mt, ms) reduction(+ : nans)
  for (int64_t j = 0; j < a; ++j) {
    mt = t[j] > mt ? t[j] : mt;
    ms = s[j] > ms ? s[j] : ms;
    nans += (t[j] != t[j]) | (s[j] != s[j]);
  }
  if (nans || mt == inf || ms == inf || mt == -inf || ms == -inf) {
    const F nan = std::numeric_limits<F>::quiet_NaN();
    *kl = nan;
    std::fill(g, g + a, nan);
    return;
  }
  mt *= inv_t;
  ms *= inv_s;
  F zt = 0, zs = 0;
#pragma omp simd reduction(+ : zt, zs)
  for (int64_t j = 0; j < a; ++j) {
    pt[j] = vexp(t[j] * inv_t - mt);
    g[j] = vexp(s[j] * inv_s - ms);
    zt += pt[j];
    zs += g[j];
  }
  // log p_a - log q_a = (t_a/T - mt - log zt) - (s_a/S - ms - log zs)
  const F shift = (ms + std::log(zs)) - (mt + std::log(zt));
  const F rt = F(1) / zt, rs = F(1) / zs;
  F acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < a; ++j) {
    const F p = pt[j] * rt;
    const F d = (t[j] * inv_t - s[j] * inv_s) + shift;
    acc += p > 0 ? p * d : F(0);  // 0 log 0 = 0 for masked actions
    g[j] = (g[j] * rs - p) * inv_s;
  }
  *kl = acc;
}

template <typename F>
TFKD_INLINE void rows_kl(const F* t, const F* s, int64_t begin, int64_t end, int64_t a,
                         F inv_t, F inv_s, F* kl, F* grad) {
  std::vector<F> scratch(static_cast<size_t>(a));
  for (int64_t i = begin; i < end; ++i)
    row_kl(t + i * a, s + i * a, a, inv_t, inv_s, kl + i, grad + i * a, scratch.data());
}

TFKD_CLONES void rows_f32(const float* t, const float* s, int64_t begin, int64_t end,
                          int64_t a, float inv_t, float inv_s, float* kl, float* grad) {
  rows_kl(t, s, begin, end, a, inv_t, inv_s, kl, grad);
}

TFKD_CLONES void rows_f64(const double* t, const double* s, int64_t begin, int64_t end,
                          int64_t a, double inv_t, double inv_s, double* kl, double* grad) {
  rows_kl(t, s, begin, end, a, inv_t, inv_s, kl, grad);
}

// Splits [0, n) into contiguous chunks, one per thread; the caller's thread
// takes the first. Below ~32k elements per thread, threads cost more than
// they save.
template <typename Fn>
void parallel_rows(int64_t n, int64_t a, int max_threads, Fn fn) {
  constexpr int64_t kMinElementsPerThread = 32768;
  int hw = max_threads > 0 ? max_threads : static_cast<int>(std::thread::hardware_concurrency());
  int64_t by_size = (n * a) / kMinElementsPerThread;
  int64_t threads = std::max<int64_t>(1, std::min<int64_t>({static_cast<int64_t>(std::max(hw, 1)), by_size, n}));
  if (threads == 1) {
    fn(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  const int64_t chunk = (n + threads - 1) / threads;
  for (int64_t k = 1; k < threads; ++k) {
    const int64_t b = std::min(n, k * chunk), e = std::min(n, b + chunk);
    if (b < e) pool.emplace_back(fn, b, e);
  }
  fn(int64_t{0}, std::min(n, chunk));
  for (auto& th : pool) th.join();
}

}  // namespace

void softmax_kl(const float* t, const float* s, int64_t n, int64_t a, float temperature,
                float student_temperature, float* kl, float* grad, int max_threads) {
  const float inv_t = 1.0f / temperature, inv_s = 1.0f / student_temperature;
  parallel_rows(n, a, max_threads, [=](int64_t b, int64_t e) {
    rows_f32(t, s, b, e, a, inv_t, inv_s, kl, grad);
  });
}

void softmax_kl(const double* t, const double* s, int64_t n, int64_t a, double temperature,
                double student_temperature, double* kl, double* grad, int max_threads) {
  const double inv_t = 1.0 / temperature, inv_s = 1.0 / student_temperature;
  parallel_rows(n, a, max_threads, [=](int64_t b, int64_t e) {
    rows_f64(t, s, b, e, a, inv_t, inv_s, kl, grad);
  });
}

const char* simd_level() {
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "avx512f";
  if (__builtin_cpu_supports("avx2")) return "avx2";
#endif
  return "baseline";
}

}  // namespace tfkd
