/* Shared by vitkit's native kernels: float vectors of the CPU's own width (GCC / Clang vector extensions: 16 floats
 * with AVX-512, 8 with AVX / AVX2, 4 with SSE or NEON) and the number of vector registers, a vectorised exp
 * for softmax, a VW x VW transpose, and a parallel loop over tasks that runs on PyTorch's own OpenMP threads when
 * built with -fopenmp (vitkit.kernels decides), else on pthreads.
 *
 * Why the width is the CPU's: a vector wider than the registers is split by the compiler, and GCC does that through
 * the stack (every broadcast and every accumulator a store and a load), which made an AVX2 build of 16-float code
 * many times slower than PyTorch. The kernels size their register blocks from VW and VREGS instead. */
#ifndef VITKIT_VEC_H
#define VITKIT_VEC_H
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#define VW 16 /* floats per vector */
#define VREGS 32 /* vector registers */
#elif defined(__AVX__)
#define VW 8
#define VREGS 16
#elif defined(__aarch64__)
#define VW 4
#define VREGS 32
#else
#define VW 4
#define VREGS 16
#endif

typedef float vf __attribute__((vector_size(4 * VW), aligned(4 * VW)));
typedef float vfu __attribute__((vector_size(4 * VW), aligned(4)));
typedef int32_t vi __attribute__((vector_size(4 * VW), aligned(4 * VW)));

#if defined(__clang__)
#define SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (vi){__VA_ARGS__})
#endif

