/*
 * The inner loops of graphm's direct (no im2col, no GEMM) convolution path, which serves the
 * depthwise-like groupings: one input channel per group (depthwise convolution, any channel
 * multiplier) or one output channel per group (a depthwise transposed convolution).  There a
 * group's GEMM would have a single row or column, and a matrix multiply is the wrong tool.
 *
 * Why C and not Cython?  Only so that these loops are compiled twice, for AVX2 + FMA and for the
 * baseline x86-64, like the GEMM micro-kernel (GRAPHM_MULTIVERSION, from gemm_microkernel.h):
 * Cython's own code is compiled for the baseline only (SSE2, no FMA), a quarter of the width.
 * The loops are plain C99: no vector types, no intrinsics, no builtins; the compiler vectorises
 * the loops over contiguous positions by itself, and MSVC or GRAPHM_PORTABLE=1 builds compile
 * exactly this code, without clones.  Everything around them (padding, work units, threads) is
 * in _conv.pyx.
 *
 * The three loops work on one output plane, row by row, a row being the positions along the last
 * spatial axis.  `src` (or `q`) is a zero-padded copy of a group's input planes, so no index is
 * ever out of range and no branch tests for the padding: term t of position j of output row r
 * reads src[rowbase[r] + off[t] + j * stride], with rowbase[r] where the row starts reading and
 * off[t] the offset of term t (input channel of the group, kernel tap) in the padded copy.
 *
 * Order of the sums (fixed by the arguments alone, so results are bit-for-bit reproducible):
 *   graphm_direct_plane    y = init + (w[0] x_0 + w[1] x_1 + ...), terms in order;
 *   graphm_direct_scatter  q += w[t] g[r, j] in the order (r, t), whichever loop forms it;
 *   graphm_direct_dot      lane l of LANES sums the positions j = l (mod LANES) of every row, in
 *                          row order; then the lanes are added as a fixed tree.
 */
#ifndef GRAPHM_DEPTHWISE_H
#define GRAPHM_DEPTHWISE_H

#include <stddef.h>

#include "gemm_microkernel.h"   /* GRAPHM_MULTIVERSION */

/* Positions computed together by graphm_direct_plane and _dot: the accumulators (32 floats or 16 doubles,
 * four AVX2 registers: four independent chains of multiply-adds hide the FMA latency).  A
 * multiple of 16, which graphm_direct_dot's tree below relies on. */
#define GRAPHM_DIRECT_LANES_FLOAT 32
#define GRAPHM_DIRECT_LANES_DOUBLE 16

/* GCC's -O3 "unroll and jam" pass fuses pairs of taps and leaves the loop over positions scalar,
 * with the accumulators in memory (measured: several times slower); without it GCC keeps them in
 * registers.  The attribute names a GCC optimisation only, and changes no result. */
#if defined(__GNUC__) && !defined(__clang__)
#define GRAPHM_DIRECT_ATTRIBUTES GRAPHM_MULTIVERSION __attribute__((optimize("no-loop-unroll-and-jam")))
#else
#define GRAPHM_DIRECT_ATTRIBUTES GRAPHM_MULTIVERSION
#endif

#if defined(_MSC_VER)
#define GRAPHM_RESTRICT __restrict
#else
#define GRAPHM_RESTRICT restrict
#endif

/* y[r*n : r*n + n] = init + sum over t of w[t] * src[rowbase[r] + off[t] + j*stride], for every
 * output row r < rows of one output plane of a direct convolution (its `taps` terms run over the
 * group's input channels and the kernel taps).  A whole chunk of LANES positions keeps its sums
 * in registers; the first term initialises them (0 + a is a, so this is the order above). */
