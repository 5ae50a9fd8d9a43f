/* zscore_rolling's block passes, in C.
 *
 * In C so that the vector passes can be built for several instruction sets
 * with one picked when the module loads (target_clones): sqrt and division
 * are the costly part of a score, and AVX2 does four of each at a time where
 * baseline x86-64 (SSE2) does two. The module is built with
 * -ffp-contract=off, so no clone fuses a multiply and an add: every clone,
 * and the scalar Cython loop, gives the same bits; and with
 * -fno-trapping-math, without which GCC does not vectorize a select between
 * two computed values. No -ffast-math: NaN and +-Inf go through the
 * formulas as IEEE says.
 *
 * The expressions are those of zscore.pyx's _score_parts, _remove_moments,
 * _add_moments and _is_stale_inv, in the same order; keep them in step.
 */
#ifndef OBSCORE_ZSCORE_BLOCK_H
#define OBSCORE_ZSCORE_BLOCK_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define OBS_ZS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define OBS_ZS_CLONES
#endif

#define OBS_ZS_STD_REL_FLOOR 1e-9   /* floor on std, relative to |mean| */
#define OBS_ZS_STD_ABS_FLOOR 1e-12  /* floor on std when the mean is near 0 */
#define OBS_ZS_MAX_JOIN 1e100       /* larger |x| are scored but never join */
#define OBS_ZS_MAX_RUN 512          /* zscore_rolling's block, the most obs_zscore_full_block takes */

/* Scores of a block from its parts: dev / max(sqrt(max(var, 0)), flo).
 * Returns how many are not NaN. */
OBS_ZS_CLONES
static ptrdiff_t obs_zscore_finish(const double *restrict dev, const double *restrict var,
                                   const double *restrict flo, double *restrict scores,
                                   ptrdiff_t n)
{
    ptrdiff_t not_nan = 0;
    for (ptrdiff_t j = 0; j < n; j++) {
        double v = var[j];
        v = v > 0.0 ? v : 0.0;
        double std = sqrt(v);
        std = std > flo[j] ? std : flo[j];
        double score = dev[j] / std;
        scores[j] = score;
        not_nan += score == score;
    }
    return not_nan;
}

/* How many of x[0:n] may not join a window (NaN, +-Inf, beyond 1e100). */
OBS_ZS_CLONES
static ptrdiff_t obs_zscore_count_outcasts(const double *restrict x, ptrdiff_t n)
{
    ptrdiff_t outcasts = 0;
    for (ptrdiff_t j = 0; j < n; j++)
        outcasts += !(fabs(x[j]) <= OBS_ZS_MAX_JOIN);
    return outcasts;
}

/* Moments of a full window (n == w values), as zscore.pyx's Moments. */
typedef struct {
    double ref;   /* shift of the sums */
    double s1;    /* sum of (x - ref) */
    double s2;    /* sum of (x - ref)**2 */
    double last;  /* newest value added */
    int64_t run;  /* newest values equal to last, <= w */
    int64_t ops;  /* adds and removes since the last exact recompute */
} obs_zs_moments;

/* The vector pass over k < len: scores from the moments before each value
 * (s1[k], s2[k], run[k]; x[k - 1] is the value before x[k]), and the first
 * k after which the moments must be recomputed exactly (len if none): a
 * spike left (from the moments after the remove) or the sums are stale
 * (from the moments after the add, s1[k + 1], s2[k + 1]). No branches (both
 * cases computed, & and | for && and ||), so that GCC vectorizes it. */
