/* Bucket indices of a block of values against padded bounds, branch-free.
 *
 * Written in C rather than Cython so that the loop is plain enough for GCC
 * to vectorize (bounds in locals, restrict pointers, 64-bit lanes for both
 * the compares and the indices), and so that it can be compiled for several
 * instruction sets with one picked when the module loads (target_clones).
 * A value's index is the number of bounds below it; NaN gets nb_slot + 1.
 */
#ifndef OBSCORE_HIST_INDEX_H
#define OBSCORE_HIST_INDEX_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define OBS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define OBS_CLONES
#endif

#define OBS_GT(k) ((int64_t)(x > t##k))

OBS_CLONES
static void obs_block_index_8(const double *restrict v, ptrdiff_t m,
                              const double *restrict t, int64_t *restrict idx)
{
    const double t0 = t[0], t1 = t[1], t2 = t[2], t3 = t[3];
    const double t4 = t[4], t5 = t[5], t6 = t[6], t7 = t[7];
    for (ptrdiff_t j = 0; j < m; j++) {
        const double x = v[j];
        int64_t k = OBS_GT(0) + OBS_GT(1) + OBS_GT(2) + OBS_GT(3)
                  + OBS_GT(4) + OBS_GT(5) + OBS_GT(6) + OBS_GT(7);
        idx[j] = k + (int64_t)(x != x) * 9;
    }
}

OBS_CLONES
static void obs_block_index_16(const double *restrict v, ptrdiff_t m,
                               const double *restrict t, int64_t *restrict idx)
{
    const double t0 = t[0], t1 = t[1], t2 = t[2], t3 = t[3];
    const double t4 = t[4], t5 = t[5], t6 = t[6], t7 = t[7];
    const double t8 = t[8], t9 = t[9], t10 = t[10], t11 = t[11];
    const double t12 = t[12], t13 = t[13], t14 = t[14], t15 = t[15];
    for (ptrdiff_t j = 0; j < m; j++) {
        const double x = v[j];
        int64_t k = OBS_GT(0) + OBS_GT(1) + OBS_GT(2) + OBS_GT(3)
                  + OBS_GT(4) + OBS_GT(5) + OBS_GT(6) + OBS_GT(7)
                  + OBS_GT(8) + OBS_GT(9) + OBS_GT(10) + OBS_GT(11)
                  + OBS_GT(12) + OBS_GT(13) + OBS_GT(14) + OBS_GT(15);
        idx[j] = k + (int64_t)(x != x) * 17;
    }
}

#undef OBS_GT
#endif
