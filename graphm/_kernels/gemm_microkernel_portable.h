/*
 * The portable micro-kernel: the same C[0:mr, 0:nr] (+)= A_panel @ B_panel as the vector one in
 * gemm_microkernel.h, in plain C (C99: no vector types, no intrinsics, no builtins), for compilers
 * without GCC's vector extensions (MSVC) and for any build made with GRAPHM_PORTABLE=1.
 * Include gemm_microkernel.h, not this file: it decides which of the two a build compiles.
 *
 * It computes in the vector kernel's order, operation for operation: every element of the tile
 * starts at 0, receives `tile += a * b` for k = 0, 1, ..., kc-1, and only then meets C once
 * (C + tile, or C = tile).  Where the compiler fuses a * b + tile into one FMA in both kernels, or
 * in neither, the two give the same bits; GCC fuses in both when the CPU has FMA (the x86-64-v3
 * clone below) and in neither on the baseline x86-64.  MSVC does not fuse at /fp:precise, its
 * default, so an MSVC build gives the results of a CPU without FMA, to rounding.
 *
 * The tile is the vector kernel's narrow one (6 x 16 floats, 6 x 8 doubles), so the packing in
 * _conv.pyx is the same for both.  The loops over the tile have constant bounds: an optimising
 * compiler unrolls and vectorises them by itself, which is all the speed this path asks for.
 */
#ifndef GRAPHM_GEMM_MICROKERNEL_PORTABLE_H
#define GRAPHM_GEMM_MICROKERNEL_PORTABLE_H

#include <stddef.h>

#define GRAPHM_SGEMM_PORTABLE_NR 16
#define GRAPHM_DGEMM_PORTABLE_NR 8

#define GRAPHM_DEFINE_PORTABLE_MICROKERNEL(NAME, ATTRIBUTES, T, NR)                            \
ATTRIBUTES                                                                                      \
static void NAME(ptrdiff_t kc, const T *a_panel, const T *b_panel, T *c, ptrdiff_t ldc,         \
                 int mr, int nr, int accumulate)                                                \
{                                                                                               \
    T tile[6][NR];  /* GRAPHM_SGEMM_MR = GRAPHM_DGEMM_MR = 6 rows */                             \
    ptrdiff_t k;                                                                                \
    int i, j;                                                                                   \
    for (i = 0; i < 6; ++i)                                                                     \
        for (j = 0; j < NR; ++j)                                                                \
            tile[i][j] = 0;                                                                     \
    for (k = 0; k < kc; ++k) {                                                                  \
        const T *a = a_panel + k * 6;                                                           \
        const T *b = b_panel + k * NR;                                                          \
        for (i = 0; i < 6; ++i)                                                                 \
            for (j = 0; j < NR; ++j)                                                            \
                tile[i][j] += a[i] * b[j];                                                      \
    }                                                                                           \
    /* Full tile or edge tile alike: each valid element of C gets one operation. */             \
    for (i = 0; i < mr; ++i)                                                                    \
        for (j = 0; j < nr; ++j)                                                                \
            c[i * ldc + j] = accumulate ? c[i * ldc + j] + tile[i][j] : tile[i][j];             \
}

GRAPHM_DEFINE_PORTABLE_MICROKERNEL(graphm_sgemm_micro_portable, GRAPHM_MULTIVERSION, float,
                                   GRAPHM_SGEMM_PORTABLE_NR)
GRAPHM_DEFINE_PORTABLE_MICROKERNEL(graphm_dgemm_micro_portable, GRAPHM_MULTIVERSION, double,
                                   GRAPHM_DGEMM_PORTABLE_NR)

/* One tile width only: selecting tiles is a no-op that reports "not wide". */
static int graphm_wide_tiles = 0;

static GRAPHM_INLINE int graphm_select_tiles(int allow_wide)
{
    (void)allow_wide;
    graphm_wide_tiles = 0;
    return 0;
}

static GRAPHM_INLINE int graphm_sgemm_nr(void) { return GRAPHM_SGEMM_PORTABLE_NR; }
static GRAPHM_INLINE int graphm_dgemm_nr(void) { return GRAPHM_DGEMM_PORTABLE_NR; }

static GRAPHM_INLINE void graphm_sgemm_micro(ptrdiff_t kc, const float *a_panel,
                                             const float *b_panel, float *c, ptrdiff_t ldc,
                                             int mr, int nr, int accumulate)
{
    graphm_sgemm_micro_portable(kc, a_panel, b_panel, c, ldc, mr, nr, accumulate);
}

static GRAPHM_INLINE void graphm_dgemm_micro(ptrdiff_t kc, const double *a_panel,
                                             const double *b_panel, double *c, ptrdiff_t ldc,
                                             int mr, int nr, int accumulate)
{
    graphm_dgemm_micro_portable(kc, a_panel, b_panel, c, ldc, mr, nr, accumulate);
}

#endif