static inline vf ld(const float *p) { return *(const vfu *)p; }
static inline void st(float *p, vf v) { *(vfu *)p = v; }
static inline vf vmax(vf a, vf b) {
  vi gt = a > b;
  return (vf)(((vi)a & gt) | ((vi)b & ~gt));
}
/* horizontal max / sum as a tree of log2(VW) shuffles (a loop over the lanes is a long chain of scalar ops) */
#if VW == 16
#define HALVES(a, op)                                                              \
  a = op(a, SHUFFLE(a, a, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7)); \
  a = op(a, SHUFFLE(a, a, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11)); \
  a = op(a, SHUFFLE(a, a, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13)); \
  a = op(a, SHUFFLE(a, a, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
#elif VW == 8
#define HALVES(a, op)                                  \
  a = op(a, SHUFFLE(a, a, 4, 5, 6, 7, 0, 1, 2, 3));   \
  a = op(a, SHUFFLE(a, a, 2, 3, 0, 1, 6, 7, 4, 5));   \
  a = op(a, SHUFFLE(a, a, 1, 0, 3, 2, 5, 4, 7, 6));
#else
#define HALVES(a, op)                      \
  a = op(a, SHUFFLE(a, a, 2, 3, 0, 1));   \
  a = op(a, SHUFFLE(a, a, 1, 0, 3, 2));
#endif
static inline vf vadd(vf a, vf b) { return a + b; }
static inline float hmax(vf a) {
  HALVES(a, vmax)
  return a[0];
}
static inline float hsum(vf a) {
  HALVES(a, vadd)
  return a[0];
}

/* e^x for x <= 0 (softmax after the max is subtracted); relative error < 2e-7, exactly 0 below -87 (e^x leaves
 * float32's normal range at -87.3; a masked score, e.g. Swin's -100, must not become a weight whose products with
 * the values are denormal) */
static inline vf vexp(vf x) {
  vi normal = x >= -87.f;
  x = vmax(x, (vf){} - 87.f);
  vf fn = (x * 1.44269504f + 12582912.f) - 12582912.f; /* round to nearest: x / ln 2 */
  vf r = x - fn * 0.693145752f - fn * 1.42860677e-06f; /* x - fn ln 2, in two parts */
  vf y = 1.98756912e-4f * r + 1.39819994e-3f;
  y = y * r + 8.33345205e-3f;
  y = y * r + 4.16657962e-2f;
  y = y * r + 1.66666657e-1f;
  y = y * r + 5.0e-1f;
  y = y * r * r + r + 1.f;
  y = y * (vf)((__builtin_convertvector(fn, vi) + 127) << 23); /* times 2^fn */
  return (vf)((vi)y & normal);
}

/* Denormal floats as zero while a kernel runs on a thread (x86: MXCSR's FTZ and DAZ bits; AArch64: FPCR.FZ). A
 * product of a tiny softmax weight and a value lands in the denormal range, and every such operation then takes a
 * microcode assist on x86, many times slower; what is flushed is below 1.2e-38, far under float32 rounding of the
 * results. The caller's setting is restored afterwards (PyTorch's own threads run these kernels). */
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
static inline unsigned long flush_denormals(void) {
  unsigned long old = _mm_getcsr();
  _mm_setcsr((unsigned)old | 0x8040u);
  return old;
}
static inline void restore_denormals(unsigned long old) { _mm_setcsr((unsigned)old); }
#elif defined(__aarch64__)
static inline unsigned long flush_denormals(void) {
  unsigned long old;
  __asm__ volatile("mrs %0, fpcr" : "=r"(old));
  __asm__ volatile("msr fpcr, %0" : : "r"(old | (1ul << 24)));
  return old;
}
static inline void restore_denormals(unsigned long old) { __asm__ volatile("msr fpcr, %0" : : "r"(old)); }
#else
static inline unsigned long flush_denormals(void) { return 0; }
static inline void restore_denormals(unsigned long old) { (void)old; }
#endif

/* VW x VW transpose of r[0..VW-1]: stage s pairs rows i and i + s and swaps blocks of s lanes between them (bit s of
 * the index moves from the column to the row); LOs / HIs pick the first / second half of each pair */
#define SWAP_BIT(s, LO, HI)           \
  for (int i = 0; i < VW; i++)        \
    if (!(i & s)) {                   \
      vf a = r[i], b = r[i + s];      \
      r[i] = SHUFFLE(a, b, LO);       \
      r[i + s] = SHUFFLE(a, b, HI);   \
    }
#if VW == 16
#define LO1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define HI1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
#define LO2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define HI2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define LO4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define HI4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define LO8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define HI8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#elif VW == 8
#define LO1 0, 8, 2, 10, 4, 12, 6, 14
#define HI1 1, 9, 3, 11, 5, 13, 7, 15
#define LO2 0, 1, 8, 9, 4, 5, 12, 13
#define HI2 2, 3, 10, 11, 6, 7, 14, 15
#define LO4 0, 1, 2, 3, 8, 9, 10, 11
#define HI4 4, 5, 6, 7, 12, 13, 14, 15
#else
#define LO1 0, 4, 2, 6
#define HI1 1, 5, 3, 7
#define LO2 0, 1, 4, 5
#define HI2 2, 3, 6, 7
#endif
static inline void transpose(vf *r) {
  SWAP_BIT(1, LO1, HI1)
  SWAP_BIT(2, LO2, HI2)
#if VW >= 8
  SWAP_BIT(4, LO4, HI4)
#endif
#if VW == 16
  SWAP_BIT(8, LO8, HI8)
#endif
}

/* fn(ctx, task, scratch) for every task in [0, tasks), over nthreads threads, each with its own zeroed scratch
 * of scratch_floats floats (64-byte aligned). Returns 0, or 2 when memory ran out (no task then ran there). */
typedef void (*task_fn)(const void *ctx, int task, float *scratch);

static float *new_scratch(size_t floats) {
  float *buf = aligned_alloc(64, (sizeof(float) * floats + 63) / 64 * 64);
  if (buf) memset(buf, 0, sizeof(float) * floats);
  return buf;
}

#ifdef _OPENMP
static int run_parallel(int tasks, int nthreads, size_t scratch_floats, task_fn fn, const void *ctx) {
  /* linked against the libgomp PyTorch already loaded (same soname): its threads, no second pool spinning */
  int failed = 0;
#pragma omp parallel num_threads(nthreads < 1 ? 1 : nthreads) reduction(| : failed)
  {
    const unsigned long fp = flush_denormals();
    float *buf = new_scratch(scratch_floats);
    failed = buf == NULL;
#pragma omp for schedule(static)
    for (int t = 0; t < tasks; t++)
      if (buf) fn(ctx, t, buf);
    free(buf);
    restore_denormals(fp);
  }
  return failed ? 2 : 0;
}
#else
typedef struct {
  task_fn fn;
  const void *ctx;
  size_t scratch_floats;
  int start, end, failed;
} share_t;

static void *run_share(void *arg) {
  share_t *s = (share_t *)arg;
  const unsigned long fp = flush_denormals();
  float *buf = new_scratch(s->scratch_floats);
  if (!buf) s->failed = 1;
  else
    for (int t = s->start; t < s->end; t++) s->fn(s->ctx, t, buf);
  free(buf);
  restore_denormals(fp);
  return NULL;
}

static int run_parallel(int tasks, int nthreads, size_t scratch_floats, task_fn fn, const void *ctx) {
  if (nthreads > 64) nthreads = 64;
  if (nthreads > tasks) nthreads = tasks;
  if (nthreads < 1) nthreads = 1;
  share_t shares[64];
  pthread_t threads[64];
  int started[64] = {0}, failed = 0;
  for (int k = 0; k < nthreads; k++)
    shares[k] = (share_t){fn, ctx, scratch_floats, (int)((long)tasks * k / nthreads),
                          (int)((long)tasks * (k + 1) / nthreads), 0};
  for (int k = 1; k < nthreads; k++) {
    if (pthread_create(&threads[k], NULL, run_share, &shares[k]) == 0) started[k] = 1;
    else run_share(&shares[k]); /* no thread to be had: do its share here */
  }
  run_share(&shares[0]);
  for (int k = 1; k < nthreads; k++)
    if (started[k]) pthread_join(threads[k], NULL);
  for (int k = 0; k < nthreads; k++) failed |= shares[k].failed;
  return failed ? 2 : 0;
}
#endif
#endif