OBS_ZS_CLONES
static ptrdiff_t obs_zscore_full_scores(const double *restrict x,
                                        const double *restrict old,
                                        const double *restrict s1,
                                        const double *restrict s2,
                                        const int64_t *restrict run,
                                        double *restrict scores, ptrdiff_t len,
                                        int64_t w, double ref, int64_t ops0,
                                        ptrdiff_t *not_nan_out)
{
    const double inv_n = 1.0 / w, inv_nm1 = 1.0 / (w - 1);
    const int64_t nm1 = w - 1, max_ops = 4 * w + 4096;
    const double spike_floor = 1e-24 * ref * ref;
    ptrdiff_t first = len, not_nan = 0;
    for (ptrdiff_t k = 0; k < len; k++) {
        /* _score_parts and the finish; both cases computed, one picked */
        const double off = s1[k] * inv_n;
        const double mean_sums = ref + off;
        const double dev_sums = (x[k] - ref) - off;
        const double var_sums = (s2[k] - s1[k] * off) * inv_nm1;
        const double dev_last = x[k] - x[k - 1];
        const int is_constant = run[k] == w;
        const double mean = is_constant ? x[k - 1] : mean_sums;
        const double dev = is_constant ? dev_last : dev_sums;
        double var = is_constant ? 0.0 : var_sums;
        double flo = OBS_ZS_STD_REL_FLOOR * fabs(mean);
        flo = flo > OBS_ZS_STD_ABS_FLOOR ? flo : OBS_ZS_STD_ABS_FLOOR;
        var = var > 0.0 ? var : 0.0;
        double std = sqrt(var);
        std = std > flo ? std : flo;
        const double score = dev / std;
        scores[k] = score;
        not_nan += score == score;

        /* _remove_moments' spike test, _is_stale_inv after the add */
        const double d = old[k] - ref, dd = d * d;
        const double r1 = s1[k] - d, r2 = s2[k] - dd;
        const int spike = (dd * nm1 > 1e4 * (r2 * nm1 - r1 * r1)) & (dd > spike_floor);
        const int64_t ops = ops0 + 2 * (k + 1);
        const double a1 = s1[k + 1], a2 = s2[k + 1];
        const int stale = (ops > max_ops)
                          | ((ops > w) & (a1 * a1 > 1e4 * w * (a2 - a1 * a1 * inv_n)));
        const ptrdiff_t at = (spike | stale) ? k : len;
        first = at < first ? at : first;
    }
    *not_nan_out = not_nan;
    return first;
}

/* zscore_rolling over values[0:len] (len <= OBS_ZS_MAX_RUN) when the window
 * is full and contiguous (values[-w:0] are its values, oldest first) and
 * every value in the block joins. The serial pass keeps the sums (the same
 * remove-then-add as the scalar loop), the vector pass scores. Returns how
 * many values it took: len, or fewer when the moments after the last one
 * taken need an exact recompute (*stale set), which the caller does before
 * going on. */
static ptrdiff_t obs_zscore_full_block(obs_zs_moments *m, const double *values,
                                       ptrdiff_t len, int64_t w, double *scores,
                                       ptrdiff_t *not_nan, int *stale)
{
    double s1[OBS_ZS_MAX_RUN + 1], s2[OBS_ZS_MAX_RUN + 1];
    int64_t run[OBS_ZS_MAX_RUN + 1];
    const int64_t nm1 = w - 1;
    const double ref = m->ref;
    double a1 = m->s1, a2 = m->s2, last = m->last;
    int64_t r = m->run;
    for (ptrdiff_t k = 0; k < len; k++) {
        s1[k] = a1;
        s2[k] = a2;
        run[k] = r;
        const double x = values[k];
        double d = values[k - w] - ref;
        a1 -= d;
        a2 -= d * d;
        r = r > nm1 ? nm1 : r;
        d = x - ref;
        a1 += d;
        a2 += d * d;
        r = x == last ? r + 1 : 1;
        last = x;
    }
    s1[len] = a1;
    s2[len] = a2;
    run[len] = r;

    ptrdiff_t first = obs_zscore_full_scores(values, values - w, s1, s2, run, scores,
                                             len, w, ref, m->ops, not_nan);
    ptrdiff_t taken = first < len ? first + 1 : len;
    if (taken < len) {
        /* scores past the first stale point are redone after the recompute */
        ptrdiff_t unused = 0;
        for (ptrdiff_t k = taken; k < len; k++)
            unused += scores[k] == scores[k];
        *not_nan -= unused;
    }
    m->s1 = s1[taken];
    m->s2 = s2[taken];
    m->run = run[taken];
    m->last = values[taken - 1];
    m->ops = m->ops + 2 * taken;
    *stale = first < len;
    return taken;
}

#endif
