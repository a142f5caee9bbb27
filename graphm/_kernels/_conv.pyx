"""The three convolution kernels of graphm, and the matrix multiply they stand on.

Three kernels serve both convolution and transposed convolution (the adjoint table on the
concepts page of the documentation).  With ``x`` the input, ``w`` the weight and ``g`` the gradient of the output:

=====================  ================================  ====================================
kernel                 as convolution                    as transposed convolution
=====================  ================================  ====================================
``conv_forward``       forward ``K_fwd(x, w) + b``       VJP w.r.t. its input ``K_fwd(g, w)``
``conv_input_grad``    VJP w.r.t. input ``K_in(g, w)``   forward ``K_in(x, w) + b``
``conv_weight_grad``   VJP w.r.t. weight ``K_w(x, g)``   VJP w.r.t. weight ``K_w(g, x)``
=====================  ================================  ====================================

Every kernel sees the spatial axes flattened, so one code path serves any rank d >= 1:

* ``x`` is ``(N, C, S)`` with ``S`` the number of input positions,
* the conv output is ``(N, O, P)`` with ``P`` the number of output positions,
* ``w`` is ``(O, Cg * K)`` with ``Cg = C / groups`` and ``K`` the number of kernel taps,
* ``geometry`` is a small ``(6, d)`` integer array, one column per spatial axis: the input
  extent, the output extent, the kernel extent, the stride, the low padding and the dilation.
  Along axis ``a``, output index ``o`` and kernel tap ``t`` read input index
  ``o * stride - pad_low + t * dilation``, zero padding where that falls outside the input.

No table of taps x positions is ever built: each work unit computes the flat input positions
its tile reads (``tile_runs``, below) from those few integers, as a few runs along the last axis, in a
small per-thread buffer.  Python (``graphm.functional.conv``) checks the arguments and builds
``geometry``; the kernels check that the shapes agree with it before they drop the GIL.

How a convolution becomes a matrix multiply (im2col).  For one sample and one group, gather the
input into a matrix ``cols[c*K + k, p] = x[c, offset(k, p)]`` (0 in the padding); then

* forward:       ``y = W @ cols``                 ``(Og, P) = (Og, Cg*K) @ (Cg*K, P)``
* input grad:    ``dcols = W.T @ g``, then scatter ``dcols`` back to the positions read (col2im)
* weight grad:   ``dW = sum over samples of g @ cols.T``

``cols`` is never stored whole: a block of it is written, one tile of positions at a time,
straight into the packed order of the GEMM operand.

Parallel loops write only what no other iteration writes, so no result depends on timing:
the forward splits by (sample, group, block of output positions), the input gradient by (sample, group, block of
input channels), the weight gradient by (block of samples, group, block of weight columns),
and the per-block partial sums of the weight gradient are added in a fixed order.  How the work
is cut never depends on the thread count, so the results are bit-for-bit identical for any
number of threads.

Zero padding is an explicit value 0: a padded tap puts a 0 into ``cols`` and the product is
formed (so a NaN weight meeting the padding gives NaN, as ``np.pad`` then the sum would); the
input gradient's scatter never writes a padded position.  ``conv_forward_plain`` is the same
forward convolution as four plain loops, for reading (tutorial 8) and testing.

These functions are private API (``graphm.functional`` is the door).
"""
cimport cython
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc

import os

import numpy as np

cdef extern from "gemm_microkernel.h" nogil:
    int GRAPHM_SGEMM_MR
    int GRAPHM_DGEMM_MR
    int graphm_sgemm_nr()
    int graphm_dgemm_nr()
    int graphm_select_tiles(int allow_wide)
    void graphm_sgemm_micro(Py_ssize_t kc, const float *a_panel, const float *b_panel,
                            float *c, Py_ssize_t ldc, int mr, int nr, int accumulate)
    void graphm_dgemm_micro(Py_ssize_t kc, const double *a_panel, const double *b_panel,
                            double *c, Py_ssize_t ldc, int mr, int nr, int accumulate)

# The micro-kernel's tile width is chosen once, now: AVX-512 where the CPU has it, unless
# GRAPHM_NO_AVX512=1 (which lets the test-suite exercise the AVX2 tiles on any machine).
WIDE_TILES = bool(graphm_select_tiles(os.environ.get("GRAPHM_NO_AVX512", "0") != "1"))

# Cache blocking of the matrix multiply: K is cut into blocks of GEMM_KC, so that a KC x NR panel
# of B (16 KiB in float32) stays in L1 while the micro-kernel runs down the rows of A; the
# micro-kernel's tile of C lives in registers.
cdef enum:
    GEMM_KC = 256

# How the convolutions are cut into independent work units.  These constants, never the thread
# count, decide the order of every floating-point sum.
cdef enum:
    POSITIONS_PER_UNIT = 256   # output positions per im2col block
    ROWS_PER_UNIT = 192        # aim for at least this many rows of dcols per input-grad unit
    WEIGHT_COLS_PER_UNIT = 128 # columns of dW per weight-grad unit (whole tiles of 16 or 32)
    SAMPLES_PER_UNIT = 4       # samples summed by one weight-grad unit before the fixed-order sum
    MIN_WORK_PER_THREAD = 65536  # multiply-adds (tens of microseconds) that justify one more thread


# ----------------------------------------------------------------------------------------------
# The matrix multiply: C[M, N] += A[M, K] @ B[K, N], serial, for one thread's share of the work.
#
# Both operands are first copied ("packed") into the order in which the micro-kernel reads them:
# A into panels of MR rows, B into panels of NR columns, each panel running down all of K.  The
# weight is packed once per call and shared by every thread.  The convolutions never build B and
# then pack it: im2col writes its gathered values straight into B's packed order (below), which
# saves a pass over the largest operand.
# ----------------------------------------------------------------------------------------------

cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline int tile_rows(floating *dummy) noexcept nogil:
    if floating is float:
        return GRAPHM_SGEMM_MR
    else:
        return GRAPHM_DGEMM_MR


cdef inline int tile_cols(floating *dummy) noexcept nogil:
    if floating is float:
        return graphm_sgemm_nr()
    else:
        return graphm_dgemm_nr()


cdef inline Py_ssize_t packed_a_size(floating *dummy, Py_ssize_t m, Py_ssize_t k) noexcept nogil:
    """Elements of a packed A of m rows (rounded up to whole panels) and k columns."""
    return ceil_div(m, tile_rows(dummy)) * tile_rows(dummy) * k


