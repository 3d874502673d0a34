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
#define TFKD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
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
  static constexpr int kLogTerms = 6;  // atanh series: error < 1e-9 on |u| <= 0.172
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
  static constexpr int kLogTerms = 12;  // atanh series: error < 1e-18 on |u| <= 0.172
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
// softmax whose largest term is exp(0) = 1, and so does -inf. NaN input gives
// a finite value: callers mark NaN rows themselves.
template <typename F>
TFKD_INLINE F vexp(F x) {
  using C = ExpConstants<F>;
  using Bits = typename C::Bits;
  F xc = x > C::kLo ? x : C::kLo;  // NaN becomes kLo: no undefined conversions
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
  return x > C::kLo ? y : F(0);
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
  F e = F(static_cast<int64_t>(b >> C::kMantissa) - static_cast<int64_t>(C::kBias));
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

// Rows of at most this many actions go through tile_kl, longer ones row_kl
// (measured: the crossover lies between 32 and 48 actions).
constexpr int64_t kMaxTileActions = 40;
constexpr int kTileRows = 16;

// Shared by both paths: a row holding NaN or +inf, or whose teacher or
// student logits are all -inf, has no defined KL; it gets NaN.
template <typename F>
TFKD_INLINE bool undefined_row(bool has_nan, F max_t, F max_s) {
  const F inf = std::numeric_limits<F>::infinity();
  return has_nan || max_t == inf || max_s == inf || max_t == -inf || max_s == -inf;
}

template <typename F>
TFKD_INLINE void fill_nan(F* kl, F* g, int64_t a) {
  *kl = std::numeric_limits<F>::quiet_NaN();
  std::fill(g, g + a, std::numeric_limits<F>::quiet_NaN());
}

// One long row: SIMD runs along the actions. `pt` is scratch of `a` elements.
template <typename F>
TFKD_INLINE void row_kl(const F* __restrict t, const F* __restrict s, int64_t a, F inv_t,
                        F inv_s, F* __restrict kl, F* __restrict g, F* __restrict pt) {
  F mt = -std::numeric_limits<F>::infinity(), ms = mt;
  int nans = 0;
#pragma omp simd reduction(max : mt, ms) reduction(+ : nans)
  for (int64_t j = 0; j < a; ++j) {
    mt = t[j] > mt ? t[j] : mt;
    ms = s[j] > ms ? s[j] : ms;
    nans += (t[j] != t[j]) | (s[j] != s[j]);
  }
  if (undefined_row(nans > 0, mt, ms)) return fill_nan(kl, g, a);
  // Subtract the maximum before scaling: t - max is exact for nearby values,
  // which keeps large logits with small temperatures accurate.
  F zt = 0, zs = 0;
#pragma omp simd reduction(+ : zt, zs)
  for (int64_t j = 0; j < a; ++j) {
    pt[j] = vexp((t[j] - mt) * inv_t);
    g[j] = vexp((s[j] - ms) * inv_s);
    zt += pt[j];
    zs += g[j];
  }
  // log p_a - log q_a = (t_a - mt) / T - (s_a - ms) / S + log(zs / zt)
  const F rt = F(1) / zt, rs = F(1) / zs;
  const F shift = std::log(zs * rt);
  F acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < a; ++j) {
    const F p = pt[j] * rt;
    const F d = ((t[j] - mt) * inv_t - (s[j] - ms) * inv_s) + shift;
    acc += p > 0 ? p * d : F(0);  // 0 log 0 = 0 for masked actions
    g[j] = (g[j] * rs - p) * inv_s;
  }
  *kl = acc;
}

// kTileRows short rows with the rows in SIMD lanes: every loop runs across
// rows, so a row of a few actions (Atari's 18) costs no loop remainder and no
// horizontal reduction. `buf` is scratch of 4 * a * kTileRows elements.
template <typename F>
TFKD_INLINE void tile_kl(const F* __restrict t, const F* __restrict s, int64_t a, F inv_t,
                         F inv_s, F* __restrict kl, F* __restrict g, F* __restrict buf) {
  constexpr int L = kTileRows;
  F* xt = buf;  // [a][L]: t, then (t - max t) / T
  F* xs = buf + a * L;
  F* et = buf + 2 * a * L;  // exp(xt), exp(xs)
  F* es = buf + 3 * a * L;
  F mt[L], ms[L], zt[L], zs[L], rt[L], rs[L], shift[L], acc[L];
  int nans[L];
  for (int l = 0; l < L; ++l) {
    mt[l] = ms[l] = -std::numeric_limits<F>::infinity();
    zt[l] = zs[l] = acc[l] = 0;
    nans[l] = 0;
  }
  for (int64_t j = 0; j < a; ++j) {
#pragma omp simd
    for (int l = 0; l < L; ++l) {
      const F x = t[l * a + j], y = s[l * a + j];
      xt[j * L + l] = x;
      xs[j * L + l] = y;
      mt[l] = x > mt[l] ? x : mt[l];
      ms[l] = y > ms[l] ? y : ms[l];
      nans[l] |= (x != x) | (y != y);
    }
  }
  for (int64_t j = 0; j < a; ++j) {
#pragma omp simd
    for (int l = 0; l < L; ++l) {
      xt[j * L + l] = (xt[j * L + l] - mt[l]) * inv_t;  // exact subtraction first, as in row_kl
      xs[j * L + l] = (xs[j * L + l] - ms[l]) * inv_s;
      et[j * L + l] = vexp(xt[j * L + l]);
      es[j * L + l] = vexp(xs[j * L + l]);
      zt[l] += et[j * L + l];
      zs[l] += es[j * L + l];
    }
  }
#pragma omp simd
  for (int l = 0; l < L; ++l) {
    rt[l] = F(1) / zt[l];
    rs[l] = F(1) / zs[l];
    shift[l] = vlog(zs[l] * rt[l]);  // log p - log q = xt - xs + log(zs / zt)
  }
  for (int64_t j = 0; j < a; ++j) {
#pragma omp simd
    for (int l = 0; l < L; ++l) {
      const F p = et[j * L + l] * rt[l];
      const F d = xt[j * L + l] - xs[j * L + l] + shift[l];
      acc[l] += p > 0 ? p * d : F(0);  // 0 log 0 = 0 for masked actions
      g[l * a + j] = (es[j * L + l] * rs[l] - p) * inv_s;
    }
  }
  for (int l = 0; l < L; ++l) {
    kl[l] = acc[l];
    if (undefined_row(nans[l] > 0, mt[l], ms[l])) fill_nan(kl + l, g + l * a, a);
  }
}

