/*
 * The register micro-kernel of graphm's matrix multiply: C[0:mr, 0:nr] += A_panel @ B_panel
 * (or C = A_panel @ B_panel when `accumulate` is 0, which spares the caller zeroing C first).
 *
 * Why C and not Cython?  The whole speed of a GEMM comes from one small loop that keeps an
 * MR x NR tile of C in vector registers while it streams through K.  Cython cannot name vector
 * registers, and whether a C compiler keeps a Cython-generated accumulator array in registers
 * is luck (at -O2 it does not, and the loop runs 30x slower).  GCC/Clang vector extensions say
 * it exactly and stay portable: without AVX the compiler splits each 32-byte vector into two
 * SSE halves.  Everything around this loop (blocking, packing, im2col, threads) is Cython, in
 * _conv.pyx.
 *
 * Data layout (written by the packing routines in _conv.pyx):
 *   a_panel: kc steps of MR values   a_panel[k*MR + i] = A[i, k]   (zero-padded past mr)
 *   b_panel: kc steps of NR values   b_panel[k*NR + j] = B[k, j]   (zero-padded past nr)
 * Each element of C is accumulated over k = 0, 1, ..., kc-1 in this fixed order whatever the
 * tile, the edge handling or the thread that runs it, so results are bit-for-bit reproducible.
 *
 * Two implementations, one interface.  This file holds the vector one (GCC/Clang vector
 * extensions); gemm_microkernel_portable.h holds a plain-C one, compiled instead by MSVC (or any
 * compiler that is not GCC-compatible) and by every build made with GRAPHM_PORTABLE=1.  Both
 * provide exactly what _conv.pyx calls, and a caller must use nothing else:
 *
 *   GRAPHM_SGEMM_MR, GRAPHM_DGEMM_MR   rows of a tile (6), compile-time constants
 *   graphm_select_tiles(allow_wide)    call once, before any kernel; returns 1 if wide tiles
 *                                      (AVX-512) were chosen; the portable path always says 0
 *   graphm_sgemm_nr(), graphm_dgemm_nr()  columns of a tile, fixed after graphm_select_tiles:
 *                                      size the packed panels by them, never by a constant
 *   graphm_sgemm_micro, graphm_dgemm_micro(kc, a_panel, b_panel, c, ldc, mr, nr, accumulate)
 *                                      the tile product above; 1 <= mr <= MR, 1 <= nr <= NR; a
 *                                      and b panels zero-padded to whole MR and NR; c unaligned
 *                                      is fine; touches only C[0:mr, 0:nr]
 *   GRAPHM_MICROKERNEL_PORTABLE        1 in the portable build, 0 in the vector one
 *
 * Both compute each element in the same order (start at 0, add a*b for k = 0..kc-1, then add
 * the sum to C once), so where the compiler makes the same fused-multiply-add choice in both they
 * agree bit for bit; x86-specific code (clones, AVX-512, CPU detection) is compiled only on
 * x86-64 (see GRAPHM_X86_64 below).
 */
#ifndef GRAPHM_GEMM_MICROKERNEL_H
#define GRAPHM_GEMM_MICROKERNEL_H

#include <stddef.h>

/* `inline` is C99; MSVC's C compiler has long spelled it __inline. */
#if defined(_MSC_VER) && !defined(__cplusplus)
#define GRAPHM_INLINE __inline
#else
#define GRAPHM_INLINE inline
#endif

/* x86-64 alone gets target clones, AVX-512 tiles and CPU detection (aarch64 and the rest: none). */
#if defined(__x86_64__) || defined(_M_X64)
#define GRAPHM_X86_64 1
#else
#define GRAPHM_X86_64 0
#endif

/* The vector kernel needs GCC's vector extensions (GCC and Clang have them, MSVC does not). */
#if defined(GRAPHM_PORTABLE) || defined(_MSC_VER) || !defined(__GNUC__)
#define GRAPHM_MICROKERNEL_PORTABLE 1
#else
#define GRAPHM_MICROKERNEL_PORTABLE 0
#endif

