/* Swin's window attention for CPU float32, fused: Q K^T + bias -> softmax -> P V, read and written in place; and its
 * backward pass for training.
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
 *   probs (B * nW, heads, n, n): the softmax weights, written by the forward pass when given (training) and read by
 *        the backward pass, which writes dqkv (B, H, W, 3C) (every token lies in one window: each written once) and
 *        dbias (B * nW, heads, n, n), the gradient of the scores, which the caller sums over windows for the bias.
 *
 * vitkit.kernels builds it with -O3 -march=native on first use (vec.h: vectors, exp, threads). Register blocks: scores
 * 4 rows by SV vectors of columns, weighted sums 8 rows by WV vectors of channels: half the registers as
 * accumulators, the rest for the loaded vectors and broadcasts (AVX-512: 64 columns, 32 channels; AVX2: 16 and 8).
 */
#include "vec.h"

#define SV (VREGS / 8)
#define WV (VREGS / 16)

typedef struct {
  const float *qkv, *bias;
  float *out, *probs; /* probs: NULL in inference */
  long bias_window_stride; /* floats between two windows' biases; 0: one bias for every window */
  int H, W, C, heads, ws, shift, hd, np;
  float scale;
} job_t;

/* s[r][j0 + c] = scale q_r . kT[:, j0 + c] + bias_r[j0 + c] for 4 rows and NB vectors of columns; inlined with NB a
 * constant, so the 4 x NB accumulators stay in registers */
static inline __attribute__((always_inline)) void scores(const float *const *qr, const float *const *br,
                                                        const float *kT, float *s, int j0, int hd, int np,
                                                        float scale, const int NB) {
  vf a[4][SV] = {{{0}}};
  for (int d = 0; d < hd; d++) {
    vf k[SV];
    for (int c = 0; c < NB; c++) k[c] = ld(kT + d * np + j0 + VW * c);
    for (int r = 0; r < 4; r++)
      for (int c = 0; c < NB; c++) a[r][c] += qr[r][d] * k[c];
  }
  for (int r = 0; r < 4; r++)
    for (int c = 0; c < NB; c++) st(s + r * np + j0 + VW * c, a[r][c] * scale + ld(br[r] + j0 + VW * c));
}

/* out[r] = (p_r . V) * p_r[np - 1] (1 / the row sum) over NB vectors of channels, for 8 rows of P (rows < live
 * written); V row j at v + off[j], out row r at out + out_off[r] / DIV (token offsets in qkv: DIV 3 for a C-wide
 * map, 1 for the 3C-wide gradient of qkv); 8 x NB accumulators */
static inline __attribute__((always_inline)) void weighted_sum(const float *p, const float *v, const long *off,
                                                              const long *out_off, int live, int n, int np,
                                                              float *out, const int NB, const int DIV) {
  vf a[8][WV] = {{{0}}};
  for (int j = 0; j < n; j++) {
    vf x[WV];
    for (int c = 0; c < NB; c++) x[c] = ld(v + off[j] + VW * c);
    for (int r = 0; r < 8; r++)
      for (int c = 0; c < NB; c++) a[r][c] += p[r * np + j] * x[c];
  }
  for (int r = 0; r < 8 && r < live; r++)
    for (int c = 0; c < NB; c++) st(out + out_off[r] / DIV + VW * c, a[r][c] * p[r * np + np - 1]);
}

/* weighted_sum over all hd channels: blocks of WV vectors, then single vectors */
static inline void weighted_sums(const float *p, const float *v, const long *off, const long *out_off, int live, int n,
                                 int np, int hd, float *out, const int DIV) {
  int d0 = 0;
  for (; d0 + WV * VW <= hd; d0 += WV * VW) weighted_sum(p, v + d0, off, out_off, live, n, np, out + d0, WV, DIV);
  for (; d0 < hd; d0 += VW) weighted_sum(p, v + d0, off, out_off, live, n, np, out + d0, 1, DIV);
}

