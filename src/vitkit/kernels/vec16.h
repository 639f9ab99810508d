/* Shared by vitkit's native kernels: 16-float vectors (GCC / Clang vector extensions, so one source compiles for
 * AVX-512, AVX2 or NEON), a vectorised exp for softmax, a 16 x 16 transpose, and a parallel loop over tasks that
 * runs on PyTorch's own OpenMP threads when built with -fopenmp (vitkit.kernels decides), else on pthreads. */
#ifndef VITKIT_VEC16_H
#define VITKIT_VEC16_H
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64), aligned(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef int32_t v16i __attribute__((vector_size(64), aligned(64)));

#if defined(__clang__)
#define SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (v16i){__VA_ARGS__})
#endif

static inline v16 ld(const float *p) { return *(const v16u *)p; }
static inline void st(float *p, v16 v) { *(v16u *)p = v; }
static inline v16 vmax(v16 a, v16 b) {
  v16i gt = a > b;
  return (v16)(((v16i)a & gt) | ((v16i)b & ~gt));
}
/* horizontal max / sum as a tree of 4 shuffles (a loop over the 16 lanes is a 15-long chain of scalar ops) */
#define HALVES(a, op)                                                                               \
  a = op(a, SHUFFLE(a, a, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));                  \
  a = op(a, SHUFFLE(a, a, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11));                  \
  a = op(a, SHUFFLE(a, a, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));                  \
  a = op(a, SHUFFLE(a, a, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
static inline v16 vadd(v16 a, v16 b) { return a + b; }
static inline float hmax(v16 a) {
  HALVES(a, vmax)
  return a[0];
}
static inline float hsum(v16 a) {
  HALVES(a, vadd)
  return a[0];
}

/* e^x for x <= 0 (softmax after the max is subtracted); relative error < 2e-7, exactly 0 below -87 (e^x leaves
 * float32's normal range at -87.3; a masked score, e.g. Swin's -100, must not become a weight whose products with
 * the values are denormal) */
static inline v16 vexp(v16 x) {
  v16i normal = x >= -87.f;
  x = vmax(x, (v16){} - 87.f);
  v16 fn = (x * 1.44269504f + 12582912.f) - 12582912.f; /* round to nearest: x / ln 2 */
  v16 r = x - fn * 0.693145752f - fn * 1.42860677e-06f; /* x - fn ln 2, in two parts */
  v16 y = 1.98756912e-4f * r + 1.39819994e-3f;
  y = y * r + 8.33345205e-3f;
  y = y * r + 4.16657962e-2f;
  y = y * r + 1.66666657e-1f;
  y = y * r + 5.0e-1f;
  y = y * r * r + r + 1.f;
  y = y * (v16)((__builtin_convertvector(fn, v16i) + 127) << 23); /* times 2^fn */
  return (v16)((v16i)y & normal);
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

/* 16 x 16 transpose of r[0..15]: each stage swaps one bit of the index between rows and columns */
#define SWAP_BIT(s, LO, HI)         \
  for (int i = 0; i < 16; i++)      \
    if (!(i & s)) {                 \
      v16 a = r[i], b = r[i + s];   \
      r[i] = SHUFFLE(a, b, LO);     \
      r[i + s] = SHUFFLE(a, b, HI); \
    }
#define LO1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define HI1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
#define LO2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define HI2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define LO4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define HI4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define LO8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define HI8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
static inline void transpose16(v16 *r) {
  SWAP_BIT(1, LO1, HI1)
  SWAP_BIT(2, LO2, HI2)
  SWAP_BIT(4, LO4, HI4)
  SWAP_BIT(8, LO8, HI8)
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
