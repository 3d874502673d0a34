"""The kernel reads nothing outside its input buffers: each input is placed
flush against an inaccessible (PROT_NONE) page, before or after it, so a read
one element out of bounds is a segmentation fault.

AddressSanitizer (sanitize.sh) does not see the AVX-512 path's gathers, so
this checks every path the CPU runs, on the real build. The kernel's writes
use the same row offsets as its reads (tiles and long rows alike), and go to
buffers the binding allocates. Each case runs in a child process that loads
only the extension, so a fault fails one test with a message instead of
killing the run.
"""

import subprocess
import sys
import textwrap

import pytest

from tfkd import _C

CHILD = textwrap.dedent("""
    import ctypes, importlib.machinery, importlib.util, mmap, sys
    import numpy as np

    path, n, a, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), np.dtype(sys.argv[4])
    loader = importlib.machinery.ExtensionFileLoader("_C", path)
    C = importlib.util.module_from_spec(importlib.util.spec_from_loader("_C", loader))
    loader.exec_module(C)
    libc = ctypes.CDLL(None)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE
    keep = []

    def guarded(values, flush_end):
        # values copied into a mapping [guard page | data pages | guard page],
        # flush against the guard after the data (flush_end) or before it.
        nbytes = values.nbytes
        pages = -(-nbytes // page)
        buf = mmap.mmap(-1, (pages + 2) * page)
        base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        for guard in (base, base + (pages + 1) * page):
            assert libc.mprotect(guard, page, 0) == 0
        offset = page + (pages * page - nbytes if flush_end else 0)
        out = np.frombuffer(buf, values.dtype, values.size, offset).reshape(values.shape)
        out[...] = values
        keep.append(buf)
        return out

    rng = np.random.default_rng(n * 1000 + a)
    t = (3 * rng.standard_normal((n, a))).astype(dtype)
    s = (3 * rng.standard_normal((n, a))).astype(dtype)
    t[rng.random((n, a)) < 0.2] = -np.inf
    t[:, 0] = 1.0  # every row keeps an action
    expected = C.softmax_kl(t, s, 2.0, 1.0)
    for flush_end in (True, False):
        kl, grad = C.softmax_kl(guarded(t, flush_end), guarded(s, not flush_end), 2.0, 1.0)
        np.testing.assert_array_equal(kl, expected[0])
        np.testing.assert_array_equal(grad, expected[1])
    print("ok")
""")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n,a", [(1, 1), (15, 3), (16, 16), (17, 18), (48, 18), (33, 4),
                                 (16, 64), (7, 65), (5, 300), (3, 1030)])
def test_reads_stay_inside_the_inputs(n, a, dtype):
    child = subprocess.run([sys.executable, "-c", CHILD, _C.__file__, str(n), str(a), dtype],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0 and child.stdout.strip() == "ok", (
        f"{n} x {a} {dtype}: exit status {child.returncode} (-11: a read out of bounds)\n"
        f"{child.stderr[-2000:]}")
