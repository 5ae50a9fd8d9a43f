/* The push loop of ringbuf.pyx and the move of staged samples into a row.
 *
 * Written in C rather than Cython so that the loop's pointers stay in
 * registers, with the move out of line (see obs_ring_move_slot).
 *
 * A ring row is written once per lap and read rarely, and a hot tier's rows
 * are far larger than the caches. A plain store to a line that is not cached
 * first reads the line from memory (to own it), then writes it back: twice
 * the traffic of the data. A full stage (16 samples, two 64-byte lines of ts
 * and two of values in the row) therefore moves with non-temporal stores of
 * whole lines, which skip the read, when its place in the row is line
 * aligned; otherwise, and on machines without SSE2 (aarch64), sample by
 * sample. Such stores are weakly ordered: obs_ring_push fences them before
 * it returns.
 *
 * Slot metadata m[0..3]: head (next write position in the row), count,
 * last stored ts, staged count. The staged samples of slot s are pairs
 * stage[s * 2 * OBS_STAGE + 2 * j] (ts) and [... + 1] (the value's bits),
 * j < m[3]: a sample staged is one store into one cache line. With ts and
 * values in separate halves (two lines a sample) the C loop of a scrape of
 * 1000 ran 4.1-4.4 ns a sample, paired 3.9 ns (best of 6, load ~4).
 */
#ifndef OBSCORE_RINGBUF_PUSH_H
#define OBSCORE_RINGBUF_PUSH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#define OBS_HAS_STREAM 1
#else
#define OBS_HAS_STREAM 0
#endif

enum {
    OBS_STORED = 0,        /* the sample was appended */
    OBS_OUT_OF_ORDER = 1,  /* ts older than the last stored ts of its slot */
    OBS_DUPLICATE = 2,     /* ts equal to the last stored ts of its slot */
    OBS_LINE = 8,          /* int64 or float64 items per 64-byte cache line */
    OBS_META = 4,          /* int64 items per slot in the metadata table */
    OBS_STAGE = 16,        /* samples a slot stages before they move to its row */
};

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define OBS_RING_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define OBS_RING_CLONES
#endif

/* Whether every slot is in [0, n_series). Branch-free and built for AVX-512,
 * AVX2 and baseline x86-64, picked at load: baseline x86-64 has no 64-bit
 * vector compare, and the scalar loop took 0.6-1.0 us for a scrape of 1000
 * (AVX2: 0.19 us), a sixth of the whole push. */
OBS_RING_CLONES
static int obs_ring_slots_ok(const int64_t *restrict slots, ptrdiff_t n, int64_t n_series)
{
    int64_t bad = 0;
    for (ptrdiff_t i = 0; i < n; i++)
        bad |= (slots[i] < 0) | (slots[i] >= n_series);
    return bad == 0;
}

/* Append the k staged pairs of one slot to its row, overwriting the oldest
 * when the row is full, and empty the stage. */
static inline void obs_ring_move(int64_t *m, int64_t k, int64_t *row_ts,
                                 double *row_values, const int64_t *pairs,
                                 int64_t capacity)
{
    int64_t pos = m[0];
    int streamed = 0;
#if OBS_HAS_STREAM
    if (k == OBS_STAGE && pos + k <= capacity
        && ((((uintptr_t)(row_ts + pos)) | ((uintptr_t)(row_values + pos))) & 63) == 0) {
        for (int q = 0; q < OBS_STAGE; q += 2) {
            __m128i a = _mm_loadu_si128((const __m128i *)(pairs + 2 * q));
            __m128i b = _mm_loadu_si128((const __m128i *)(pairs + 2 * q + 2));
            _mm_stream_si128((__m128i *)(row_ts + pos + q), _mm_unpacklo_epi64(a, b));
            _mm_stream_si128((__m128i *)(row_values + pos + q), _mm_unpackhi_epi64(a, b));
        }
        pos += k;
        if (pos == capacity)
            pos = 0;
        streamed = 1;
    }
#endif
    if (!streamed) {
        for (int64_t q = 0; q < k; q++) {
            row_ts[pos] = pairs[2 * q];
            memcpy(&row_values[pos], &pairs[2 * q + 1], sizeof(double));
            if (++pos == capacity)
                pos = 0;
        }
    }
    m[0] = pos;
    m[1] = m[1] + k < capacity ? m[1] + k : capacity;
    m[3] = 0;
}

/* Where a slot's full stage goes: the rows and their geometry. */
typedef struct {
    int64_t *row_ts;      /* ts rows, stride items apart */
    double *row_values;   /* value rows, same layout */
    int64_t stride;       /* row length in items */
    int64_t capacity;     /* samples kept per row */
} obs_ring_rows;

/* Out of line, so that the push loop keeps its own pointers in registers
 * (inlined, GCC kept five of them on the stack and reloaded them per
 * sample); called once per stage, not per sample. */
static __attribute__((noinline)) void obs_ring_move_slot(int64_t *m, int64_t k,
                                                         int64_t s, const int64_t *stage,
                                                         const obs_ring_rows *rows)
{
    obs_ring_move(m, k, rows->row_ts + s * rows->stride, rows->row_values + s * rows->stride,
                  stage + s * 2 * OBS_STAGE, rows->capacity);
}

/* Stage n samples (slots already checked to be in range) and move each
 * stage that fills: a full one, or a shorter one that brings the head to a
 * line boundary (a capacity not a multiple of 8 after a wrap, or a read that
 * moved a partial stage). Writes a status per row; returns the number
 * stored. */
static int64_t obs_ring_push(const int64_t *restrict in_slots,
                             const int64_t *restrict in_ts,
                             const double *restrict in_values,
                             uint8_t *restrict out_status, ptrdiff_t n,
                             int64_t *restrict meta, int64_t *restrict stage,
                             const obs_ring_rows *rows)
{
    ptrdiff_t rejected = 0;
    /* every row stored unless rejected below: one memset, not a store a row */
    memset(out_status, OBS_STORED, (size_t)n);
    for (ptrdiff_t i = 0; i < n; i++) {
        const int64_t s = in_slots[i];
        const int64_t t = in_ts[i];
        int64_t *m = meta + s * OBS_META;
        int64_t *at = stage + s * 2 * OBS_STAGE + 2 * m[3];
        const int64_t k = m[3] + 1;
        if (t <= m[2] && m[1] + k > 1) {  /* not newer than the slot's last sample */
            out_status[i] = t == m[2] ? OBS_DUPLICATE : OBS_OUT_OF_ORDER;
            rejected++;
            continue;
        }
        at[0] = t;
        memcpy(at + 1, &in_values[i], sizeof(double));
        m[2] = t;
        m[3] = k;
        if (k == OBS_STAGE - (m[0] & (OBS_LINE - 1)))
            obs_ring_move_slot(m, k, s, stage, rows);
    }
#if OBS_HAS_STREAM
    _mm_sfence();
#endif
    return n - rejected;
}

#endif
