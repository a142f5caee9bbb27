"""
Inside the kernels
==================

What happens when you call :func:`graphm.functional.conv2d`?  Python checks the arguments and
describes the geometry; then one compiled Cython loop, split across threads by OpenMP, does the
arithmetic as a matrix multiply.  This tutorial follows one convolution from the formula to that
loop, shows how ``prange`` hands out the work, why the answer has the same bits for any number
of threads, and measures how the time scales with threads on the machine that built this page.

The Cython source is read from the installed package (``graphm/_kernels/_conv.pyx``), so the
excerpts below are the code that actually runs.
"""

import os
import pathlib
import time

import matplotlib.pyplot as plt
import numpy as np

import graphm
import graphm._kernels
import graphm.functional as F
from graphm import spec

rng = np.random.default_rng(0)
KERNEL_DIR = pathlib.Path(graphm._kernels.__file__).parent


def show_source(filename, start, end, skip_docstring=True):
    """Print the lines of a kernel source file from the line containing ``start`` to ``end``."""
    lines = (KERNEL_DIR / filename).read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if start in line)
    last = next(i for i in range(first + 1, len(lines)) if end in lines[i])
    excerpt = lines[first:last + 1]
    if skip_docstring:   # the docstrings are on the API pages; keep the code
        quotes = [i for i, line in enumerate(excerpt) if '"""' in line]
        if len(quotes) >= 2:
            excerpt = excerpt[:quotes[0]] + excerpt[quotes[1] + 1:]
    print(f"# {filename}, from line {first + 1}")
    print("\n".join(excerpt))


# %%
# Step 1: the loop you would write
# --------------------------------
#
# For one sample, the 2-d convolution is four nested sums (see the first tutorial):
#
# .. math::
#
#     y[o, i_1, i_2] = b[o] + \sum_{c}\sum_{\kappa_1,\kappa_2} w[o, c, \kappa_1, \kappa_2]\,
#     x[c,\; i_1 s - p + \kappa_1 \delta,\; i_2 s - p + \kappa_2\delta].
#
# Written as Python loops it is obviously right and hopelessly slow: one interpreted
# multiply-add per term, about a microsecond each.


def conv2d_loops(x, w, stride, padding):
    """x (C, H, W), w (O, C, k, k): six nested loops straight from the formula."""
    channels, height, width = x.shape
    out_channels, _, k, _ = w.shape
    out_h, out_w = spec.conv_out_spatial((height, width), k, stride, padding)
    y = np.zeros((out_channels, out_h, out_w))
    for o in range(out_channels):
        for i1 in range(out_h):
            for i2 in range(out_w):
                for c in range(channels):
                    for k1 in range(k):
                        for k2 in range(k):
                            r, s = i1 * stride - padding + k1, i2 * stride - padding + k2
                            if 0 <= r < height and 0 <= s < width:
                                y[o, i1, i2] += w[o, c, k1, k2] * x[c, r, s]
    return y


x = rng.standard_normal((3, 12, 12))
w = rng.standard_normal((4, 3, 3, 3))
start = time.perf_counter()
y_loops = conv2d_loops(x, w, stride=1, padding=1)
loop_seconds = time.perf_counter() - start
start = time.perf_counter()
y_graphm = F.conv2d(x, w, padding=1)
graphm_seconds = time.perf_counter() - start
print(f"Python loops: {loop_seconds * 1e3:.1f} ms, graphm: {graphm_seconds * 1e3:.2f} ms, "
      f"max difference {np.abs(y_loops - y_graphm).max():.1e}")

# %%
# Step 2: the geometry, six small integers per axis
# --------------------------------------------------
#
# Stride, padding and dilation only decide *which input position each kernel tap reads for
# each output position*.  Along one axis, output index ``o`` and tap ``t`` read input index
# ``o * stride - pad_low + t * dilation``, and the tap falls into the zero padding where that is
# outside the input.  So the compiled code is told six integers per spatial axis — the input
# and output extents, the kernel extent, the stride, the low padding and the dilation — and
# sees the arrays with their spatial axes flattened, ``(N, C, positions)``: one loop serves
# 1-d, 2-d, 3-d and higher convolutions.  Here is the table of flat input positions read,
# ``offset(k, p)`` (``k`` = kernel tap, ``p`` = output position, both flattened), for a 3 x 3
# kernel, stride 1, padding 1 on a 6 x 6 input.  The kernels never store such a table (it has
# taps x positions entries: 3.6 GB for a 1000 x 1000 image and a 31 x 31 kernel); each unit of
# work computes the part it needs from the six integers, as we do here:


