/* Swin's window attention for CPU float32 inference, fused: Q K^T + bias -> softmax -> P V, read and written in place.
 *
 * Why a kernel: on 7 x 7 windows every matmul is 49 x 49 x 32. PyTorch runs them through SDPA far below the matmul
 * rate (call overhead per window and head dominates), and a Swin block also pays two copies of the token map (window
 * partition / reverse, plus the cyclic shift). Here the shift and the partition are index arithmetic: each
 * window's q, k, v are read where the qkv linear wrote them (K through a transpose into L1), the scores stay in L1,
 * and the result is written where the token sits in the (unshifted) map.
 *
 * Layouts (row-major, float32):
 *   qkv  (B, H, W, 3C): per token [q | k | v], each heads x hd
 *   out  (B, H, W, C): per token heads x hd
 *   bias (heads, n, np) for every window, or (nW, heads, n, np) per window (relative position bias + shift
 *        mask), with n = ws * ws tokens per window, np = n rounded up past n to a multiple of 16, columns >= n
 *        at -inf.
 * Windows are read from the map rolled by -shift (as torch.roll(x, (-shift, -shift), (1, 2))) and written
 * back rolled by +shift, so the caller never rolls.
 *
 * vitkit.kernels builds it with -O3 -march=native on first use (vec16.h: vectors, exp, threads).
 */
#include "vec16.h"

typedef struct {
  const float *qkv, *bias;
  float *out;
  long bias_window_stride; /* floats between two windows' biases; 0: one bias for every window */
  int H, W, C, heads, ws, shift, hd, np;
  float scale;
} job_t;

/* s[r][j0 + c] = scale q_r . kT[:, j0 + c] + bias_r[j0 + c] for 4 rows and NB x 16 columns; inlined with NB a
 * constant, so the 4 x NB accumulators stay in registers */
static inline __attribute__((always_inline)) void scores(const float *const *qr, const float *const *br,
                                                        const float *kT, float *s, int j0, int hd, int np,
                                                        float scale, const int NB) {
  v16 a[4][4] = {{{0}}};
  for (int d = 0; d < hd; d++) {
    v16 k[4];
    for (int c = 0; c < NB; c++) k[c] = ld(kT + d * np + j0 + 16 * c);
    for (int r = 0; r < 4; r++)
      for (int c = 0; c < NB; c++) a[r][c] += qr[r][d] * k[c];
  }
  for (int r = 0; r < 4; r++)
    for (int c = 0; c < NB; c++) st(s + r * np + j0 + 16 * c, a[r][c] * scale + ld(br[r] + j0 + 16 * c));
}

/* out[r] = (p_r . V) * p_r[np - 1] (1 / the row sum) over 16 NB channels, for 8 rows of P (rows < live written);
 * V row j at v + off[j], out row r at out + out_off[r] / 3 (token offsets in qkv); 8 x NB accumulators */
static inline __attribute__((always_inline)) void weighted_sum(const float *p, const float *v, const long *off,
                                                              const long *out_off, int live, int n, int np,
                                                              float *out, const int NB) {
  v16 a[8][2] = {{{0}}};
  for (int j = 0; j < n; j++) {
    v16 x[2];
    for (int c = 0; c < NB; c++) x[c] = ld(v + off[j] + 16 * c);
    for (int r = 0; r < 8; r++)
      for (int c = 0; c < NB; c++) a[r][c] += p[r * np + j] * x[c];
  }
  for (int r = 0; r < 8 && r < live; r++)
    for (int c = 0; c < NB; c++) st(out + out_off[r] / 3 + 16 * c, a[r][c] * p[r * np + np - 1]);
}