/* Every tile has 6 rows; a row is two vectors wide.  With 32-byte vectors (AVX2) that is 16
 * floats or 8 doubles; with 64-byte vectors (AVX-512, chosen at run time where the CPU has it,
 * see the end of this file) 32 floats or 16 doubles. */
#define GRAPHM_SGEMM_MR 6
#define GRAPHM_DGEMM_MR 6

/* On x86-64 GCC, compile the micro-kernel twice, for AVX2 + FMA (Haswell and later, Zen) and
 * for the baseline, and let the loader pick at run time: the package runs on any x86-64 CPU
 * and still uses FMA where it exists.  The portable kernel is cloned the same way. */
#if defined(__GNUC__) && !defined(__clang__) && GRAPHM_X86_64 && !defined(GRAPHM_NO_MULTIVERSION)
#define GRAPHM_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define GRAPHM_MULTIVERSION
#endif

#if GRAPHM_MICROKERNEL_PORTABLE
#include "gemm_microkernel_portable.h"
#else

/* 32-byte vectors (8 floats or 4 doubles) that need only an element's alignment in memory. */
typedef float graphm_v8f __attribute__((vector_size(32), aligned(sizeof(float))));
typedef double graphm_v4d __attribute__((vector_size(32), aligned(sizeof(double))));

/* The micro-kernel for element type T, vector type V of LANES elements; a row of the tile is
 * two vectors (NR = 2 * LANES columns) and the tile has 6 rows: 12 accumulators + 2 B vectors
 * + 1 broadcast A value = 15 of the 16 vector registers AVX2 has.  The six rows are written
 * out by hand so that every accumulator is a named register variable. */
#define GRAPHM_DEFINE_MICROKERNEL(NAME, ATTRIBUTES, T, V, LANES)                               \
ATTRIBUTES                                                                                      \
static void NAME(ptrdiff_t kc, const T *a_panel, const T *b_panel, T *c, ptrdiff_t ldc,         \
                 int mr, int nr, int accumulate)                                                \
{                                                                                               \
    const V zero = {0};                                                                         \
    V c0l = zero, c0h = zero, c1l = zero, c1h = zero, c2l = zero, c2h = zero;                   \
    V c3l = zero, c3h = zero, c4l = zero, c4h = zero, c5l = zero, c5h = zero;                   \
    for (ptrdiff_t k = 0; k < kc; ++k) {                                                        \
        const V b_lo = *(const V *)(b_panel + k * 2 * LANES);                                   \
        const V b_hi = *(const V *)(b_panel + k * 2 * LANES + LANES);                           \
        const T *a = a_panel + k * 6;                                                           \
        c0l += a[0] * b_lo; c0h += a[0] * b_hi;                                                 \
        c1l += a[1] * b_lo; c1h += a[1] * b_hi;                                                 \
        c2l += a[2] * b_lo; c2h += a[2] * b_hi;                                                 \
        c3l += a[3] * b_lo; c3h += a[3] * b_hi;                                                 \
        c4l += a[4] * b_lo; c4h += a[4] * b_hi;                                                 \
        c5l += a[5] * b_lo; c5h += a[5] * b_hi;                                                 \
    }                                                                                           \
    V tile[6][2] = {{c0l, c0h}, {c1l, c1h}, {c2l, c2h}, {c3l, c3h}, {c4l, c4h}, {c5l, c5h}};    \
    if (mr == 6 && nr == 2 * LANES) {                                                           \
        /* A full tile: add (or store) whole vectors into C. */                                 \
        for (int i = 0; i < 6; ++i) {                                                           \
            if (accumulate) {                                                                   \
                *(V *)(c + i * ldc) += tile[i][0];                                              \
                *(V *)(c + i * ldc + LANES) += tile[i][1];                                      \
            } else {                                                                            \
                *(V *)(c + i * ldc) = tile[i][0];                                               \
                *(V *)(c + i * ldc + LANES) = tile[i][1];                                       \
            }                                                                                   \
        }                                                                                       \
    } else {                                                                                    \
        /* An edge tile: only the valid part, element by element.  Each element still gets     \
         * the single operation C[i][j] + tile[i][j] (or C[i][j] = tile[i][j]) of the full     \
         * path, so both paths give the same bits. */                                           \
        const T *t = (const T *)tile;                                                           \
        for (int i = 0; i < mr; ++i)                                                            \
            for (int j = 0; j < nr; ++j)                                                        \
                c[i * ldc + j] = accumulate ? c[i * ldc + j] + t[i * 2 * LANES + j]             \
                                            : t[i * 2 * LANES + j];                             \
    }                                                                                           \
}