def offsets_2d(size, k, stride, padding):
    """offset[k1*k + k2, i1*out + i2] = flat input index read, or -1 (padding)."""
    out = spec.conv_out_spatial(size, k, stride, padding)
    taps = np.arange(k)
    starts = np.arange(out) * stride - padding
    index = starts[None, :] + taps[:, None]                       # (k, out) along one axis
    valid = (index >= 0) & (index < size)
    rows = index[:, None, :, None]                                # (k1, 1, i1, 1)
    cols = index[None, :, None, :]                                # (1, k2, 1, i2)
    ok = valid[:, None, :, None] & valid[None, :, None, :]
    return np.where(ok, rows * size + cols, -1).reshape(k * k, out * out)


offset = offsets_2d(6, 3, stride=1, padding=1)
fig, ax = plt.subplots(figsize=(9, 2.6))
ax.imshow(np.ma.masked_less(offset, 0), cmap="viridis", aspect="auto")
ax.imshow(np.ma.masked_greater_equal(offset, 0), cmap="Greys", vmin=-3, vmax=0, aspect="auto")
ax.set_xlabel("output position p (6 x 6, flattened)")
ax.set_ylabel("kernel tap k (3 x 3)")
ax.set_title("offset(k, p): input position read (colour), or zero padding (grey)", fontsize=10)
fig.tight_layout()

# %%
# Along each row of that picture the positions come in *runs*: while only the last axis moves,
# the input position grows by the stride, and it is inside the input on one interval.  The
# kernels describe a block of output positions by those runs (``tile_runs`` in ``_conv.pyx``),
# which costs a few integers per run instead of one per position.
#
# The plain loop version of the kernel
# ------------------------------------
#
# Before the fast path, the plain one.  ``conv_forward_plain`` in ``_conv.pyx`` is the formula of
# Step 1 compiled, for any rank: for each sample and output channel (one parallel iteration
# each), each output position, each input channel of the group and each kernel tap, find the
# input position read (``input_offset``) and multiply-add.  The padding is an explicit zero
# that is multiplied like any input value:

show_source("_conv.pyx", "cdef inline Py_ssize_t input_offset", "return offset")
show_source("_conv.pyx", "for n_o in prange(n_samples * out_channels", "out[n, o, p] = total",
            skip_docstring=False)

# %%
# Step 3: im2col turns the sums into one matrix product
# -----------------------------------------------------
#
# Copy the input values the table points at into a matrix ``cols[c*K + k, p] =
# x[c, offset(k, p)]`` (zero where ``offset`` is -1).  Each column of ``cols`` is then one
# output position's receptive field, unrolled, and the whole convolution is
#
# .. math::
#
#     \underbrace{Y}_{(O,\;P)} = \underbrace{W}_{(O,\;C K)}\;\underbrace{\mathrm{cols}}_{(C K,\;P)} .
#
# Three NumPy lines do it, and agree with graphm:

x6 = rng.standard_normal((3, 6, 6))
w6 = rng.standard_normal((4, 3, 3, 3))
flat_x = np.concatenate([x6.reshape(3, 36), np.zeros((3, 1))], axis=1)  # index -1 -> a zero
cols = flat_x[:, offset].reshape(3 * 9, 36)                            # (C*K, P)
y_im2col = (w6.reshape(4, 27) @ cols).reshape(4, 6, 6)
print("im2col + matmul vs graphm:", np.abs(y_im2col - F.conv2d(x6, w6, padding=1)).max())

# %%
# A matrix multiply is the most optimised loop in computing: it reuses every value it loads
# from memory many times.  graphm's is a small BLIS-style GEMM: blocks of the two matrices are
# packed into contiguous panels that fit the caches, and a C *micro-kernel* multiplies a 6-row
# panel by a 16-column panel while the whole 6 x 16 tile of the result stays in twelve vector
# registers.  Its heart:

show_source("gemm_microkernel.h", "for (ptrdiff_t k = 0; k < kc; ++k)", "c5l += a[5]",
            skip_docstring=False)

# %%
# Step 4: the Cython loop and ``prange``
# --------------------------------------
#
# ``conv_forward`` in ``_conv.pyx`` cuts the convolution into independent **work units**: one
# sample, one group, one block of 256 output positions.  A unit gathers its block of ``cols``
# (written straight into the order the matrix multiply reads, never as a whole matrix)
# and multiplies; it writes its own slice of ``out`` and nothing else.  The ``with nogil,
# parallel(...)`` block starts the OpenMP threads (each ``malloc``\ s its own scratch buffers),
# and ``prange(units, schedule='static')`` hands every thread a contiguous share of the units:

show_source("_conv.pyx", "cdef Py_ssize_t blocks = (positions_out", "cdef Py_ssize_t units")
show_source("_conv.pyx", "with nogil, parallel(num_threads=num_threads):", "free(pack_b)")

