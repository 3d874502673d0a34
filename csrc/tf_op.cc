// TensorFlow ops around the softmax-KL kernel, loaded with tf.load_op_library:
//
//   TfkdSoftmaxKl(teacher_logits [n, a], student_logits [n, a], temperature,
//                 student_temperature, grad_scale [n] or []) -> (kl [n], grad [n, a])
//       grad[i] = grad_scale[i] (q - p) / S: a loss's known row weights come
//       for free in the forward pass (a scalar scales every row)
//   TfkdScaleRows(x [n, a], w [n] or []) -> x * w[:, None]  (the backward's
//       chain rule; w = 1 returns x itself, no pass over it)
//
// They check their inputs, let TensorFlow allocate the outputs (no copies, no
// Python) and split the rows between the calling thread and helpers on the
// executor's inter-op threads (for_row_tiles). The gradient is wired in
// Python (tfkd/ops/kernel.py, tf.custom_gradient).
#include "softmax_kl.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <limits>
#include <memory>
#include <mutex>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfkd {
namespace {

namespace tf = ::tensorflow;
using tf::shape_inference::InferenceContext;
using tf::shape_inference::ShapeHandle;

// A unit of work is kTileRows rows; its cost is in TensorFlow's nominal
// "cycles" (as for tf::Shard): the kernel's per element, and the backward's
// scaling, one pass at memory speed (8 bytes per element), 0.4 of it.
constexpr int64_t kKernelCost = 40, kScaleCost = 16;
int64_t tile_cost(int64_t a, int64_t cost_per_element) { return kTileRows * a * cost_per_element; }

// Runs rows(begin, end) over [0, n) on the calling thread and helpers, in
// blocks of whole tiles that each thread takes in turn from a shared counter
// (as parallel_rows in softmax_kl.cpp). Unlike tf::Shard's fixed shares, a
// helper that starts late (its core busy, or stolen by the hypervisor) leaves
// its blocks to the others, and the caller waits only for blocks in
// progress, never for a helper that has not started: such a helper finds no
// block left and returns without touching `rows`.
//
// The helpers go to the executor's runner (its inter-op pool), whose threads
// are awake (one just handed this op over), rather than to the intra-op
// pool, whose sleeping threads start too late to take much of the work; to
// the intra-op pool only when there is no runner. The intra-op setting (its
// thread count) still bounds how many threads work.
template <typename Fn>
void for_row_tiles(tf::OpKernelContext* ctx, int64_t n, int64_t cost_per_tile, Fn rows) {
  // As parallel_rows: ~32k kernel elements per thread at least (fewer cost
  // more to hand over than they save), blocks of ~16k (~20 us, to balance).
  constexpr int64_t kMinCostPerThread = 32768 * kKernelCost, kBlockCost = 16384 * kKernelCost;
  const auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  const int64_t tiles = (n + kTileRows - 1) / kTileRows;
  const int64_t threads = std::min<int64_t>(
      {static_cast<int64_t>(workers->num_threads), tiles * cost_per_tile / kMinCostPerThread,
       tiles});
  if (threads <= 1) {
    rows(int64_t{0}, n);
    return;
  }
  struct Blocks {
    std::atomic<int64_t> next{0};
    int64_t done = 0;  // under mutex
    std::mutex mutex;
    std::condition_variable finished;
  };
  const int64_t block_tiles = std::max<int64_t>(1, kBlockCost / cost_per_tile);
  const int64_t count = (tiles + block_tiles - 1) / block_tiles;
  auto blocks = std::make_shared<Blocks>();
  auto work = [blocks, block_tiles, count, n, &rows] {
    int64_t mine = 0;
    for (int64_t b; (b = blocks->next.fetch_add(1)) < count; ++mine)
      rows(b * block_tiles * kTileRows, std::min(n, (b + 1) * block_tiles * kTileRows));
    if (mine == 0) return;
    std::lock_guard<std::mutex> lock(blocks->mutex);
    if ((blocks->done += mine) == count) blocks->finished.notify_one();
  };
  for (int64_t k = 1; k < threads; ++k) {
    if (ctx->runner() != nullptr) (*ctx->runner())(work);
    else workers->workers->Schedule(work);
  }
  work();
  std::unique_lock<std::mutex> lock(blocks->mutex);
  blocks->finished.wait(lock, [&] { return blocks->done == count; });
}

template <typename F>
absl::Status positive_scalar(const tf::Tensor& value, const char* name, F* out) {
  if (!tf::TensorShapeUtils::IsScalar(value.shape()))
    return tf::errors::InvalidArgument(name, " must be a scalar, got shape ",
                                       value.shape().DebugString());
  *out = value.scalar<F>()();
  // The rule of tfkd/ops/checks.py: a normal float32, so that 1 / T is finite.
  if (!(*out >= std::numeric_limits<float>::min() && *out <= std::numeric_limits<float>::max()))
    return tf::errors::InvalidArgument(name, " must be finite and > 0, a normal float32, got ",
                                       *out);
  return absl::OkStatus();
}

// w as n row weights: its own data, or for a scalar w a filled copy in
// *storage (null for w = 1: the kernels' "no scaling").
template <typename F>
absl::Status row_weights(const tf::Tensor& w, int64_t n, const char* name,
                         std::vector<F>* storage, const F** out) {
  if (tf::TensorShapeUtils::IsScalar(w.shape())) {
    const F value = w.scalar<F>()();
    if (value == F(1)) {
      *out = nullptr;
    } else {
      storage->assign(static_cast<size_t>(n), value);
      *out = storage->data();
    }
    return absl::OkStatus();
  }
  if (w.dims() != 1 || w.dim_size(0) != n)
    return tf::errors::InvalidArgument(name, " must be a scalar or have shape [", n, "], got ",
                                       w.shape().DebugString());
  *out = w.flat<F>().data();
  return absl::OkStatus();
}

template <typename F>
class SoftmaxKlOp : public tf::OpKernel {
 public:
  explicit SoftmaxKlOp(tf::OpKernelConstruction* ctx) : tf::OpKernel(ctx) {}