/* rows [0, nr) of out (np x np) = the transpose of in's n x n corner, zero elsewhere, column np - 1 = last */
static void transpose_corner(const float *in, float *out, int n, int nr, int np, float last) {
  for (int i0 = 0; i0 < np; i0 += VW)
    for (int j0 = 0; j0 < nr; j0 += VW) {
      vf r[VW];
      for (int i = 0; i < VW; i++) r[i] = i0 + i < n ? ld(in + (i0 + i) * np + j0) : (vf){};
      transpose(r);
      for (int j = 0; j < VW && j0 + j < nr; j++) st(out + (j0 + j) * np + i0, r[j]);
    }
  for (int j = 0; j < nr; j++) {
    for (int i = n; i < np; i++) out[j * np + i] = 0.f;
    out[j * np + np - 1] = last;
  }
}

/* rows (n x hd, row t at src + off[t]) -> dst (hd x np): their transpose, columns >= n zero */
static void transpose_rows(const float *src, const long *off, float *dst, int n, int np, int hd) {
  for (int t0 = 0; t0 < np; t0 += VW)
    for (int d0 = 0; d0 < hd; d0 += VW) {
      vf r[VW];
      for (int i = 0; i < VW; i++) r[i] = t0 + i < n ? ld(src + off[t0 + i] + d0) : (vf){};
      transpose(r);
      for (int i = 0; i < VW; i++) st(dst + (d0 + i) * np + t0, r[i]);
    }
}

/* token t of the window (b, wi, wj) of the map rolled by -shift -> its offset in qkv (3C floats per token) */
static void token_offsets(long *off, int task, int H, int W, int C, int ws, int shift) {
  const int nh = H / ws, nw = W / ws, n = ws * ws;
  const int b = task / (nh * nw), wi = (task / nw) % nh, wj = task % nw;
  for (int t = 0; t < n; t++) {
    int y = (wi * ws + t / ws + shift) % H, x = (wj * ws + t % ws + shift) % W;
    off[t] = ((long)(b * H + y) * W + x) * 3 * C;
  }
}

/* one window, all heads; scratch: kT (hd x np), S (np x np), the n tokens' offsets in qkv */
static void run_window(const void *ctx, int task, float *buf) {
  const job_t *J = (const job_t *)ctx;
  const int ws = J->ws, n = ws * ws, np = J->np, hd = J->hd, C = J->C, H = J->H, W = J->W;
  const int nw = W / ws, wi = (task / nw) % (H / ws), wj = task % nw;
  const int nr = (n + 7) / 8 * 8; /* rows computed: whole blocks of 8 (np >= nr: np is a multiple of 16 above n) */
  float *kT = buf, *s = kT + (size_t)hd * np;
  long *off = (long *)(s + (size_t)np * np);
  token_offsets(off, task, H, W, C, ws, J->shift);
  const float *bias_w = J->bias + J->bias_window_stride * (wi * nw + wj);
  for (int h = 0; h < J->heads; h++) {
    const float *q = J->qkv + (size_t)h * hd, *k = q + C, *v = q + 2 * C; /* token t's: + off[t] */
    const float *bias = bias_w + (size_t)h * n * np;
    transpose_rows(k, off, kT, n, np, hd); /* K (n x hd) -> kT (hd x np) */
    /* S = scale Q K^T + bias: 4 rows x SV vectors of columns at a time */
    for (int i0 = 0; i0 < nr; i0 += 4) {
      const float *qr[4], *br[4];
      for (int r = 0; r < 4; r++) {
        const int i = i0 + r < n ? i0 + r : n - 1; /* past n: repeat the last row (never written out) */
        qr[r] = q + off[i], br[r] = bias + i * np;
      }
      int j0 = 0;
      for (; j0 + SV * VW <= np; j0 += SV * VW) scores(qr, br, kT, s + i0 * np, j0, hd, np, J->scale, SV);
      for (; j0 < np; j0 += VW) scores(qr, br, kT, s + i0 * np, j0, hd, np, J->scale, 1);
    }
    /* softmax per row; 1 / row sum kept in the spare column np - 1 (columns >= n are -inf: weight 0) */
    for (int i = 0; i < nr; i++) {
      float *si = s + i * np;
      vf m = ld(si);
      for (int j0 = VW; j0 < np; j0 += VW) m = vmax(m, ld(si + j0));
      const float mx = hmax(m);
      vf sum = {0};
      for (int j0 = 0; j0 < np; j0 += VW) {
        vf e = vexp(ld(si + j0) - mx);
        st(si + j0, e);
        sum += e;
      }
      si[np - 1] = 1.f / hsum(sum);
    }
    if (J->probs) { /* training: the weights, normalised, for the backward pass */
      float *p = J->probs + ((size_t)task * J->heads + h) * n * n;
      for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) p[i * n + j] = s[i * np + j] * s[i * np + np - 1];
    }
    /* O = P V / sum: 8 rows x WV vectors of channels at a time, each row written at its token's place in the map */
    float *out = J->out + (size_t)h * hd;
    for (int i0 = 0; i0 < nr; i0 += 8) weighted_sums(s + i0 * np, v, off, off + i0, n - i0, n, np, hd, out, 3);
  }
}

