// pybind11 binding of the softmax-KL kernel: checks and converts buffers,
// allocates the outputs, and releases the GIL while the kernel runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "softmax_kl.h"

namespace py = pybind11;

namespace {

template <typename F>
using Contiguous = py::array_t<F, py::array::c_style | py::array::forcecast>;

// The rule of tfkd/ops/checks.py: a normal float32, so that 1 / T is finite.
void check_temperature(double value, const char* name) {
  if (!(value >= std::numeric_limits<float>::min() && value <= std::numeric_limits<float>::max()))
    throw py::value_error(std::string(name) + " must be finite and > 0, a normal float32, got " +
                          std::to_string(value));
}

// Outputs are 64-byte aligned: a cache line, an AVX-512 vector, and the
// alignment TensorFlow needs to share a NumPy buffer instead of copying it.
template <typename F>
Contiguous<F> aligned_array(std::vector<py::ssize_t> shape) {
  size_t count = 1;
  for (py::ssize_t d : shape) count *= static_cast<size_t>(d);
  constexpr size_t kAlign = 64;
  const size_t bytes = std::max<size_t>(kAlign, (count * sizeof(F) + kAlign - 1) / kAlign * kAlign);
  void* data = std::aligned_alloc(kAlign, bytes);
  if (data == nullptr) throw std::bad_alloc();
  py::capsule owner(data, [](void* p) { std::free(p); });
  return Contiguous<F>(shape, static_cast<F*>(data), owner);
}

template <typename F>
py::tuple run(const py::array& teacher, const py::array& student, double temperature,
              double student_temperature) {
  // forcecast + c_style copy anything non-contiguous or of another dtype, so
  // the kernel only ever sees dense row-major buffers of its own type.
  auto t = Contiguous<F>::ensure(teacher);
  auto s = Contiguous<F>::ensure(student);
  if (!t || !s) throw py::error_already_set();
  const py::ssize_t n = t.shape(0), a = t.shape(1);
  auto kl = aligned_array<F>({n});
  auto grad = aligned_array<F>({n, a});
  const F* tp = t.data();
  const F* sp = s.data();
  F* klp = kl.mutable_data();
  F* gp = grad.mutable_data();
  {
    py::gil_scoped_release release;
    tfkd::softmax_kl(tp, sp, n, a, static_cast<F>(temperature), static_cast<F>(student_temperature),
                     klp, gp);
  }
  return py::make_tuple(kl, grad);
}

py::tuple softmax_kl(const py::array& teacher, const py::array& student, double temperature,
                     double student_temperature) {
  if (teacher.ndim() != 2 || student.ndim() != 2)
    throw py::value_error("softmax_kl expects 2-D [batch, actions] arrays, got ranks " +
                          std::to_string(teacher.ndim()) + " and " + std::to_string(student.ndim()));
  if (teacher.shape(0) != student.shape(0) || teacher.shape(1) != student.shape(1))
    throw py::value_error("teacher and student logits differ in shape: [" +
                          std::to_string(teacher.shape(0)) + ", " + std::to_string(teacher.shape(1)) +
                          "] vs [" + std::to_string(student.shape(0)) + ", " +
                          std::to_string(student.shape(1)) + "]");
  if (teacher.shape(1) == 0) throw py::value_error("softmax_kl needs at least one action (last axis is 0)");
  for (const py::array* x : {&teacher, &student})
    if (x->dtype().kind() != 'f')
      throw py::value_error("softmax_kl expects floating-point logits, got dtype " +
                            std::string(py::str(x->dtype())));
  check_temperature(temperature, "temperature");
  check_temperature(student_temperature, "student_temperature");
  // float64 in either byte order; forcecast converts to the native one.
  const bool f64 = teacher.dtype().itemsize() == 8 || student.dtype().itemsize() == 8;
  return f64 ? run<double>(teacher, student, temperature, student_temperature)
             : run<float>(teacher, student, temperature, student_temperature);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "tfkd's fused softmax-KL kernel (C++).";
  m.def("softmax_kl", &softmax_kl, py::arg("teacher_logits"), py::arg("student_logits"),
        py::arg("temperature"), py::arg("student_temperature"),
        R"doc(Per-row KL(softmax(t/T) || softmax(s/S)) and its gradient (q - p)/S.

Returns (kl [n], grad [n, a]); float64 if either input is float64, else float32.)doc");
  m.def("simd_level", &tfkd::simd_level, "Instruction set chosen at run time.");
}