  void Compute(tf::OpKernelContext* ctx) override {
    const tf::Tensor& t = ctx->input(0);
    const tf::Tensor& s = ctx->input(1);
    OP_REQUIRES(ctx, t.dims() == 2 && s.dims() == 2,
                tf::errors::InvalidArgument(
                    "softmax_kl expects 2-D [batch, actions] logits, got shapes ",
                    t.shape().DebugString(), " and ", s.shape().DebugString()));
    OP_REQUIRES(ctx, t.shape() == s.shape(),
                tf::errors::InvalidArgument("teacher and student logits differ in shape: ",
                                            t.shape().DebugString(), " vs ",
                                            s.shape().DebugString()));
    const int64_t n = t.dim_size(0), a = t.dim_size(1);
    OP_REQUIRES(ctx, a > 0,
                tf::errors::InvalidArgument("softmax_kl needs at least one action (last axis is 0)"));
    F temperature, student_temperature;
    OP_REQUIRES_OK(ctx, positive_scalar(ctx->input(2), "temperature", &temperature));
    OP_REQUIRES_OK(ctx, positive_scalar(ctx->input(3), "student_temperature", &student_temperature));
    std::vector<F> scale_storage;
    const F* scale = nullptr;
    OP_REQUIRES_OK(ctx, row_weights(ctx->input(4), n, "grad_scale", &scale_storage, &scale));

    tf::Tensor* kl = nullptr;
    tf::Tensor* grad = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, tf::TensorShape({n}), &kl));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, s.shape(), &grad));
    const F* tp = t.flat<F>().data();
    const F* sp = s.flat<F>().data();
    F* klp = kl->flat<F>().data();
    F* gp = grad->flat<F>().data();
    for_row_tiles(ctx, n, tile_cost(a, kKernelCost), [&](int64_t begin, int64_t end) {
      softmax_kl_rows(tp, sp, begin, end, a, temperature, student_temperature, klp, gp, scale);
    });
  }
};