# %%
# How ``schedule='static'`` splits the units
# ------------------------------------------
#
# With :math:`U` units and :math:`T` threads, OpenMP's static schedule gives thread :math:`t` one
# contiguous run of about :math:`U/T` units.  For the LeNet-sized benchmark case (64 samples,
# one group, 28 x 28 = 784 output positions = 4 blocks of 256) there are 256 units.  Each row
# below is one thread count; the colour says which thread computes which unit:


def static_schedule(units, threads):
    """Thread id of each unit under OpenMP's schedule(static) without a chunk size."""
    base, extra = divmod(units, threads)
    sizes = [base + (t < extra) for t in range(threads)]
    return np.repeat(np.arange(threads), sizes)


units = 64 * 1 * int(np.ceil(28 * 28 / 256))
fig, ax = plt.subplots(figsize=(9, 2.4))
thread_counts = [1, 2, 3, 4, 8]
owner = np.stack([static_schedule(units, t) for t in thread_counts])
ax.imshow(owner, aspect="auto", cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
ax.set_yticks(range(len(thread_counts)), [f"{t} thread{'s' * (t > 1)}" for t in thread_counts])
ax.set_xlabel(f"work unit (sample, group, block of output positions): {units} units")
ax.set_title("prange(units, schedule='static'): which thread runs which unit", fontsize=10)
fig.tight_layout()

# %%
# The same bits for any thread count
# ----------------------------------
#
# Floating-point addition is not associative, so a sum computed in a different order can give
# a different last bit.  In graphm the *units* are cut by fixed constants, never by the thread
# count, each unit's arithmetic is the same whoever runs it, and no two units add into the same
# output (the weight gradient adds its per-block partial sums in block order afterwards).  So
# the threads change *who* computes a unit, never *what* is computed, and every result is
# identical bit for bit:

x = rng.standard_normal((16, 8, 20, 20)).astype(np.float32)
w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
g = rng.standard_normal((16, 16, 20, 20)).astype(np.float32)
results = {}
for threads in [1, 2, 3, 5]:
    graphm.set_num_threads(threads)
    results[threads] = (F.conv2d(x, w, padding=1),) + tuple(F.conv_backward(g, x, w, padding=1))
for threads in [2, 3, 5]:
    same = all(np.array_equal(a, b) for a, b in zip(results[1], results[threads]))
    print(f"{threads} threads vs 1 thread: output and all three gradients bit-identical: {same}")

# %%
# Thread scaling, measured while this page was built
# --------------------------------------------------
#
# Finally, the speed.  We time the forward pass and forward + backward of the benchmark's
# ``mid`` case (32 samples, 16 -> 32 channels, 32 x 32, 3 x 3 kernel, float32) for each thread
# count, taking the best of a few runs.  The machine that built this page had the CPUs printed
# below; with more threads than CPUs the threads only take turns, so the time cannot improve
# past that point.  In a serial build (``graphm.openmp_enabled()`` is False) every ``prange``
# is a plain loop and the curve stays flat at 1.  (On a busy machine the numbers are noisy:
# the benchmark script, ``python benchmarks/bench_conv.py``, takes medians over many runs.)

cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
print(f"OpenMP build: {graphm.openmp_enabled()}, CPUs available to this process: {cpus}")

x = rng.standard_normal((32, 16, 32, 32)).astype(np.float32)
w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32) * 0.1
b = np.zeros(32, dtype=np.float32)
grad_y = np.ones((32, 32, 32, 32), dtype=np.float32)
flops_forward = 2 * 32 * 32 * 32 * 32 * 16 * 9          # 2 * N * O * positions * C * K


def forward():
    return F.conv2d(x, w, b, padding=1)


def forward_backward():
    F.conv2d(x, w, b, padding=1)
    return F.conv_backward(grad_y, x, w, padding=1)


