/* Swin's window attention for CPU float32 inference, fused: gather -> Q K^T + bias -> softmax -> P V -> scatter.
 *
 * Why a kernel: on 7 x 7 windows every matmul is 49 x 49 x 32. PyTorch runs them through SDPA far below the matmul
 * rate (call overhead per window and head dominates), and a Swin block also pays two copies of the token map (window
 * partition / reverse, plus the cyclic shift). Here the shift and the partition are index arithmetic, each
 * window's q, k, v are read once from the qkv linear's output, the scores stay in L1, and the result is written
 * where the token sits in the (unshifted) map.
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
  int group;    /* heads whose q, k, v are gathered together (kept in L2) */
  long mstride; /* floats between two per-head matrices in the scratch buffer */
  float scale;
} job_t;

/* one window, all heads; scratch: group x (q, k, v) of np x hd, kT (hd x np), s (np x np), n row indices */
static void run_window(const void *ctx, int task, float *buf) {
  const job_t *J = (const job_t *)ctx;
  const int ws = J->ws, n = ws * ws, np = J->np, hd = J->hd, C = J->C, H = J->H, W = J->W, heads = J->heads;
  const int nh = H / ws, nw = W / ws;
  const int b = task / (nh * nw), wi = (task / nw) % nh, wj = task % nw;
  const long ms = J->mstride;
  float *kT = buf + (size_t)J->group * ms * 3, *s = kT + (size_t)hd * np;
  int *rows = (int *)(s + (size_t)np * np);
  for (int t = 0; t < n; t++) { /* token t of the rolled window -> its row in the map */
    int y = (wi * ws + t / ws + J->shift) % H, x = (wj * ws + t % ws + J->shift) % W;
    rows[t] = (b * H + y) * W + x;
  }
  const float *bias_w = J->bias + J->bias_window_stride * (wi * nw + wj);
  for (int h0 = 0; h0 < heads; h0 += J->group) {
    const int g = heads - h0 < J->group ? heads - h0 : J->group;
    for (int t = 0; t < n; t++) { /* one pass over each token's q | k | v for this group of heads */
      const float *src = J->qkv + (size_t)rows[t] * 3 * C + (size_t)h0 * hd;
      for (int h = 0; h < g; h++) {
        float *q = buf + h * ms * 3, *k = q + ms, *v = k + ms;
        for (int d = 0; d < hd; d += 16) {
          st(q + t * hd + d, ld(src + h * hd + d));
          st(k + t * hd + d, ld(src + C + h * hd + d));
          st(v + t * hd + d, ld(src + 2 * C + h * hd + d));
        }
      }
    }
    for (int hg = 0; hg < g; hg++) {
      const float *q = buf + hg * ms * 3, *k = q + ms, *v = k + ms;
      const float *bias = bias_w + (size_t)(h0 + hg) * n * np;
      for (int t0 = 0; t0 < np; t0 += 16) /* k (np x hd) -> kT (hd x np); rows >= n are zero */
        for (int d0 = 0; d0 < hd; d0 += 16) {
          v16 r[16];
          for (int i = 0; i < 16; i++) r[i] = ld(k + (t0 + i) * hd + d0);
          transpose16(r);
          for (int i = 0; i < 16; i++) st(kT + (d0 + i) * np + t0, r[i]);
        }
      /* S = scale Q K^T + bias, row max, exp, 1 / row sum (kept in the spare column np - 1); 4 rows at a time */
      for (int i0 = 0; i0 < n; i0 += 4) {
        int ii[4];
        for (int r = 0; r < 4; r++) ii[r] = i0 + r < n ? i0 + r : n - 1; /* past n: repeat the last row */
        const float *q0 = q + ii[0] * hd, *q1 = q + ii[1] * hd, *q2 = q + ii[2] * hd, *q3 = q + ii[3] * hd;
        v16 m[4];
        for (int j0 = 0; j0 < np; j0 += 16) {
          v16 a[4] = {{0}, {0}, {0}, {0}};
          for (int d = 0; d < hd; d++) {
            v16 kv = ld(kT + d * np + j0);
            a[0] += q0[d] * kv;
            a[1] += q1[d] * kv;
            a[2] += q2[d] * kv;
            a[3] += q3[d] * kv;
          }
          for (int r = 0; r < 4; r++) {
            v16 z = a[r] * J->scale + ld(bias + ii[r] * np + j0);
            st(s + (i0 + r) * np + j0, z);
            m[r] = j0 ? vmax(m[r], z) : z;
          }
        }
        for (int r = 0; r < 4; r++) {
          float mx = m[r][0];
          for (int l = 1; l < 16; l++) mx = m[r][l] > mx ? m[r][l] : mx;
          float *si = s + (i0 + r) * np;
          v16 sum = {0};
          for (int j0 = 0; j0 < np; j0 += 16) {
            v16 e = vexp(ld(si + j0) - mx);
            st(si + j0, e);
            sum += e;
          }
          float total = 0.f;
          for (int l = 0; l < 16; l++) total += sum[l];
          si[np - 1] = 1.f / total;
        }
      }
      /* O = P V / sum, 4 rows x 32 channels at a time */
      for (int i0 = 0; i0 < n; i0 += 4) {
        const float *p = s + i0 * np;
        for (int d0 = 0; d0 < hd; d0 += 32) {
          const int two = d0 + 16 < hd;
          v16 a0[4] = {{0}, {0}, {0}, {0}}, a1[4] = {{0}, {0}, {0}, {0}};
          for (int j = 0; j < n; j++) {
            v16 x0 = ld(v + j * hd + d0), x1 = two ? ld(v + j * hd + d0 + 16) : x0;
            for (int r = 0; r < 4; r++) {
              a0[r] += p[r * np + j] * x0;
              a1[r] += p[r * np + j] * x1;
            }
          }
          for (int r = 0; r < 4 && i0 + r < n; r++) {
            float inv = p[r * np + np - 1];
            float *o = J->out + (size_t)rows[i0 + r] * C + (size_t)(h0 + hg) * hd + d0;
            st(o, a0[r] * inv);
            if (two) st(o + 16, a1[r] * inv);
          }
        }
      }
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
  const long mstride = (long)np * hd + 48; /* off a multiple of 4 KiB: q, k, v of a group share no L1 sets */
  int group = (int)((96 * 1024) / (mstride * 3 * 4));
  group = group < 1 ? 1 : group > heads ? heads : group;
  const job_t job = {qkv, bias, out, per_window ? (long)heads * n * np : 0, H, W, C, heads, ws, shift, hd, np,
                     group, mstride, scale};
  const size_t scratch = (size_t)mstride * 3 * group + (size_t)hd * np + (size_t)np * np + n;
  return run_parallel(B * (H / ws) * (W / ws), nthreads, scratch, run_window, &job);
}