GRAPHM_DEFINE_MICROKERNEL(graphm_sgemm_micro_avx2, GRAPHM_MULTIVERSION, float, graphm_v8f, 8)
GRAPHM_DEFINE_MICROKERNEL(graphm_dgemm_micro_avx2, GRAPHM_MULTIVERSION, double, graphm_v4d, 4)

/* The wide tiles: the same loop with 64-byte vectors, compiled for AVX-512 (x86-64-v4) and used
 * only where the CPU reports AVX-512F.  On CPUs with full-width AVX-512 units (AMD Zen 5, Intel
 * server cores) this doubles the multiply-adds per cycle. */
#if defined(__GNUC__) && !defined(__clang__) && GRAPHM_X86_64 && !defined(GRAPHM_NO_MULTIVERSION)
#define GRAPHM_HAVE_WIDE_TILES 1
typedef float graphm_v16f __attribute__((vector_size(64), aligned(sizeof(float))));
typedef double graphm_v8d __attribute__((vector_size(64), aligned(sizeof(double))));
GRAPHM_DEFINE_MICROKERNEL(graphm_sgemm_micro_avx512, __attribute__((target("arch=x86-64-v4"))),
                          float, graphm_v16f, 16)
GRAPHM_DEFINE_MICROKERNEL(graphm_dgemm_micro_avx512, __attribute__((target("arch=x86-64-v4"))),
                          double, graphm_v8d, 8)
#else
#define GRAPHM_HAVE_WIDE_TILES 0
#endif

/* Which tile width this process uses: chosen once, when the extension is imported, before any
 * kernel runs, and never changed afterwards (the packing routines size their panels by it). */
static int graphm_wide_tiles = 0;

static GRAPHM_INLINE int graphm_select_tiles(int allow_wide)
{
#if GRAPHM_HAVE_WIDE_TILES
    __builtin_cpu_init();
    graphm_wide_tiles = allow_wide && __builtin_cpu_supports("avx512f");
#else
    (void)allow_wide;
    graphm_wide_tiles = 0;
#endif
    return graphm_wide_tiles;
}

static inline int graphm_sgemm_nr(void) { return graphm_wide_tiles ? 32 : 16; }
static inline int graphm_dgemm_nr(void) { return graphm_wide_tiles ? 16 : 8; }

static inline void graphm_sgemm_micro(ptrdiff_t kc, const float *a_panel, const float *b_panel,
                                      float *c, ptrdiff_t ldc, int mr, int nr, int accumulate)
{
#if GRAPHM_HAVE_WIDE_TILES
    if (graphm_wide_tiles) {
        graphm_sgemm_micro_avx512(kc, a_panel, b_panel, c, ldc, mr, nr, accumulate);
        return;
    }
#endif
    graphm_sgemm_micro_avx2(kc, a_panel, b_panel, c, ldc, mr, nr, accumulate);
}

static inline void graphm_dgemm_micro(ptrdiff_t kc, const double *a_panel, const double *b_panel,
                                      double *c, ptrdiff_t ldc, int mr, int nr, int accumulate)
{
#if GRAPHM_HAVE_WIDE_TILES
    if (graphm_wide_tiles) {
        graphm_dgemm_micro_avx512(kc, a_panel, b_panel, c, ldc, mr, nr, accumulate);
        return;
    }
#endif
    graphm_dgemm_micro_avx2(kc, a_panel, b_panel, c, ldc, mr, nr, accumulate);
}

#endif /* GRAPHM_MICROKERNEL_PORTABLE */

#endif
