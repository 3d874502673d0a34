// Fused, batched softmax-KL: loss and gradient in one pass over the logits.
//
// For row-major [n, a] teacher logits t and student logits s, a teacher
// temperature T > 0 and a student temperature S > 0, each row i gives
//
//   p = softmax(t_i / T),  q = softmax(s_i / S)
//   kl[i]   = sum_a p_a (log p_a - log q_a)
//   grad[i] = d kl[i] / d s_i = (q - p) / S
//
// Teacher logits of -inf are masked actions (p_a = 0 adds nothing). A row
// holding NaN or +inf, or whose teacher or student logits are all -inf, gives
// NaN for that row only. Plain C++: no Python types here (see binding.cpp).
#pragma once

#include <cstdint>

namespace tfkd {

// Rows are split across up to `max_threads` threads (0 = all hardware
// threads); small inputs run on the calling thread. The caller guarantees
// t, s and grad hold n * a elements and kl holds n.
void softmax_kl(const float* t, const float* s, int64_t n, int64_t a,
                float temperature, float student_temperature,
                float* kl, float* grad, int max_threads = 0);
void softmax_kl(const double* t, const double* s, int64_t n, int64_t a,
                double temperature, double student_temperature,
                double* kl, double* grad, int max_threads = 0);

// Rows [begin, end) only, on the calling thread: for callers that bring
// their own thread pool (the TensorFlow op). Same buffer contract as above;
// splitting at multiples of kTileRows rows keeps every tile whole (a tile
// is at most kTileRows rows: the SIMD width in floats). A non-null
// grad_scale (n values) multiplies each row's gradient in the same pass,
// grad[i] = grad_scale[i] (q - p) / S: a loss's known row weights (a batch
// mean's 1/n) then need no second pass over the gradient.
constexpr int64_t kTileRows = 16;
void softmax_kl_rows(const float* t, const float* s, int64_t begin, int64_t end, int64_t a,
                     float temperature, float student_temperature, float* kl, float* grad,
                     const float* grad_scale = nullptr);
void softmax_kl_rows(const double* t, const double* s, int64_t begin, int64_t end, int64_t a,
                     double temperature, double student_temperature, double* kl, double* grad,
                     const double* grad_scale = nullptr);

// out[i, :] = x[i, :] * w[i] for rows [begin, end), on the calling thread:
// the backward pass's chain rule for a per-row upstream gradient w, at
// memory speed. x and out hold n * a elements (out may be x), w n.
void scale_rows_range(const float* x, const float* w, int64_t begin, int64_t end, int64_t a,
                      float* out);
void scale_rows_range(const double* x, const double* w, int64_t begin, int64_t end, int64_t a,
                      double* out);

// The instruction set the run-time dispatch chose: "x86-64-v4 (AVX-512)",
// "x86-64-v3 (AVX2, FMA)" or "baseline".
const char* simd_level();

}  // namespace tfkd