// Rows [begin, end). Short rows go by tiles, the last partial tile through a
// zero-padded copy, so no read or write leaves the caller's buffers.
template <typename F>
TFKD_INLINE void rows_kl(const F* t, const F* s, int64_t begin, int64_t end, int64_t a,
                         F inv_t, F inv_s, F* kl, F* grad) {
  if (a > kMaxTileActions) {
    std::vector<F> pt(static_cast<size_t>(a));
    for (int64_t r = begin; r < end; ++r)
      row_kl(t + r * a, s + r * a, a, inv_t, inv_s, kl + r, grad + r * a, pt.data());
    return;
  }
  std::vector<F> buf(static_cast<size_t>(4 * a * kTileRows));
  int64_t r = begin;
  for (; r + kTileRows <= end; r += kTileRows)
    tile_kl(t + r * a, s + r * a, a, inv_t, inv_s, kl + r, grad + r * a, buf.data());
  if (r < end) {
    const int64_t rows = end - r;
    std::vector<F> pad(static_cast<size_t>(3 * a * kTileRows), F(0));
    F* t_pad = pad.data();
    F* s_pad = t_pad + a * kTileRows;
    F* g_pad = s_pad + a * kTileRows;
    F kl_pad[kTileRows];
    std::copy(t + r * a, t + end * a, t_pad);
    std::copy(s + r * a, s + end * a, s_pad);
    tile_kl(t_pad, s_pad, a, inv_t, inv_s, kl_pad, g_pad, buf.data());
    std::copy(kl_pad, kl_pad + rows, kl + r);
    std::copy(g_pad, g_pad + rows * a, grad + r * a);
  }
}

TFKD_CLONES void rows_f32(const float* t, const float* s, int64_t begin, int64_t end,
                          int64_t a, float inv_t, float inv_s, float* kl, float* grad) {
  rows_kl(t, s, begin, end, a, inv_t, inv_s, kl, grad);
}

TFKD_CLONES void rows_f64(const double* t, const double* s, int64_t begin, int64_t end,
                          int64_t a, double inv_t, double inv_s, double* kl, double* grad) {
  rows_kl(t, s, begin, end, a, inv_t, inv_s, kl, grad);
}

template <typename F>
TFKD_INLINE void scale_rows_kernel(const F* __restrict x, const F* __restrict w, int64_t begin,
                                   int64_t end, int64_t a, F* __restrict out) {
  for (int64_t r = begin; r < end; ++r) {
    const F wr = w[r];
#pragma omp simd
    for (int64_t j = 0; j < a; ++j) out[r * a + j] = x[r * a + j] * wr;
  }
}

TFKD_CLONES void scale_rows_f32(const float* x, const float* w, int64_t b, int64_t e, int64_t a,
                                float* out) {
  scale_rows_kernel(x, w, b, e, a, out);
}

TFKD_CLONES void scale_rows_f64(const double* x, const double* w, int64_t b, int64_t e,
                                int64_t a, double* out) {
  scale_rows_kernel(x, w, b, e, a, out);
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

void scale_rows(const float* x, const float* w, int64_t n, int64_t a, float* out,
                int max_threads) {
  parallel_rows(n, a, max_threads, [=](int64_t b, int64_t e) { scale_rows_f32(x, w, b, e, a, out); });
}

void scale_rows(const double* x, const double* w, int64_t n, int64_t a, double* out,
                int max_threads) {
  parallel_rows(n, a, max_threads, [=](int64_t b, int64_t e) { scale_rows_f64(x, w, b, e, a, out); });
}

const char* simd_level() {
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4 (AVX-512)";
  if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3 (AVX2, FMA)";
#endif
  return "baseline";
}

}  // namespace tfkd