/* one window, all heads; scratch: kT (hd x np), S (np x np), the n tokens' offsets in qkv */
static void run_window(const void *ctx, int task, float *buf) {
  const job_t *J = (const job_t *)ctx;
  const int ws = J->ws, n = ws * ws, np = J->np, hd = J->hd, C = J->C, H = J->H, W = J->W;
  const int nh = H / ws, nw = W / ws;
  const int b = task / (nh * nw), wi = (task / nw) % nh, wj = task % nw;
  const int nr = (n + 7) / 8 * 8; /* rows computed: whole blocks of 8 (np >= nr: np is a multiple of 16 above n) */
  float *kT = buf, *s = kT + (size_t)hd * np;
  long *off = (long *)(s + (size_t)np * np);
  for (int t = 0; t < n; t++) { /* token t of the rolled window -> its offset in qkv (3C floats per token) */
    int y = (wi * ws + t / ws + J->shift) % H, x = (wj * ws + t % ws + J->shift) % W;
    off[t] = ((long)(b * H + y) * W + x) * 3 * C;
  }
  const float *bias_w = J->bias + J->bias_window_stride * (wi * nw + wj);
  for (int h = 0; h < J->heads; h++) {
    const float *q = J->qkv + (size_t)h * hd, *k = q + C, *v = q + 2 * C; /* token t's: + off[t] */
    const float *bias = bias_w + (size_t)h * n * np;
    for (int t0 = 0; t0 < np; t0 += 16) /* K (n x hd) -> kT (hd x np); columns >= n zero */
      for (int d0 = 0; d0 < hd; d0 += 16) {
        v16 r[16];
        for (int i = 0; i < 16; i++) r[i] = t0 + i < n ? ld(k + off[t0 + i] + d0) : (v16){};
        transpose16(r);
        for (int i = 0; i < 16; i++) st(kT + (d0 + i) * np + t0, r[i]);
      }
    /* S = scale Q K^T + bias: 4 rows x 64 columns at a time */
    for (int i0 = 0; i0 < nr; i0 += 4) {
      const float *qr[4], *br[4];
      for (int r = 0; r < 4; r++) {
        const int i = i0 + r < n ? i0 + r : n - 1; /* past n: repeat the last row (never written out) */
        qr[r] = q + off[i], br[r] = bias + i * np;
      }
      int j0 = 0;
      for (; j0 + 64 <= np; j0 += 64) scores(qr, br, kT, s + i0 * np, j0, hd, np, J->scale, 4);
      for (; j0 < np; j0 += 16) scores(qr, br, kT, s + i0 * np, j0, hd, np, J->scale, 1);
    }
    /* softmax per row; 1 / row sum kept in the spare column np - 1 (columns >= n are -inf: weight 0) */
    for (int i = 0; i < nr; i++) {
      float *si = s + i * np;
      v16 m = ld(si);
      for (int j0 = 16; j0 < np; j0 += 16) m = vmax(m, ld(si + j0));
      const float mx = hmax(m);
      v16 sum = {0};
      for (int j0 = 0; j0 < np; j0 += 16) {
        v16 e = vexp(ld(si + j0) - mx);
        st(si + j0, e);
        sum += e;
      }
      si[np - 1] = 1.f / hsum(sum);
    }
    /* O = P V / sum: 8 rows x 32 channels at a time, each row written at its token's place in the map */
    float *out = J->out + (size_t)h * hd;
    for (int i0 = 0; i0 < nr; i0 += 8)
      for (int d0 = 0; d0 < hd; d0 += 32) {
        if (hd - d0 >= 32) weighted_sum(s + i0 * np, v + d0, off, off + i0, n - i0, n, np, out + d0, 2);
        else weighted_sum(s + i0 * np, v + d0, off, off + i0, n - i0, n, np, out + d0, 1);
      }
  }
}

/* Returns 0 on success, 1 for a shape this kernel does not handle, 2 when memory ran out.
 * The caller checks shapes and strides; H and W are multiples of ws, 0 <= shift < ws. */
int vk_window_attention(const float *qkv, float *out, const float *bias, int per_window, int B, int H, int W,
                        int C, int heads, int ws, int shift, float scale, int nthreads) {
  if (heads <= 0 || C % heads || ws <= 0 || H % ws || W % ws) return 1;
  const int hd = C / heads, n = ws * ws, np = n / 16 * 16 + 16;
  if (hd % 16 || n > 1024) return 1;
  const job_t job = {qkv, bias, out, per_window ? (long)heads * n * np : 0, H, W, C, heads, ws, shift, hd, np, scale};
  const size_t scratch = (size_t)hd * np + (size_t)np * np + 2 * (size_t)n; /* the offsets: n longs */
  return run_parallel(B * (H / ws) * (W / ws), nthreads, scratch, run_window, &job);
}