/* Returns 0 on success, 1 for a shape this kernel does not handle, 2 when memory ran out.
 * The caller checks shapes and strides; H and W are multiples of ws, 0 <= shift < ws. */
int vk_window_attention(const float *qkv, float *out, float *probs, const float *bias, int per_window, int B, int H,
                        int W, int C, int heads, int ws, int shift, float scale, int nthreads) {
  if (heads <= 0 || C % heads || ws <= 0 || H % ws || W % ws) return 1;
  const int hd = C / heads, n = ws * ws, np = n / 16 * 16 + 16;
  if (hd % 16 || n > 1024) return 1;
  const job_t job = {qkv, bias, out, probs, per_window ? (long)heads * n * np : 0, H, W, C, heads, ws, shift, hd, np,
                     scale};
  const size_t scratch = (size_t)hd * np + (size_t)np * np + 2 * (size_t)n; /* the offsets: n longs */
  return run_parallel(B * (H / ws) * (W / ws), nthreads, scratch, run_window, &job);
}

/* --- the backward pass -------------------------------------------------------------------------------------------
 * Per window and head, with P the saved weights and dO the output's gradient (rows at the window's tokens):
 *   dP = dO V^T;  dS = P * (dP - rowsum(P * dP)) (the scores' gradient: also the bias's, per window);
 *   dQ = scale dS K;  dK = scale dS^T Q;  dV = P^T dO.
 * The same register blocks as the forward pass: dP as the scores (dO for Q, V for K, a zero bias), the three
 * products as weighted sums whose spare column holds the factor (scale, or 1). */
typedef struct {
  const float *qkv, *probs, *dout, *zeros;
  float *dqkv, *dbias;
  int H, W, C, heads, ws, shift, hd, np;
  float scale;
} back_t;