cdef inline Py_ssize_t packed_b_size(floating *dummy, Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    """Elements of a packed B of k rows and n columns (rounded up to whole panels)."""
    return k * ceil_div(n, tile_cols(dummy)) * tile_cols(dummy)


cdef void pack_a_panels(const floating *a, Py_ssize_t row_stride, Py_ssize_t col_stride,
                        Py_ssize_t m, Py_ssize_t k, floating *packed) noexcept nogil:
    """Pack A (m x k, any strides): packed[(panel*k + kk)*MR + i] = A[panel*MR + i, kk]."""
    cdef int mr = tile_rows(packed)
    cdef Py_ssize_t panel, i0, i, kk, rows
    cdef floating *dst
    for panel in range(ceil_div(m, mr)):
        i0 = panel * mr
        rows = min(<Py_ssize_t> mr, m - i0)
        for kk in range(k):
            dst = packed + (panel * k + kk) * mr
            for i in range(rows):
                dst[i] = a[(i0 + i) * row_stride + kk * col_stride]
            for i in range(rows, mr):
                dst[i] = 0   # zero padding: the edge tile computes harmless zeros


cdef void pack_b_rows(const floating *b, Py_ssize_t row_stride, Py_ssize_t k, Py_ssize_t n,
                      floating *packed) noexcept nogil:
    """Pack a row-major k x n matrix B: packed[(panel*k + kk)*NR + j] = B[kk, panel*NR + j]."""
    cdef int nr = tile_cols(packed)
    cdef Py_ssize_t panel, j0, j, kk, cols
    cdef floating *dst
    for panel in range(ceil_div(n, nr)):
        j0 = panel * nr
        cols = min(<Py_ssize_t> nr, n - j0)
        for kk in range(k):
            dst = packed + (panel * k + kk) * nr
            for j in range(cols):
                dst[j] = b[kk * row_stride + j0 + j]
            for j in range(cols, nr):
                dst[j] = 0


cdef void gemm_packed(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                      const floating *packed_a, const floating *packed_b,
                      floating *c, Py_ssize_t ldc, bint accumulate) noexcept nogil:
    """C (row-major, leading dimension ldc) (+)= A @ B for packed A and B (BLIS-style loops).

    With ``accumulate`` false the first block of K overwrites C instead of adding to it.  Each
    element of C receives one addition per GEMM_KC-block of K, in increasing K: a fixed order,
    whoever runs it.
    """
    cdef int mr = tile_rows(c), nr = tile_cols(c)
    cdef Py_ssize_t pc, kc, pc_block, col_panel, row_panel
    cdef int add
    for pc_block in range(ceil_div(k, GEMM_KC)):
        pc = pc_block * GEMM_KC
        kc = min(<Py_ssize_t> GEMM_KC, k - pc)
        add = accumulate or pc_block > 0
        for col_panel in range(ceil_div(n, nr)):
            for row_panel in range(ceil_div(m, mr)):
                if floating is float:
                    graphm_sgemm_micro(kc, packed_a + (row_panel * k + pc) * mr,
                                       packed_b + (col_panel * k + pc) * nr,
                                       c + row_panel * mr * ldc + col_panel * nr, ldc,
                                       min(mr, m - row_panel * mr), min(nr, n - col_panel * nr),
                                       add)
                else:
                    graphm_dgemm_micro(kc, packed_a + (row_panel * k + pc) * mr,
                                       packed_b + (col_panel * k + pc) * nr,
                                       c + row_panel * mr * ldc + col_panel * nr, ldc,
                                       min(mr, m - row_panel * mr), min(nr, n - col_panel * nr),
                                       add)


# ----------------------------------------------------------------------------------------------
# The geometry, and the input positions one tile reads.
# ----------------------------------------------------------------------------------------------

cdef enum:
    MAX_RANK = 64      # spatial axes (NumPy arrays have at most 64 axes)

cdef struct Geometry:
    int rank
    Py_ssize_t taps, positions_in, positions_out
    Py_ssize_t extent_in[MAX_RANK]
    Py_ssize_t extent_out[MAX_RANK]
    Py_ssize_t kernel[MAX_RANK]
    Py_ssize_t stride[MAX_RANK]
    Py_ssize_t pad_low[MAX_RANK]
    Py_ssize_t dilation[MAX_RANK]
    Py_ssize_t step_in[MAX_RANK]   # row-major strides of the flattened input


cdef int read_geometry(const Py_ssize_t[:, ::1] geometry, Geometry *geo) except -1:
    """Fill ``geo`` from the (6, d) array (rows: in, out, kernel, stride, pad_low, dilation),
    checking what the loops rely on (with the GIL held: they trust it afterwards)."""
    _check(geometry.shape[0] == 6, "geometry must have 6 rows")
    cdef int rank = <int> geometry.shape[1], a
    _check(1 <= rank <= MAX_RANK, "geometry rank")
    geo.rank = rank
    geo.taps = geo.positions_in = geo.positions_out = 1
    for a in range(rank):
        geo.extent_in[a], geo.extent_out[a] = geometry[0, a], geometry[1, a]
        geo.kernel[a], geo.stride[a] = geometry[2, a], geometry[3, a]
        geo.pad_low[a], geo.dilation[a] = geometry[4, a], geometry[5, a]
        _check(geo.extent_in[a] >= 1 and geo.extent_out[a] >= 1 and geo.kernel[a] >= 1
               and geo.stride[a] >= 1 and geo.dilation[a] >= 1, "geometry values")
        geo.taps *= geo.kernel[a]
        geo.positions_in *= geo.extent_in[a]
        geo.positions_out *= geo.extent_out[a]
    geo.step_in[rank - 1] = 1
    for a in range(rank - 2, -1, -1):
        geo.step_in[a] = geo.step_in[a + 1] * geo.extent_in[a + 1]
    return 0


cdef struct Run:
    # Output positions start .. start+count-1 of a tile, consecutive along the last axis: the
    # t-th reads input position base + t * stride of the last axis if lo <= t < hi, else it is
    # in the zero padding.
    Py_ssize_t start, count, lo, hi, base


cdef inline Py_ssize_t max_runs(const Geometry *geo) noexcept nogil:
    """The most runs a tile of POSITIONS_PER_UNIT positions can have."""
    return min(<Py_ssize_t> POSITIONS_PER_UNIT,
               POSITIONS_PER_UNIT // geo.extent_out[geo.rank - 1] + 2)


cdef Py_ssize_t tile_runs(const Geometry *geo, Py_ssize_t tap, Py_ssize_t p_start,
                          Py_ssize_t p_count, Run *runs) noexcept nogil:
    """Which input positions kernel tap ``tap`` reads for output positions p_start ..
    p_start + p_count - 1, as runs along the last axis; returns the number of runs.

    The tap and the first position are split into per-axis indices once; then the positions
    are walked like an odometer, one run along the last axis at a time.  Along a run only the
    last axis moves, so the run is an arithmetic progression of input positions, inside the
    input for one interval of t (or none, where another axis is in the padding).
    """
    cdef Py_ssize_t shift[MAX_RANK]      # per axis: tap * dilation - pad_low
    cdef Py_ssize_t index[MAX_RANK]      # per axis: the output index of the current position
    cdef int last = geo.rank - 1, a
    cdef Py_ssize_t rest, j = 0, n_runs = 0, count, i, outer, first, stride_last, extent_last
    cdef bint inside
    cdef Run *run
    rest = tap
    for a in range(last, -1, -1):
        shift[a] = (rest % geo.kernel[a]) * geo.dilation[a] - geo.pad_low[a]
        rest = rest // geo.kernel[a]
    rest = p_start
    for a in range(last, -1, -1):
        index[a] = rest % geo.extent_out[a]
        rest = rest // geo.extent_out[a]
    stride_last, extent_last = geo.stride[last], geo.extent_in[last]
    while j < p_count:
        outer = 0
        inside = True
        for a in range(last):
            i = index[a] * geo.stride[a] + shift[a]
            if i < 0 or i >= geo.extent_in[a]:
                inside = False
                break
            outer = outer + i * geo.step_in[a]
        count = min(geo.extent_out[last] - index[last], p_count - j)
        run = runs + n_runs
        run.start, run.count, run.lo, run.hi = j, count, 0, 0
        first = index[last] * stride_last + shift[last]     # last-axis input index at t = 0
        run.base = outer + first
        if inside and first < extent_last:
            run.lo = 0 if first >= 0 else (stride_last - 1 - first) // stride_last
            run.hi = (extent_last - first + stride_last - 1) // stride_last
            run.lo = min(run.lo, count)
            run.hi = max(run.lo, min(run.hi, count))
        n_runs = n_runs + 1
        j = j + count
        index[last] = index[last] + count
        a = last
        while a > 0 and index[a] == geo.extent_out[a]:
            index[a] = 0
            a = a - 1
            index[a] = index[a] + 1
    return n_runs


# ----------------------------------------------------------------------------------------------
# im2col: gather input values into a matrix with one row per (channel, kernel tap) and one column
# per output position, written directly in the packed order of a GEMM operand.
# ----------------------------------------------------------------------------------------------

cdef void im2col_packed(const floating *x_group, const Geometry *geo, Py_ssize_t channels,
                        Py_ssize_t p_start, Py_ssize_t p_count, Run *runs, floating *row,
                        floating *packed) noexcept nogil:
    """cols[r, j] = x[c, offset(k, p_start + j)] (0 in the padding), for rows r = c*K + k,
    as the B operand of ``cols``-on-the-right products (conv forward): panels of NR positions.
    Scratch: ``runs`` for one tap's runs, which serve every channel, and ``row`` for one row of
    cols (POSITIONS_PER_UNIT values), built run by run and then cut into the panels."""
    cdef int nr = tile_cols(packed)
    cdef Py_ssize_t taps = geo.taps, rows = channels * taps
    cdef Py_ssize_t stride_last = geo.stride[geo.rank - 1]
    cdef Py_ssize_t n_runs, q, t, c, tap, panel, j, j0, width
    cdef const floating *src
    cdef floating *part
    cdef floating *dst
    cdef Run *run
    for tap in range(taps):
        n_runs = tile_runs(geo, tap, p_start, p_count, runs)
        for c in range(channels):
            for q in range(n_runs):
                run = runs + q
                src = x_group + c * geo.positions_in + run.base
                part = row + run.start
                for t in range(run.lo):
                    part[t] = 0
                for t in range(run.lo, run.hi):
                    part[t] = src[t * stride_last]
                for t in range(run.hi, run.count):
                    part[t] = 0
            for panel in range(ceil_div(p_count, nr)):
                j0 = panel * nr
                width = min(<Py_ssize_t> nr, p_count - j0)
                dst = packed + (panel * rows + c * taps + tap) * nr
                for j in range(width):
                    dst[j] = row[j0 + j]
                for j in range(width, nr):
                    dst[j] = 0


cdef void im2col_packed_transposed(const floating *x_group, const Geometry *geo,
                                   Py_ssize_t row_start, Py_ssize_t row_count,
                                   Py_ssize_t p_start, Py_ssize_t p_count,
                                   Run *runs, Py_ssize_t *run_counts,
                                   floating *packed) noexcept nogil:
    """cols.T for rows ``row_start ..`` of cols, as the B operand of ``g @ cols.T`` (the weight
    gradient): K runs over output positions, panels of NR rows of cols.

    ``runs`` is scratch for min(row_count, K) taps of max_runs(geo) runs (``run_counts`` one
    count per tap): the runs of each tap the rows use, computed once for all their channels."""
    cdef int nr = tile_cols(packed)
    cdef Py_ssize_t taps = geo.taps, stride_last = geo.stride[geo.rank - 1]
    cdef Py_ssize_t per_slot = max_runs(geo)
    cdef Py_ssize_t r, j, p, c, tap, panel, slot, q, t
    cdef bint every_tap = row_count >= taps
    cdef const floating *src
    cdef floating *dst
    cdef Run *run
    cdef Run *slot_runs
    # The rows are consecutive, so they use either every tap or row_count different ones.
    for slot in range(taps if every_tap else row_count):
        tap = slot if every_tap else (row_start + slot) % taps
        run_counts[slot] = tile_runs(geo, tap, p_start, p_count, runs + slot * per_slot)
    for panel in range(ceil_div(row_count, nr)):
        for j in range(nr):
            r = panel * nr + j
            dst = packed + panel * p_count * nr + j
            if r >= row_count:
                for p in range(p_count):
                    dst[p * nr] = 0
                continue
            c = (row_start + r) // taps
            tap = (row_start + r) - c * taps
            slot = tap if every_tap else r
            slot_runs = runs + slot * per_slot
            for q in range(run_counts[slot]):
                run = slot_runs + q
                src = x_group + c * geo.positions_in + run.base
                for t in range(run.count):
                    dst[(run.start + t) * nr] = src[t * stride_last] if run.lo <= t < run.hi else 0


cdef void fill_rows(floating *dst, Py_ssize_t rows, Py_ssize_t row_len, Py_ssize_t ld,
                    const floating *values, bint has_values) noexcept nogil:
    """dst[i, :row_len] = values[i] (or 0): the bias, or a clean start for a sum."""
    cdef Py_ssize_t i, j
    cdef floating v
    for i in range(rows):
        v = values[i] if has_values else 0
        for j in range(row_len):
            dst[i * ld + j] = v


cdef int threads_for(Py_ssize_t units, double work, int requested):
    """How many threads to start: no more than there are work units, and none for less than
    MIN_WORK_PER_THREAD multiply-adds each, where waking a thread would cost more than it saves.
    (The answer changes only the speed: how work is cut, and so every sum, never depends on it.)
    """
    cdef double worth_it = max(1.0, work / MIN_WORK_PER_THREAD)
    return <int> max(1, min(<double> requested, min(<double> units, worth_it)))


def _check(bint ok, str message):
    if not ok:
        raise ValueError("graphm._kernels: " + message)


# ----------------------------------------------------------------------------------------------
# The direct path: depthwise-like groupings without im2col or GEMM.
#
# With one input channel per group (depthwise convolution, C_out/groups = any multiplier) or one
# output channel per group (the adjoint of that: a depthwise transposed convolution), a group's
# GEMM has a single row or a single column, and most of the micro-kernel's tile would be padding.
# The direct path computes the sums as they are written instead, with the innermost loop over the
# contiguous output positions of one row (depthwise.h).  Work unit: (sample, group) for the
# forward and the input gradient, (block of SAMPLES_PER_UNIT samples, group) for the weight
# gradient, whose per-block partial sums are then added in block order (sum_partials): the same
# fixed cutting as the GEMM path, never the thread count.
#
# Each unit first copies its group's input planes into a zero-padded scratch buffer that holds
# exactly the positions the taps read: along axis a, (out - 1) * stride + (kernel - 1) *
# dilation + 1 positions, padded index i holding input index i - pad_low (0 outside the input).
# Then no read needs a bounds test, and a padded tap multiplies an explicit 0, as im2col does.
# The input gradient scatters into such a buffer (a padded position receives terms that are
# then dropped) and crops it back; only the terms that exist are formed there.
# ----------------------------------------------------------------------------------------------

cdef extern from "depthwise.h" nogil:
    void graphm_direct_plane_float(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t stride,
                                   const float *src, const Py_ssize_t *rowbase,
                                   const Py_ssize_t *off, const float *w, Py_ssize_t taps,
                                   float init, float *y)
    void graphm_direct_plane_double(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t stride,
                                    const double *src, const Py_ssize_t *rowbase,
                                    const Py_ssize_t *off, const double *w, Py_ssize_t taps,
                                    double init, double *y)
    void graphm_direct_scatter_float(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t stride,
                                     const float *g, const Py_ssize_t *rowbase,
                                     const Py_ssize_t *off, const float *w, Py_ssize_t taps,
                                     Py_ssize_t run, Py_ssize_t dilation, float *q)
    void graphm_direct_scatter_double(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t stride,
                                      const double *g, const Py_ssize_t *rowbase,
                                      const Py_ssize_t *off, const double *w, Py_ssize_t taps,
                                      Py_ssize_t run, Py_ssize_t dilation, double *q)
    float graphm_direct_dot_float(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t stride,
                                  const float *g, const Py_ssize_t *rowbase, const float *src)
    double graphm_direct_dot_double(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t stride,
                                    const double *g, const Py_ssize_t *rowbase,
                                    const double *src)


cdef inline bint use_direct(Py_ssize_t groups, Py_ssize_t group_channels,
                            Py_ssize_t group_out) noexcept nogil:
    """The direct path serves groupings whose GEMM would be a single row or column."""
    return groups > 1 and (group_channels == 1 or group_out == 1)


cdef struct Direct:
    # The padded copy of one group's input planes, and where the taps read in it.
    Py_ssize_t extent[MAX_RANK]      # per axis: (out - 1) * stride + (kernel - 1) * dilation + 1
    Py_ssize_t to_input[MAX_RANK]    # per axis: -pad_low (padded index i is input index i - pad_low)
    Py_ssize_t to_padded[MAX_RANK]   # per axis: +pad_low (input index i is padded index i + pad_low)
    Py_ssize_t plane                 # positions of one padded plane
    Py_ssize_t channels, out_channels  # input and output channels of one group
    Py_ssize_t row_taps              # channels * taps: the terms of one output position
    Py_ssize_t rows, row_len         # output rows (all axes but the last), their length
    Py_ssize_t stride_last, kernel_last, dilation_last   # of the last axis
    const Py_ssize_t *rowbase        # rows: where output row r starts reading in a padded plane
    const Py_ssize_t *offsets        # row_taps: where term (c, tap) reads, from the row's start


cdef object plan_direct(const Geometry *geo, Py_ssize_t group_channels, Py_ssize_t group_out,
                        Direct *plan):
    """Fill ``plan`` for ``geo``; returns the two index arrays it points into (keep them alive).
    Computed once per call, with the GIL: every unit reads them."""
    cdef int last = geo.rank - 1, a
    cdef Py_ssize_t step[MAX_RANK]
    cdef Py_ssize_t r, rest, base, tap, c
    plan.plane = 1
    for a in range(geo.rank):
        plan.extent[a] = ((geo.extent_out[a] - 1) * geo.stride[a]
                          + (geo.kernel[a] - 1) * geo.dilation[a] + 1)
        plan.to_input[a] = -geo.pad_low[a]
        plan.to_padded[a] = geo.pad_low[a]
        plan.plane *= plan.extent[a]
    step[last] = 1
    for a in range(last - 1, -1, -1):
        step[a] = step[a + 1] * plan.extent[a + 1]
    plan.channels, plan.out_channels = group_channels, group_out
    plan.row_taps = group_channels * geo.taps
    plan.row_len, plan.stride_last = geo.extent_out[last], geo.stride[last]
    plan.kernel_last, plan.dilation_last = geo.kernel[last], geo.dilation[last]
    plan.rows = geo.positions_out // plan.row_len
    rowbase = np.empty(plan.rows, dtype=np.intp)
    offsets = np.empty(plan.row_taps, dtype=np.intp)
    cdef Py_ssize_t[::1] rowbase_view = rowbase, offsets_view = offsets
    for r in range(plan.rows):
        rest, base = r, 0
        for a in range(last - 1, -1, -1):
            base += (rest % geo.extent_out[a]) * geo.stride[a] * step[a]
            rest = rest // geo.extent_out[a]
        rowbase_view[r] = base
    for tap in range(geo.taps):
        rest, base = tap, 0
        for a in range(last, -1, -1):
            base += (rest % geo.kernel[a]) * geo.dilation[a] * step[a]
            rest = rest // geo.kernel[a]
        for c in range(group_channels):
            offsets_view[c * geo.taps + tap] = c * plan.plane + base
    plan.rowbase, plan.offsets = &rowbase_view[0], &offsets_view[0]
    return rowbase, offsets


cdef void shifted_copy(const floating *src, const Py_ssize_t *src_extent, floating *dst,
                       const Py_ssize_t *dst_extent, const Py_ssize_t *shift, int rank,
                       floating fill, bint add_fill) noexcept nogil:
    """dst[i] = src[i + shift] (``fill + src[i + shift]`` with ``add_fill``) where i + shift is
    inside src, else ``fill``, for every position i of dst; both are row-major planes of
    ``rank`` axes.  Pads an input plane (shift -pad_low, fill 0) or crops a padded one back
    (shift +pad_low, fill the bias).  Writes every element of dst once."""
    cdef Py_ssize_t index[MAX_RANK]
    cdef Py_ssize_t src_step[MAX_RANK]
    cdef int last = rank - 1, a
    cdef Py_ssize_t length = dst_extent[last], rows = 1, r, i, j, lo, hi, start
    cdef bint inside
    cdef floating *d
    src_step[last] = 1
    for a in range(last - 1, -1, -1):
        src_step[a] = src_step[a + 1] * src_extent[a + 1]
    for a in range(last):
        rows *= dst_extent[a]
        index[a] = 0
    # along the last axis, dst[lo:hi] comes from src[lo + shift : hi + shift]
    lo = min(length, max(<Py_ssize_t> 0, -shift[last]))
    hi = max(lo, min(length, src_extent[last] - shift[last]))
    for r in range(rows):
        d = dst + r * length
        inside = True
        start = shift[last]
        for a in range(last):
            i = index[a] + shift[a]
            if i < 0 or i >= src_extent[a]:
                inside = False
                break
            start += i * src_step[a]
        if not inside:        # the row lies in the padding of another axis
            for j in range(length):
                d[j] = fill
        else:
            for j in range(lo):
                d[j] = fill
            if add_fill:
                for j in range(lo, hi):
                    d[j] = fill + src[start + j]
            else:
                for j in range(lo, hi):
                    d[j] = src[start + j]
            for j in range(hi, length):
                d[j] = fill
        a = last - 1          # the next row: an odometer over the other axes
        while a >= 0:
            index[a] += 1
            if index[a] < dst_extent[a]:
                break
            index[a] = 0
            a -= 1


cdef inline void direct_plane(const Direct *plan, const floating *src, const floating *w,
                              floating init, floating *y) noexcept nogil:
    if floating is float:
        graphm_direct_plane_float(plan.rows, plan.row_len, plan.stride_last, src, plan.rowbase,
                                  plan.offsets, w, plan.row_taps, init, y)
    else:
        graphm_direct_plane_double(plan.rows, plan.row_len, plan.stride_last, src, plan.rowbase,
                                   plan.offsets, w, plan.row_taps, init, y)


cdef inline void direct_scatter(const Direct *plan, const floating *g, const floating *w,
                                floating *q) noexcept nogil:
    if floating is float:
        graphm_direct_scatter_float(plan.rows, plan.row_len, plan.stride_last, g, plan.rowbase,
                                    plan.offsets, w, plan.row_taps, plan.kernel_last,
                                    plan.dilation_last, q)
    else:
        graphm_direct_scatter_double(plan.rows, plan.row_len, plan.stride_last, g, plan.rowbase,
                                     plan.offsets, w, plan.row_taps, plan.kernel_last,
                                     plan.dilation_last, q)


cdef inline floating direct_dot(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t stride,
                                const floating *g, const Py_ssize_t *rowbase,
                                const floating *src) noexcept nogil:
    if floating is float:
        return graphm_direct_dot_float(rows, n, stride, g, rowbase, src)
    else:
        return graphm_direct_dot_double(rows, n, stride, g, rowbase, src)


cdef void pad_group(const floating *x_group, const Geometry *geo, const Direct *plan,
                    floating *padded) noexcept nogil:
    """The padded copies of a group's plan.channels input planes, one after the other."""
    cdef Py_ssize_t c
    for c in range(plan.channels):
        shifted_copy(x_group + c * geo.positions_in, geo.extent_in, padded + c * plan.plane,
                     plan.extent, plan.to_input, geo.rank, <floating> 0, False)


cdef void direct_forward_unit(const floating *x_group, const floating *w_group,
                              const floating *b_group, floating *y_group, const Geometry *geo,
                              const Direct *plan, floating *padded) noexcept nogil:
    """y[o, p] = b[o] + sum_{c, k} w[o, c*K + k] * x[c, offset(k, p)] for one (sample, group);
    ``b_group`` NULL for no bias."""
    cdef Py_ssize_t o
    pad_group(x_group, geo, plan, padded)
    for o in range(plan.out_channels):
        direct_plane(plan, padded, w_group + o * plan.row_taps,
                     b_group[o] if b_group != NULL else 0, y_group + o * geo.positions_out)


cdef void direct_input_grad_unit(const floating *g_group, const floating *w_group,
                                 const floating *b_group, floating *dx_group,
                                 const Geometry *geo, const Direct *plan,
                                 floating *padded) noexcept nogil:
    """dx[c] = b[c] + every term w[o, c*K + k] * g[o, p] sent back to the position it read, for
    one (sample, group): scattered row by row into a padded buffer, which is then cropped."""
    cdef Py_ssize_t o, c, i
    for i in range(plan.channels * plan.plane):
        padded[i] = 0
    for o in range(plan.out_channels):
        direct_scatter(plan, g_group + o * geo.positions_out, w_group + o * plan.row_taps, padded)
    for c in range(plan.channels):
        shifted_copy(padded + c * plan.plane, plan.extent, dx_group + c * geo.positions_in,
                     geo.extent_in, plan.to_padded, geo.rank,
                     b_group[c] if b_group != NULL else 0, b_group != NULL)


cdef void direct_weight_grad_unit(const floating *x_ptr, const floating *g_ptr, Py_ssize_t n_start,
                                  Py_ssize_t n_stop, Py_ssize_t group, Py_ssize_t channels,
                                  Py_ssize_t out_channels, floating *dw_group,
                                  const Geometry *geo, const Direct *plan,
                                  floating *padded) noexcept nogil:
    """dw[o, c*K + k] = sum over samples n_start .. n_stop - 1 (in order) of the dot product of
    g[n, o] with the input positions term (c, k) reads, for one group's rows of dw."""
    cdef Py_ssize_t n, o, t
    cdef const floating *g_row
    for t in range(plan.out_channels * plan.row_taps):
        dw_group[t] = 0
    for n in range(n_start, n_stop):
        pad_group(x_ptr + (n * channels + group * plan.channels) * geo.positions_in, geo, plan,
                  padded)
        for o in range(plan.out_channels):
            g_row = g_ptr + (n * out_channels + group * plan.out_channels + o) * geo.positions_out
            for t in range(plan.row_taps):
                dw_group[o * plan.row_taps + t] += direct_dot(
                    plan.rows, plan.row_len, plan.stride_last, g_row, plan.rowbase,
                    padded + plan.offsets[t])


cdef int direct_forward(const floating *x_ptr, const floating *w_ptr, const floating *b_ptr,
                        floating *out_ptr, const Geometry *geo, Py_ssize_t n_samples,
                        Py_ssize_t groups, Py_ssize_t group_channels, Py_ssize_t group_out,
                        int num_threads) except -1:
    """K_fwd on the direct path (see conv_forward); ``b_ptr`` NULL for no bias."""
    cdef Direct plan
    keep_alive = plan_direct(geo, group_channels, group_out, &plan)
    cdef Py_ssize_t units = n_samples * groups, unit, n, g
    cdef Py_ssize_t channels = groups * group_channels, out_channels = groups * group_out
    cdef int out_of_memory = 0
    cdef int *out_of_memory_flag = &out_of_memory
    cdef floating *padded
    num_threads = threads_for(units, <double> n_samples * out_channels * geo.positions_out
                              * plan.row_taps, num_threads)
    with nogil, parallel(num_threads=num_threads):
        padded = <floating *> malloc(sizeof(floating) * plan.channels * plan.plane)
        if padded == NULL:
            out_of_memory_flag[0] = 1
        for unit in prange(units, schedule='static'):
            if padded == NULL:
                continue
            n = unit // groups
            g = unit % groups
            direct_forward_unit(x_ptr + (n * channels + g * group_channels) * geo.positions_in,
                                w_ptr + g * group_out * plan.row_taps,
                                b_ptr + g * group_out if b_ptr != NULL else b_ptr,
                                out_ptr + (n * out_channels + g * group_out) * geo.positions_out,
                                geo, &plan, padded)
        free(padded)
    if out_of_memory:
        raise MemoryError("graphm conv_forward: could not allocate scratch buffers")
    return 0


cdef int direct_input_grad(const floating *g_ptr, const floating *w_ptr, const floating *b_ptr,
                           floating *dx_ptr, const Geometry *geo, Py_ssize_t n_samples,
                           Py_ssize_t groups, Py_ssize_t group_channels, Py_ssize_t group_out,
                           int num_threads) except -1:
    """K_in on the direct path (see conv_input_grad); ``b_ptr`` NULL for no bias."""
    cdef Direct plan
    keep_alive = plan_direct(geo, group_channels, group_out, &plan)
    cdef Py_ssize_t units = n_samples * groups, unit, n, g
    cdef Py_ssize_t channels = groups * group_channels, out_channels = groups * group_out
    cdef int out_of_memory = 0
    cdef int *out_of_memory_flag = &out_of_memory
    cdef floating *padded
    num_threads = threads_for(units, <double> n_samples * out_channels * geo.positions_out
                              * plan.row_taps, num_threads)
    with nogil, parallel(num_threads=num_threads):
        padded = <floating *> malloc(sizeof(floating) * plan.channels * plan.plane)
        if padded == NULL:
            out_of_memory_flag[0] = 1
        for unit in prange(units, schedule='static'):
            if padded == NULL:
                continue
            n = unit // groups
            g = unit % groups
            direct_input_grad_unit(
                g_ptr + (n * out_channels + g * group_out) * geo.positions_out,
                w_ptr + g * group_out * plan.row_taps,
                b_ptr + g * group_channels if b_ptr != NULL else b_ptr,
                dx_ptr + (n * channels + g * group_channels) * geo.positions_in,
                geo, &plan, padded)
        free(padded)
    if out_of_memory:
        raise MemoryError("graphm conv_input_grad: could not allocate scratch buffers")
    return 0


cdef int direct_weight_grad(const floating *x_ptr, const floating *g_ptr, floating *partial_ptr,
                            const Geometry *geo, Py_ssize_t n_samples, Py_ssize_t groups,
                            Py_ssize_t group_channels, Py_ssize_t group_out,
                            int num_threads) except -1:
    """K_w on the direct path (see conv_weight_grad): each (block of samples, group) unit
    writes its rows of the block's partial dW (``partial_ptr``: one (O, Cg*K) array per block);
    the caller adds the partials in block order."""
    cdef Direct plan
    keep_alive = plan_direct(geo, group_channels, group_out, &plan)
    cdef Py_ssize_t sample_blocks = ceil_div(n_samples, SAMPLES_PER_UNIT)
    cdef Py_ssize_t units = sample_blocks * groups, unit, s_block, g
    cdef Py_ssize_t channels = groups * group_channels, out_channels = groups * group_out
    cdef Py_ssize_t weight_size = out_channels * plan.row_taps
    cdef int out_of_memory = 0
    cdef int *out_of_memory_flag = &out_of_memory
    cdef floating *padded
    num_threads = threads_for(units, <double> n_samples * out_channels * geo.positions_out
                              * plan.row_taps, num_threads)
    with nogil, parallel(num_threads=num_threads):
        padded = <floating *> malloc(sizeof(floating) * plan.channels * plan.plane)
        if padded == NULL:
            out_of_memory_flag[0] = 1
        for unit in prange(units, schedule='static'):
            if padded == NULL:
                continue
            s_block = unit // groups
            g = unit % groups
            direct_weight_grad_unit(
                x_ptr, g_ptr, s_block * SAMPLES_PER_UNIT,
                min(n_samples, (s_block + 1) * SAMPLES_PER_UNIT), g, channels, out_channels,
                partial_ptr + s_block * weight_size + g * group_out * plan.row_taps,
                geo, &plan, padded)
        free(padded)
    if out_of_memory:
        raise MemoryError("graphm conv_weight_grad: could not allocate scratch buffers")
    return 0


# ----------------------------------------------------------------------------------------------
# K_fwd: the convolution.  y[n, o, p] = b[o] + sum_{c, k} w[o, c*K + k] * x[n, c, offset(k, p)]
# ----------------------------------------------------------------------------------------------

def conv_forward(const floating[:, :, ::1] x, const floating[:, ::1] weight,
                 const floating[::1] bias, const Py_ssize_t[:, ::1] geometry, Py_ssize_t groups,
                 floating[:, :, ::1] out, int num_threads):
    """out = K_fwd(x, weight) + bias.  x (N, C, S), weight (O, C/groups*K), out (N, O, P).

    ``bias`` has length O, or 0 for no bias.  Work unit: (sample, group, block of positions);
    each unit writes its own ``out[n, group's channels, block]`` and nothing else.
    """
    cdef Py_ssize_t n_samples = x.shape[0], channels = x.shape[1], positions_in = x.shape[2]
    cdef Py_ssize_t out_channels = weight.shape[0], row_len = weight.shape[1]
    cdef Geometry geo
    read_geometry(geometry, &geo)
    cdef Py_ssize_t taps = geo.taps, positions_out = geo.positions_out
    _check(positions_in == geo.positions_in, "x positions != geometry's input positions")
    _check(groups >= 1 and channels % groups == 0 and out_channels % groups == 0, "groups")
    cdef Py_ssize_t group_channels = channels // groups, group_out = out_channels // groups
    _check(row_len == group_channels * taps, "weight columns != C/groups * taps")
    _check(bias.shape[0] in (0, out_channels), "bias length")
    _check(out.shape[0] == n_samples and out.shape[1] == out_channels
           and out.shape[2] == positions_out, "out shape")
    cdef Py_ssize_t blocks = (positions_out + POSITIONS_PER_UNIT - 1) // POSITIONS_PER_UNIT
    cdef Py_ssize_t units = n_samples * groups * blocks
    if units == 0 or out_channels == 0:
        return
    cdef const floating *x_ptr = &x[0, 0, 0]
    cdef const floating *w_ptr = &weight[0, 0]
    cdef const floating *b_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef floating *out_ptr = &out[0, 0, 0]
    cdef bint has_bias = bias.shape[0] > 0
    cdef int out_of_memory = 0
    cdef int *out_of_memory_flag = &out_of_memory
    cdef Py_ssize_t unit, n, g, block, p_start, p_count
    cdef floating *pack_b
    cdef floating *row
    cdef Run *runs
    cdef floating *out_block
    if use_direct(groups, group_channels, group_out):
        direct_forward(x_ptr, w_ptr, b_ptr, out_ptr, &geo, n_samples, groups, group_channels,
                       group_out, num_threads)
        return
    # A = the weight of each group, packed once and shared (read-only) by all threads.
    cdef Py_ssize_t weight_panel_size = packed_a_size(out_ptr, group_out, row_len)
    cdef floating[::1] packed_weight = np.empty(groups * weight_panel_size,
                                                dtype=np.asarray(out).dtype)
    cdef floating *packed_w_ptr = &packed_weight[0]
    with nogil:
        for g in range(groups):
            pack_a_panels(w_ptr + g * group_out * row_len, row_len, 1, group_out, row_len,
                          packed_w_ptr + g * weight_panel_size)
    num_threads = threads_for(units, <double> n_samples * out_channels * positions_out * row_len,
                              num_threads)
    with nogil, parallel(num_threads=num_threads):
        # Each thread owns its scratch buffer for the whole loop: B, the im2col matrix, packed.
        # and one tap's runs of input positions for a block of output positions.
        pack_b = <floating *> malloc(sizeof(floating) * packed_b_size(out_ptr, row_len,
                                                                      POSITIONS_PER_UNIT))
        runs = <Run *> malloc(sizeof(Run) * max_runs(&geo))
        row = <floating *> malloc(sizeof(floating) * POSITIONS_PER_UNIT)
        if pack_b == NULL or runs == NULL or row == NULL:
            out_of_memory_flag[0] = 1
        for unit in prange(units, schedule='static'):
            if pack_b == NULL or runs == NULL or row == NULL:
                continue
            n = unit // (groups * blocks)
            g = (unit // blocks) % groups
            block = unit % blocks
            p_start = block * POSITIONS_PER_UNIT
            p_count = min(<Py_ssize_t> POSITIONS_PER_UNIT, positions_out - p_start)
            im2col_packed(x_ptr + (n * channels + g * group_channels) * positions_in, &geo,
                          group_channels, p_start, p_count, runs, row, pack_b)
            out_block = out_ptr + (n * out_channels + g * group_out) * positions_out + p_start
            fill_rows(out_block, group_out, p_count, positions_out,
                      b_ptr + g * group_out if has_bias else b_ptr, has_bias)
            # (Og, p_count) += W_g (Og, Cg*K) @ cols (Cg*K, p_count)
            gemm_packed(group_out, p_count, row_len, packed_w_ptr + g * weight_panel_size,
                        pack_b, out_block, positions_out, True)
        free(pack_b)
        free(runs)
        free(row)
    if out_of_memory:
        raise MemoryError("graphm conv_forward: could not allocate scratch buffers")


# ----------------------------------------------------------------------------------------------
# K_fwd again, as plain loops: the formula, one multiply-add at a time (no im2col, no GEMM).
# ----------------------------------------------------------------------------------------------

cdef inline Py_ssize_t input_offset(const Geometry *geo, Py_ssize_t tap,
                                    Py_ssize_t position) noexcept nogil:
    """The flat input position that kernel tap ``tap`` reads for output position ``position``,
    or -1 where it falls into the zero padding: per axis (last first), split off the tap's and
    the position's index and read input index ``o * stride - pad_low + t * dilation``."""
    cdef Py_ssize_t offset = 0, t, o, i
    cdef int a
    for a in range(geo.rank - 1, -1, -1):
        t = tap % geo.kernel[a]
        tap = tap // geo.kernel[a]
        o = position % geo.extent_out[a]
        position = position // geo.extent_out[a]
        i = o * geo.stride[a] - geo.pad_low[a] + t * geo.dilation[a]
        if i < 0 or i >= geo.extent_in[a]:
            return -1
        offset = offset + i * geo.step_in[a]
    return offset


def conv_forward_plain(const floating[:, :, ::1] x, const floating[:, ::1] weight,
                       const floating[::1] bias, const Py_ssize_t[:, ::1] geometry,
                       Py_ssize_t groups, floating[:, :, ::1] out, int num_threads):
    """out = K_fwd(x, weight) + bias, as plain loops: the arguments and the answer of
    ``conv_forward`` (up to rounding: the sums run in another order), many times slower.

    One parallel iteration per (sample, output channel); it writes only ``out[n, o, :]``.
    The padding is an explicit 0 that is multiplied like any input value.
    """
    cdef Py_ssize_t n_samples = x.shape[0], channels = x.shape[1]
    cdef Py_ssize_t out_channels = weight.shape[0]
    cdef Geometry geo
    read_geometry(geometry, &geo)
    _check(x.shape[2] == geo.positions_in, "x positions != geometry's input positions")
    _check(groups >= 1 and channels % groups == 0 and out_channels % groups == 0, "groups")
    cdef Py_ssize_t group_channels = channels // groups, group_out = out_channels // groups
    _check(weight.shape[1] == group_channels * geo.taps, "weight columns != C/groups * taps")
    _check(bias.shape[0] in (0, out_channels), "bias length")
    _check(out.shape[0] == n_samples and out.shape[1] == out_channels
           and out.shape[2] == geo.positions_out, "out shape")
    cdef bint has_bias = bias.shape[0] > 0
    cdef Py_ssize_t n_o, n, o, first_channel, p, c, tap, offset
    cdef floating total, value
    num_threads = threads_for(n_samples * out_channels, <double> n_samples * out_channels
                              * geo.positions_out * weight.shape[1], num_threads)
    for n_o in prange(n_samples * out_channels, nogil=True, schedule='static',
                      num_threads=num_threads):
        n = n_o // out_channels
        o = n_o % out_channels
        first_channel = (o // group_out) * group_channels      # the group's first input channel
        for p in range(geo.positions_out):
            total = bias[o] if has_bias else 0
            for c in range(group_channels):
                for tap in range(geo.taps):
                    offset = input_offset(&geo, tap, p)
                    value = x[n, first_channel + c, offset] if offset >= 0 else 0
                    total = total + weight[o, c * geo.taps + tap] * value
            out[n, o, p] = total


# ----------------------------------------------------------------------------------------------
# K_in: the adjoint of K_fwd in its input.
#   dx[n, c, s] = b[c] + sum over (k, p) with offset(k, p) == s of sum_o w[o, c*K + k] g[n, o, p]
# ----------------------------------------------------------------------------------------------

def conv_input_grad(const floating[:, :, ::1] grad_out, const floating[:, ::1] weight,
                    const floating[::1] bias, const Py_ssize_t[:, ::1] geometry,
                    Py_ssize_t groups, floating[:, :, ::1] grad_in, int num_threads):
    """grad_in = K_in(grad_out, weight) + bias.  grad_out (N, O, P), grad_in (N, C, S).

    As convolution's VJP, ``bias`` is empty; as transposed convolution's forward it is the
    transposed op's bias (length C).  Work unit: (sample, group, block of input channels);
    the col2im scatter of a unit lands only in its own channels, in a fixed order.
    """
    cdef Py_ssize_t n_samples = grad_out.shape[0], out_channels = grad_out.shape[1]
    cdef Py_ssize_t positions_out = grad_out.shape[2]
    cdef Py_ssize_t channels = grad_in.shape[1], positions_in = grad_in.shape[2]
    cdef Geometry geo
    read_geometry(geometry, &geo)
    cdef Py_ssize_t row_len = weight.shape[1], taps = geo.taps
    _check(groups >= 1 and channels % groups == 0 and out_channels % groups == 0, "groups")
    cdef Py_ssize_t group_channels = channels // groups, group_out = out_channels // groups
    _check(weight.shape[0] == out_channels, "weight rows != O")
    _check(row_len == group_channels * taps, "weight columns != C/groups * taps")
    _check(positions_out == geo.positions_out, "grad_out positions != geometry's output positions")
    _check(positions_in == geo.positions_in, "grad_in positions != geometry's input positions")
    _check(grad_in.shape[0] == n_samples, "batch sizes differ")
    _check(bias.shape[0] in (0, channels), "bias length")
    cdef Py_ssize_t block_channels = max(1, min(group_channels, (ROWS_PER_UNIT + taps - 1) // taps))
    cdef Py_ssize_t channel_blocks = (group_channels + block_channels - 1) // block_channels
    cdef Py_ssize_t units = n_samples * groups * channel_blocks
    if units == 0 or positions_in == 0:
        return
    cdef const floating *g_ptr = &grad_out[0, 0, 0] if grad_out.size > 0 else NULL
    cdef const floating *w_ptr = &weight[0, 0]
    cdef const floating *b_ptr = &bias[0] if bias.shape[0] > 0 else NULL
    cdef floating *dx_ptr = &grad_in[0, 0, 0]
    cdef bint has_bias = bias.shape[0] > 0
    cdef int out_of_memory = 0
    cdef int *out_of_memory_flag = &out_of_memory
    cdef Py_ssize_t unit, n, g, c_block, c_start, c_count, rows, p_block, p_start, p_count, r, j, c, tap
    cdef Py_ssize_t n_runs, q, t, stride_last = geo.stride[geo.rank - 1]
    cdef Run *runs
    cdef Run *run
    cdef floating *dx_run
    cdef floating *dcols
    cdef floating *pack_b
    cdef floating *dx_block
    cdef floating *dx_channel
    cdef floating *dcols_row
    if use_direct(groups, group_channels, group_out):
        direct_input_grad(g_ptr, w_ptr, b_ptr, dx_ptr, &geo, n_samples, groups, group_channels,
                          group_out, num_threads)
        return
    # A = the rows of W_g.T that belong to one block of input channels, for every (group, block),
    # packed once and shared (read-only) by all threads.
    cdef Py_ssize_t block_panel_size = packed_a_size(dx_ptr, block_channels * taps, group_out)
    cdef floating[::1] packed_weight = np.empty(groups * channel_blocks * block_panel_size,
                                                dtype=np.asarray(grad_in).dtype)
    cdef floating *packed_w_ptr = &packed_weight[0]
    with nogil:
        for g in range(groups):
            for c_block in range(channel_blocks):
                c_start = c_block * block_channels
                c_count = min(block_channels, group_channels - c_start)
                pack_a_panels(w_ptr + g * group_out * row_len + c_start * taps, 1, row_len,
                              c_count * taps, group_out,
                              packed_w_ptr + (g * channel_blocks + c_block) * block_panel_size)
    num_threads = threads_for(units, <double> n_samples * out_channels * positions_out * row_len,
                              num_threads)
    with nogil, parallel(num_threads=num_threads):
        dcols = <floating *> malloc(sizeof(floating) * block_channels * taps * POSITIONS_PER_UNIT)
        pack_b = <floating *> malloc(sizeof(floating) * packed_b_size(dx_ptr, group_out,
                                                                      POSITIONS_PER_UNIT))
        runs = <Run *> malloc(sizeof(Run) * max_runs(&geo))
        if dcols == NULL or pack_b == NULL or runs == NULL:
            out_of_memory_flag[0] = 1
        for unit in prange(units, schedule='static'):
            if dcols == NULL or pack_b == NULL or runs == NULL:
                continue
            n = unit // (groups * channel_blocks)
            g = (unit // channel_blocks) % groups
            c_block = unit % channel_blocks
            c_start = c_block * block_channels
            c_count = min(block_channels, group_channels - c_start)
            rows = c_count * taps
            dx_block = dx_ptr + (n * channels + g * group_channels + c_start) * positions_in
            fill_rows(dx_block, c_count, positions_in, positions_in,
                      b_ptr + g * group_channels + c_start if has_bias else b_ptr, has_bias)
            for p_block in range(ceil_div(positions_out, POSITIONS_PER_UNIT)):
                p_start = p_block * POSITIONS_PER_UNIT
                p_count = min(<Py_ssize_t> POSITIONS_PER_UNIT, positions_out - p_start)
                pack_b_rows(g_ptr + (n * out_channels + g * group_out) * positions_out + p_start,
                            positions_out, group_out, p_count, pack_b)
                # dcols (c_count*K, p_count) = W_g[:, block's columns].T @ g[n, group, block]
                gemm_packed(rows, p_count, group_out,
                            packed_w_ptr + (g * channel_blocks + c_block) * block_panel_size,
                            pack_b, dcols, p_count, False)
                # col2im: send every dcols entry back to the input position it was read from
                # (each channel receives its additions in the order (tap, position)).
                for tap in range(taps):
                    n_runs = tile_runs(&geo, tap, p_start, p_count, runs)
                    for c in range(c_count):
                        dx_channel = dx_block + c * positions_in
                        dcols_row = dcols + (c * taps + tap) * p_count
                        for q in range(n_runs):
                            run = runs + q
                            dx_run = dx_channel + run.base
                            for t in range(run.lo, run.hi):
                                dx_run[t * stride_last] += dcols_row[run.start + t]
        free(dcols)
        free(pack_b)
        free(runs)
    if out_of_memory:
        raise MemoryError("graphm conv_input_grad: could not allocate scratch buffers")


# ----------------------------------------------------------------------------------------------
# K_w: the adjoint of K_fwd in its weight.  dw[o, c*K + k] = sum_{n, p} g[n, o, p] x[n, c, offset(k, p)]
# ----------------------------------------------------------------------------------------------

def conv_weight_grad(const floating[:, :, ::1] x, const floating[:, :, ::1] grad_out,
                     const Py_ssize_t[:, ::1] geometry, Py_ssize_t groups,
                     floating[:, ::1] grad_weight, int num_threads):
    """grad_weight = K_w(x, grad_out).  x (N, C, S), grad_out (N, O, P), grad_weight (O, Cg*K).

    Work unit: (block of SAMPLES_PER_UNIT samples, group, block of weight columns).  Each unit
    sums its samples into its own partial result; the partials are then added in block order.
    """
    cdef Py_ssize_t n_samples = x.shape[0], channels = x.shape[1], positions_in = x.shape[2]
    cdef Py_ssize_t out_channels = grad_out.shape[1], positions_out = grad_out.shape[2]
    cdef Geometry geo
    read_geometry(geometry, &geo)
    cdef Py_ssize_t row_len = grad_weight.shape[1], taps = geo.taps
    _check(groups >= 1 and channels % groups == 0 and out_channels % groups == 0, "groups")
    cdef Py_ssize_t group_channels = channels // groups, group_out = out_channels // groups
    _check(grad_out.shape[0] == n_samples, "batch sizes differ")
    _check(grad_weight.shape[0] == out_channels, "grad_weight rows != O")
    _check(row_len == group_channels * taps, "grad_weight columns != C/groups * taps")
    _check(positions_out == geo.positions_out, "grad_out positions != geometry's output positions")
    _check(positions_in == geo.positions_in, "x positions != geometry's input positions")
    cdef Py_ssize_t sample_blocks = (n_samples + SAMPLES_PER_UNIT - 1) // SAMPLES_PER_UNIT
    cdef Py_ssize_t col_blocks = (row_len + WEIGHT_COLS_PER_UNIT - 1) // WEIGHT_COLS_PER_UNIT
    cdef Py_ssize_t units = sample_blocks * groups * col_blocks
    if grad_weight.size == 0:
        return
    if units == 0 or positions_out == 0:
        # No samples or no output positions: the gradient is an empty sum.
        grad_weight[:, :] = 0
        return
    # One partial dW per block of samples (a single block writes grad_weight directly).
    partial_arr = (np.empty((sample_blocks, out_channels, row_len), dtype=np.asarray(grad_weight).dtype)
                   if sample_blocks > 1 else None)
    cdef floating[:, :, ::1] partial_view
    cdef floating *partial_ptr
    if sample_blocks > 1:
        partial_view = partial_arr
        partial_ptr = &partial_view[0, 0, 0]
    else:
        partial_ptr = &grad_weight[0, 0]
    cdef const floating *x_ptr = &x[0, 0, 0]
    cdef const floating *g_ptr = &grad_out[0, 0, 0]
    cdef floating *dw_ptr = &grad_weight[0, 0]
    cdef Py_ssize_t weight_size = out_channels * row_len
    cdef int out_of_memory = 0
    cdef int *out_of_memory_flag = &out_of_memory
    cdef Py_ssize_t unit, s_block, g, col_block, col_start, col_count, n, p_block, p_start, p_count
    cdef floating *pack_a
    cdef floating *pack_b
    cdef floating *dw_block
    cdef Run *runs
    cdef Py_ssize_t *run_counts
    cdef Py_ssize_t run_slots = min(taps, <Py_ssize_t> WEIGHT_COLS_PER_UNIT)
    if use_direct(groups, group_channels, group_out):
        direct_weight_grad(x_ptr, g_ptr, partial_ptr, &geo, n_samples, groups, group_channels,
                           group_out, num_threads)
        sum_partials(partial_ptr, sample_blocks, weight_size, dw_ptr, num_threads)
        return
    num_threads = threads_for(units, <double> n_samples * out_channels * positions_out * row_len,
                              num_threads)
    with nogil, parallel(num_threads=num_threads):
        pack_b = <floating *> malloc(sizeof(floating) * packed_b_size(dw_ptr, POSITIONS_PER_UNIT,
                                                                      WEIGHT_COLS_PER_UNIT))
        pack_a = <floating *> malloc(sizeof(floating) * packed_a_size(dw_ptr, group_out,
                                                                      POSITIONS_PER_UNIT))
        runs = <Run *> malloc(sizeof(Run) * run_slots * max_runs(&geo))
        run_counts = <Py_ssize_t *> malloc(sizeof(Py_ssize_t) * run_slots)
        if pack_a == NULL or pack_b == NULL or runs == NULL or run_counts == NULL:
            out_of_memory_flag[0] = 1
        for unit in prange(units, schedule='static'):
            if pack_a == NULL or pack_b == NULL or runs == NULL or run_counts == NULL:
                continue
            s_block = unit // (groups * col_blocks)
            g = (unit // col_blocks) % groups
            col_block = unit % col_blocks
            col_start = col_block * WEIGHT_COLS_PER_UNIT
            col_count = min(<Py_ssize_t> WEIGHT_COLS_PER_UNIT, row_len - col_start)
            dw_block = partial_ptr + s_block * weight_size + g * group_out * row_len + col_start
            fill_rows(dw_block, group_out, col_count, row_len, NULL, False)
            for n in range(s_block * SAMPLES_PER_UNIT,
                           min(n_samples, (s_block + 1) * SAMPLES_PER_UNIT)):
                for p_block in range(ceil_div(positions_out, POSITIONS_PER_UNIT)):
                    p_start = p_block * POSITIONS_PER_UNIT
                    p_count = min(<Py_ssize_t> POSITIONS_PER_UNIT, positions_out - p_start)
                    pack_a_panels(g_ptr + (n * out_channels + g * group_out) * positions_out
                                  + p_start, positions_out, 1, group_out, p_count, pack_a)
                    im2col_packed_transposed(
                        x_ptr + (n * channels + g * group_channels) * positions_in, &geo,
                        col_start, col_count, p_start, p_count, runs, run_counts, pack_b)
                    # dW_g[:, block] (Og, col_count) += g[n, group, block] (Og, p) @ cols.T (p, col_count)
                    gemm_packed(group_out, col_count, p_count, pack_a, pack_b,
                                dw_block, row_len, True)
        free(pack_a)
        free(pack_b)
        free(runs)
        free(run_counts)
    if out_of_memory:
        raise MemoryError("graphm conv_weight_grad: could not allocate scratch buffers")
    sum_partials(partial_ptr, sample_blocks, weight_size, dw_ptr, num_threads)


cdef void sum_partials(const floating *partial_ptr, Py_ssize_t blocks, Py_ssize_t size,
                       floating *dw_ptr, int num_threads) noexcept:
    """dw = partial[0] + partial[1] + ... + partial[blocks - 1], element by element, in this
    fixed order: the weight gradient's sum over blocks of samples.  With one block the partial
    is dw itself, and there is nothing to do."""
    cdef Py_ssize_t i, b
    cdef floating total
    if blocks <= 1:
        return
    num_threads = threads_for(size, <double> size * blocks, num_threads)
    for i in prange(size, nogil=True, schedule='static', num_threads=num_threads):
        total = partial_ptr[i]
        for b in range(1, blocks):
            total = total + partial_ptr[b * size + i]
        dw_ptr[i] = total


# ----------------------------------------------------------------------------------------------
# The bias gradient: db[o] = sum_{n, p} g[n, o, p], summed in double precision in a fixed order.
# ----------------------------------------------------------------------------------------------

cdef double row_sum(const floating *row, Py_ssize_t length) noexcept nogil:
    """Sum of one row in double precision, as four interleaved partial sums added at the end:
    four independent chains keep the adder busy, and the order is fixed by the row alone."""
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t p, quads = length // 4
    for p in range(quads):
        s0 += row[4 * p]
        s1 += row[4 * p + 1]
        s2 += row[4 * p + 2]
        s3 += row[4 * p + 3]
    for p in range(4 * quads, length):
        s0 += row[p]
    return (s0 + s1) + (s2 + s3)


def bias_grad(const floating[:, :, ::1] grad_out, floating[::1] grad_bias, int num_threads):
    """grad_bias[o] = sum over samples and positions of grad_out[n, o, p]; one thread per channel."""
    cdef Py_ssize_t n_samples = grad_out.shape[0], out_channels = grad_out.shape[1]
    cdef Py_ssize_t positions = grad_out.shape[2]
    _check(grad_bias.shape[0] == out_channels, "grad_bias length != O")
    cdef Py_ssize_t o, n
    cdef double total
    if out_channels == 0:
        return
    if n_samples == 0 or positions == 0:
        grad_bias[:] = 0
        return
    cdef const floating *g_ptr = &grad_out[0, 0, 0]
    cdef floating *db_ptr = &grad_bias[0]
    num_threads = threads_for(out_channels, <double> n_samples * out_channels * positions,
                              num_threads)
    for o in prange(out_channels, nogil=True, schedule='static', num_threads=num_threads):
        total = 0
        for n in range(n_samples):
            total = total + row_sum(g_ptr + (n * out_channels + o) * positions, positions)
        db_ptr[o] = <floating> total