template <typename F>
class ScaleRowsOp : public tf::OpKernel {
 public:
  explicit ScaleRowsOp(tf::OpKernelConstruction* ctx) : tf::OpKernel(ctx) {}

  void Compute(tf::OpKernelContext* ctx) override {
    const tf::Tensor& x = ctx->input(0);
    const tf::Tensor& w = ctx->input(1);
    OP_REQUIRES(ctx, x.dims() == 2,
                tf::errors::InvalidArgument("scale_rows expects x [n, a], got ",
                                            x.shape().DebugString()));
    const int64_t n = x.dim_size(0), a = x.dim_size(1);
    std::vector<F> w_storage;
    const F* wp = nullptr;
    OP_REQUIRES_OK(ctx, row_weights(w, n, "w", &w_storage, &wp));
    if (wp == nullptr) {  // w = 1
      ctx->set_output(0, x);
      return;
    }
    tf::Tensor* out = nullptr;
    // In place when nothing else holds x (the forward's gradient usually).
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, x.shape(), &out));
    const F* xp = x.flat<F>().data();
    F* op = out->flat<F>().data();
    for_row_tiles(ctx, n, tile_cost(a, kScaleCost), [&](int64_t begin, int64_t end) {
      scale_rows_range(xp, wp, begin, end, a, op);
    });
  }
};

absl::Status softmax_kl_shape(InferenceContext* c) {
  ShapeHandle t, s, logits, scalar;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &t));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &s));
  TF_RETURN_IF_ERROR(c->Merge(t, s, &logits));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 0, &scalar));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 0, &scalar));
  TF_RETURN_IF_ERROR(c->WithRankAtMost(c->input(4), 1, &scalar));
  c->set_output(0, c->Vector(c->Dim(logits, 0)));
  c->set_output(1, logits);
  return absl::OkStatus();
}

absl::Status scale_rows_shape(InferenceContext* c) {
  ShapeHandle x, w;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x));
  TF_RETURN_IF_ERROR(c->WithRankAtMost(c->input(1), 1, &w));
  c->set_output(0, x);
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("TfkdSoftmaxKl")
    .Input("teacher_logits: T")
    .Input("student_logits: T")
    .Input("temperature: T")
    .Input("student_temperature: T")
    .Input("grad_scale: T")
    .Output("kl: T")
    .Output("grad: T")
    .Attr("T: {float, double}")
    .SetShapeFn(softmax_kl_shape)
    .Doc("Per-row KL(softmax(t/T) || softmax(s/S)) and its gradient grad_scale (q - p)/S, fused.");

REGISTER_OP("TfkdScaleRows")
    .Input("x: T")
    .Input("w: T")
    .Output("y: T")
    .Attr("T: {float, double}")
    .SetShapeFn(scale_rows_shape)
    .Doc("x * w[:, None] (w = 1: x itself): the chain rule of TfkdSoftmaxKl's gradient.");

#define TFKD_REGISTER(F)                                                                     \
  REGISTER_KERNEL_BUILDER(                                                                   \
      Name("TfkdSoftmaxKl").Device(::tensorflow::DEVICE_CPU).TypeConstraint<F>("T"),         \
      SoftmaxKlOp<F>);                                                                       \
  REGISTER_KERNEL_BUILDER(                                                                   \
      Name("TfkdScaleRows").Device(::tensorflow::DEVICE_CPU).TypeConstraint<F>("T"),         \
      ScaleRowsOp<F>);
TFKD_REGISTER(float)
TFKD_REGISTER(double)
#undef TFKD_REGISTER

}  // namespace tfkd