static void run_window_backward(const void *ctx, int task, float *buf) {
  const back_t *J = (const back_t *)ctx;
  const int ws = J->ws, n = ws * ws, np = J->np, hd = J->hd, C = J->C;
  const int nr = (n + 7) / 8 * 8;
  float *vT = buf, *p = vT + (size_t)hd * np, *ds = p + (size_t)np * np, *t = ds + (size_t)np * np;
  long *off = (long *)(t + (size_t)np * np), *off_out = off + n; /* token offsets in qkv, in dout (C per token) */
  token_offsets(off, task, J->H, J->W, C, ws, J->shift);
  for (int i = 0; i < n; i++) off_out[i] = off[i] / 3;
  for (int h = 0; h < J->heads; h++) {
    const float *q = J->qkv + (size_t)h * hd, *k = q + C, *v = q + 2 * C, *dout = J->dout + (size_t)h * hd;
    float *dq = J->dqkv + (size_t)h * hd, *dk = dq + C, *dv = dq + 2 * C;
    const float *ph = J->probs + ((size_t)task * J->heads + h) * n * n;
    float *dsh = J->dbias + ((size_t)task * J->heads + h) * n * n;
    for (int i = 0; i < nr; i++) /* P padded to np columns (zeros past n); rows past n zero */
      for (int j = 0; j < np; j++) p[i * np + j] = i < n && j < n ? ph[i * n + j] : 0.f;
    transpose_rows(v, off, vT, n, np, hd); /* V (n x hd) -> vT (hd x np) */
    for (int i0 = 0; i0 < nr; i0 += 4) { /* dP = dO V^T */
      const float *qr[4], *br[4];
      for (int r = 0; r < 4; r++) {
        qr[r] = dout + off_out[i0 + r < n ? i0 + r : n - 1];
        br[r] = J->zeros;
      }
      int j0 = 0;
      for (; j0 + SV * VW <= np; j0 += SV * VW) scores(qr, br, vT, ds + i0 * np, j0, hd, np, 1.f, SV);
      for (; j0 < np; j0 += VW) scores(qr, br, vT, ds + i0 * np, j0, hd, np, 1.f, 1);
    }
    for (int i = 0; i < nr; i++) { /* dS = P (dP - rowsum(P dP)), kept for the bias; spare column: scale */
      float *di = ds + i * np;
      const float *pi = p + i * np;
      vf acc = {0};
      for (int j0 = 0; j0 < np; j0 += VW) acc += ld(pi + j0) * ld(di + j0);
      const float dot = hsum(acc);
      for (int j0 = 0; j0 < np; j0 += VW) st(di + j0, ld(pi + j0) * (ld(di + j0) - dot));
      if (i < n)
        for (int j = 0; j < n; j++) dsh[i * n + j] = di[j];
      di[np - 1] = J->scale;
    }
    for (int i0 = 0; i0 < nr; i0 += 8) /* dQ = scale dS K */
      weighted_sums(ds + i0 * np, k, off, off + i0, n - i0, n, np, hd, dq, 1);
    transpose_corner(ds, t, n, nr, np, J->scale); /* dK = scale dS^T Q */
    for (int i0 = 0; i0 < nr; i0 += 8) weighted_sums(t + i0 * np, q, off, off + i0, n - i0, n, np, hd, dk, 1);
    transpose_corner(p, t, n, nr, np, 1.f); /* dV = P^T dO */
    for (int i0 = 0; i0 < nr; i0 += 8)
      weighted_sums(t + i0 * np, dout, off_out, off + i0, n - i0, n, np, hd, dv, 1);
  }
}

/* Returns 0, 1 for a shape this kernel does not handle, 2 when memory ran out. dout: (B, H, W, C) contiguous. */
int vk_window_attention_backward(const float *qkv, const float *probs, const float *dout, float *dqkv, float *dbias,
                                 int B, int H, int W, int C, int heads, int ws, int shift, float scale,
                                 int nthreads) {
  if (heads <= 0 || C % heads || ws <= 0 || H % ws || W % ws) return 1;
  const int hd = C / heads, n = ws * ws, np = n / 16 * 16 + 16;
  if (hd % 16 || n > 1024) return 1;
  float *zeros = calloc((size_t)np, sizeof(float));
  if (!zeros) return 2;
  const back_t job = {qkv, probs, dout, zeros, dqkv, dbias, H, W, C, heads, ws, shift, hd, np, scale};
  const size_t scratch = (size_t)hd * np + 3 * (size_t)np * np + 4 * (size_t)n; /* + 2 x n longs of offsets */
  const int rc = run_parallel(B * (H / ws) * (W / ws), nthreads, scratch, run_window_backward, &job);
  free(zeros);
  return rc;
}