def seconds(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


# 1 .. 2 x the cores (at most 8): up to the cores the speedup should grow, past them it cannot.
cores = max(2, min(cpus, 4))
thread_counts = list(range(1, 2 * cores + 1))
timings = {"forward": {t: [] for t in thread_counts},
           "forward + backward": {t: [] for t in thread_counts}}
forward_backward()                               # warm up: first touch of every buffer
for repeat in range(5):
    # Round robin over the thread counts, so that a burst of load from other programs on the
    # machine hits all of them alike; keep the best time of each.
    for threads in thread_counts:
        graphm.set_num_threads(threads)
        timings["forward"][threads].append(seconds(forward))
        timings["forward + backward"][threads].append(seconds(forward_backward))
graphm.set_num_threads(min(2, cpus))
timings = {label: [min(times[t]) for t in thread_counts] for label, times in timings.items()}

print(f"{'threads':>7}  {'forward ms':>10}  {'GFLOP/s':>8}  {'fwd+bwd ms':>10}  speedup")
for i, threads in enumerate(thread_counts):
    fwd, both = timings["forward"][i], timings["forward + backward"][i]
    print(f"{threads:>7}  {fwd * 1e3:>10.2f}  {flops_forward / fwd / 1e9:>8.1f}  "
          f"{both * 1e3:>10.2f}  {timings['forward + backward'][0] / both:>6.2f}x")

fig, ax = plt.subplots(figsize=(6, 3.8))
for label, times in timings.items():
    ax.plot(thread_counts, times[0] / np.array(times), "o-", label=label)
ax.plot(thread_counts, [min(t, cpus) for t in thread_counts], "k:", label="ideal (CPUs)")
ax.axvline(cpus, color="0.7", linewidth=1)
ax.set_xlabel("graphm.set_num_threads(n)")
ax.set_ylabel("speedup over 1 thread")
ax.set_title(f"conv2d, mid case, float32, on {cpus} CPUs", fontsize=10)
ax.set_xticks(thread_counts)
ax.legend()
fig.tight_layout()

# %%
# The plain loops beside the fast kernel
# --------------------------------------
#
# Both kernels take the same arguments: the flattened arrays and the ``(6, d)`` geometry array
# (rows: input extent, output extent, kernel, stride, low padding, dilation; one column per
# axis).  We time them on the first 4 samples of the ``mid`` case, one thread, and check that
# they agree.

from graphm._kernels import _conv as kernels

geometry = np.array([[32, 32], [32, 32], [3, 3], [1, 1], [1, 1], [1, 1]], dtype=np.intp)
x3, w2 = np.ascontiguousarray(x[:4]).reshape(4, 16, -1), w.reshape(32, -1)
flops_4 = flops_forward // 8                             # 4 of the 32 samples
out_plain = np.empty((4, 32, 32 * 32), dtype=np.float32)
out_fast = np.empty_like(out_plain)


def plain():
    kernels.conv_forward_plain(x3, w2, b, geometry, 1, out_plain, 1)


def fast():
    kernels.conv_forward(x3, w2, b, geometry, 1, out_fast, 1)


plain_seconds = min(seconds(plain) for _ in range(3))
fast_seconds = min(seconds(fast) for _ in range(5))
agree = np.abs(out_plain - out_fast).max() / np.abs(out_fast).max()
assert agree < 1e-5, agree
plain_speedup = plain_seconds / fast_seconds
print(f"plain loops: {plain_seconds * 1e3:.1f} ms ({flops_4 / plain_seconds / 1e9:.1f} "
      f"GFLOP/s); im2col + packed GEMM: {fast_seconds * 1e3:.2f} ms "
      f"({flops_4 / fast_seconds / 1e9:.1f} GFLOP/s); the fast one is "
      f"{plain_speedup:.1f}x faster; largest relative difference {agree:.1e}")

fig, ax = plt.subplots(figsize=(6, 2.4))
ax.barh(["plain loops", "im2col + GEMM"], [plain_seconds * 1e3, fast_seconds * 1e3],
        color=["0.6", "tab:blue"])
ax.set_xlabel("ms per forward pass (mid case, 4 samples, float32, 1 thread)")
ax.set_title(f"the same convolution: {plain_speedup:.1f}x apart", fontsize=10)
fig.tight_layout()

# %%
# What to remember
# ----------------
#
# What this page measured, on the machine that built it:

best = int(np.argmin(timings["forward + backward"]))
best_threads = thread_counts[best]
best_speedup = timings["forward + backward"][0] / timings["forward + backward"][best]
print(f"* plain loops vs im2col + packed GEMM, mid forward (4 samples), one thread: the fast "
      f"kernel took "
      f"{1 / plain_speedup:.2g} of the plain loops' time ({plain_speedup:.1f}x "
      f"{'faster' if plain_speedup > 1 else 'slower'}).")
print(f"* forward + backward was fastest with {best_threads} thread(s), "
      f"{best_speedup:.2f}x the speed of one thread, on {cpus} CPU(s); "
      + ("more threads than that did not help." if best_threads < thread_counts[-1] else
         "the largest thread count tried was the fastest."))
print("* every thread count gave the same bits: " +
      str(all(all(np.array_equal(a, b) for a, b in zip(results[1], results[t]))
              for t in [2, 3, 5])))

# %%
# And what holds on every machine:
#
# * Python describes the geometry with six integers per axis; the compiled loop computes which
#   input positions each block of work reads, gathers, multiplies and scatters.  No table of
#   taps x positions is built, so the extra memory of a call stays a few MB.
# * im2col turns a convolution into a matrix product, and a packed, register-blocked GEMM
#   computes that product; the plain loops above are what it replaces.
# * ``prange(units, schedule='static')`` splits independent work units over threads; because the
#   units never depend on the thread count and never write the same output, the results are
#   identical bit for bit for any ``graphm.set_num_threads(n)``.