#define GRAPHM_DEFINE_DIRECT_PLANE(NAME, T, LANES)                                               \
GRAPHM_DIRECT_ATTRIBUTES                                                                         \
static void NAME(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t stride, const T *src,                    \
                 const ptrdiff_t *rowbase, const ptrdiff_t *off, const T *w, ptrdiff_t taps,     \
                 T init, T *GRAPHM_RESTRICT y)                                                   \
{                                                                                                \
    ptrdiff_t r, j0, j, t, width;                                                                \
    for (r = 0; r < rows; ++r) {                                                                 \
        const T *row = src + rowbase[r];                                                         \
        T *yr = y + r * n;                                                                       \
        for (j0 = 0; j0 < n; j0 += LANES) {                                                      \
            width = n - j0 < LANES ? n - j0 : LANES;                                             \
            if (width == LANES && stride == 1) {                                                 \
                /* the common case: constant trip counts, contiguous reads */                    \
                T acc[LANES];                                                                    \
                const T *s = row + off[0] + j0;                                                  \
                for (j = 0; j < LANES; ++j)                                                      \
                    acc[j] = w[0] * s[j];                                                        \
                for (t = 1; t < taps; ++t) {                                                     \
                    const T wt = w[t];                                                           \
                    s = row + off[t] + j0;                                                       \
                    for (j = 0; j < LANES; ++j)                                                  \
                        acc[j] += wt * s[j];                                                     \
                }                                                                                \
                for (j = 0; j < LANES; ++j)                                                      \
                    yr[j0 + j] = init + acc[j];                                                  \
            } else {                                                                             \
                T acc[LANES];                                                                    \
                const T *s = row + off[0] + j0 * stride;                                         \
                for (j = 0; j < width; ++j)                                                      \
                    acc[j] = w[0] * s[j * stride];                                               \
                for (t = 1; t < taps; ++t) {                                                     \
                    const T wt = w[t];                                                           \
                    s = row + off[t] + j0 * stride;                                              \
                    for (j = 0; j < width; ++j)                                                  \
                        acc[j] += wt * s[j * stride];                                            \
                }                                                                                \
                for (j = 0; j < width; ++j)                                                      \
                    yr[j0 + j] = init + acc[j];                                                  \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
}

/* q[rowbase[r] + off[t] + j*stride] += w[t] * g[r*n + j] for every row r < rows, tap t and
 * j < n, in the order (r, t, j): one output plane of gradient, sent back (scattered) to the
 * padded input positions it was computed from.  Only the terms that exist are formed (a padded
 * position just receives terms that are dropped).
 *
 * With stride 1 the taps come in runs of `run` consecutive last-axis taps, `dilation` apart
 * (off[t + 1] = off[t] + dilation within a run): a position i of the run's destination row
 * receives w[t] * g[i - t*dilation] for the t of the run with 0 <= i - t*dilation < n, in
 * increasing t, as the scatter would add them.  Where every t qualifies, CHUNK positions (one
 * AVX2 vector) are summed in registers: a scatter would reload, one element off, what the
 * previous tap has just stored, and the CPU cannot forward such a store to the load. */
#define GRAPHM_DEFINE_DIRECT_SCATTER(NAME, T, CHUNK)                                             \
GRAPHM_DIRECT_ATTRIBUTES                                                                         \
static void NAME(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t stride, const T *GRAPHM_RESTRICT g,      \
                 const ptrdiff_t *rowbase, const ptrdiff_t *off, const T *w, ptrdiff_t taps,     \
                 ptrdiff_t run, ptrdiff_t dilation, T *GRAPHM_RESTRICT q)                        \
{                                                                                                \
    ptrdiff_t r, j, t, t0, i, i0, span = (run - 1) * dilation;                                   \
    for (r = 0; r < rows; ++r) {                                                                 \
        const T *gr = g + r * n;                                                                 \
        T *qr = q + rowbase[r];                                                                  \
        if (stride != 1) {                                                                       \
            for (t = 0; t < taps; ++t) {                                                         \
                const T wt = w[t];                                                               \
                T *d = qr + off[t];                                                              \
                for (j = 0; j < n; ++j)                                                          \
                    d[j * stride] += wt * gr[j];                                                 \
            }                                                                                    \
            continue;                                                                            \
        }                                                                                        \
        for (t0 = 0; t0 < taps; t0 += run) {                                                     \
            const T *wr = w + t0;                                                                \
            T *d = qr + off[t0];                                                                 \
            /* positions span .. n-1 receive every tap of the run: chunks in registers */        \
            for (i0 = span; i0 + CHUNK <= n; i0 += CHUNK) {                                      \
                T acc[CHUNK];                                                                    \
                for (j = 0; j < CHUNK; ++j)                                                      \
                    acc[j] = d[i0 + j];                                                          \
                for (t = 0; t < run; ++t) {                                                      \
                    const T wt = wr[t];                                                          \
                    const T *s = gr + i0 - t * dilation;                                         \
                    for (j = 0; j < CHUNK; ++j)                                                  \
                        acc[j] += wt * s[j];                                                     \
                }                                                                                \
                for (j = 0; j < CHUNK; ++j)                                                      \
                    d[i0 + j] = acc[j];                                                          \
            }                                                                                    \
            for (i = i0; i < n; ++i) {                                                           \
                T sum = d[i];                                                                    \
                for (t = 0; t < run; ++t)                                                        \
                    sum += wr[t] * gr[i - t * dilation];                                         \
                d[i] = sum;                                                                      \
            }                                                                                    \
            /* the two ends, where only some taps exist: 0 .. span-1, max(n, span) .. n+span-1 */\
            for (i = 0; i < n + span; ++i) {                                                     \
                T sum;                                                                           \
                if (i == span)                                                                   \
                    i = n > span ? n : span;                                                     \
                if (i >= n + span)                                                               \
                    break;                                                                       \
                sum = d[i];                                                                      \
                for (t = 0; t < run; ++t) {                                                      \
                    ptrdiff_t p = i - t * dilation;                                              \
                    if (p >= 0 && p < n)                                                         \
                        sum += wr[t] * gr[p];                                                    \
                }                                                                                \
                d[i] = sum;                                                                      \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
}

/* sum over rows r and j < n of g[r*n + j] * src[rowbase[r] + j*stride]: one entry of the weight
 * gradient for one sample (g: one output channel's plane, src: the padded input plane shifted by
 * the tap's offset, rowbase: where each output row starts reading in it). */
#define GRAPHM_DEFINE_DIRECT_DOT(NAME, T, LANES)                                                 \
GRAPHM_DIRECT_ATTRIBUTES                                                                         \
static T NAME(ptrdiff_t rows, ptrdiff_t n, ptrdiff_t stride, const T *g,                         \
              const ptrdiff_t *rowbase, const T *src)                                            \
{                                                                                                \
    T acc[LANES];                                                                                \
    ptrdiff_t r, j0, j, width, half;                                                             \
    for (j = 0; j < LANES; ++j)                                                                  \
        acc[j] = 0;                                                                              \
    for (r = 0; r < rows; ++r) {                                                                 \
        const T *gr = g + r * n;                                                                 \
        const T *s = src + rowbase[r];                                                           \
        for (j0 = 0; j0 < n; j0 += LANES) {                                                      \
            width = n - j0 < LANES ? n - j0 : LANES;                                             \
            if (width == LANES && stride == 1) {                                                 \
                for (j = 0; j < LANES; ++j)                                                      \
                    acc[j] += gr[j0 + j] * s[j0 + j];                                            \
            } else {                                                                             \
                for (j = 0; j < width; ++j)                                                      \
                    acc[j] += gr[j0 + j] * s[(j0 + j) * stride];                                 \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    /* the lanes as a fixed tree: lane l += lane l + half, half = LANES/2, ..., 1 */             \
    for (half = LANES / 2; half >= 1; half /= 2)                                                 \
        for (j = 0; j < half; ++j)                                                               \
            acc[j] += acc[j + half];                                                             \
    return acc[0];                                                                               \
}

GRAPHM_DEFINE_DIRECT_PLANE(graphm_direct_plane_float, float, GRAPHM_DIRECT_LANES_FLOAT)
GRAPHM_DEFINE_DIRECT_PLANE(graphm_direct_plane_double, double, GRAPHM_DIRECT_LANES_DOUBLE)
GRAPHM_DEFINE_DIRECT_SCATTER(graphm_direct_scatter_float, float, 8)
GRAPHM_DEFINE_DIRECT_SCATTER(graphm_direct_scatter_double, double, 4)
GRAPHM_DEFINE_DIRECT_DOT(graphm_direct_dot_float, float, GRAPHM_DIRECT_LANES_FLOAT)
GRAPHM_DEFINE_DIRECT_DOT(graphm_direct_dot_double, double, GRAPHM_DIRECT_LANES_DOUBLE)

#endif
