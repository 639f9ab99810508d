/* Multi-head attention softmax(scale q k^T) v for CPU float32 inference, one (image, head, block of rows) per task.
 *
 * Why a kernel: PyTorch's CPU SDPA runs small problems (CvT-13's last stage: 197 queries x 50 keys x 64, ViT's
 * 197 x 197 x 64) well below what its matmuls reach (benchmarks/README.md), and the caller then copies the
 * (B, heads, N, d) result into (B, N, heads * d). Here K is transposed once per task into a panel padded to 32
 * columns, 6 query rows at a time run Q K^T -> softmax -> P V with the scores in L1, and each output row is written
 * straight into the caller's (B, N, heads, d) layout. Register blocks of 6 rows by as many vectors as the target's
 * registers allow (AVX-512: 32 score columns, 64 output channels; AVX2: 16 and 16).
 *
 * q, k, v, out: float32 with unit stride over the d channels and any strides (in floats) over batch, head and
 * token, e.g. q = qkv[..., :C] of a fused projection viewed (B, N, heads, d). No mask, no dropout.
 * vitkit.kernels builds it with -O3 -march=native on first use (vec.h: vectors, exp, threads).
 */
#include "vec.h"

/* register blocks: RB query rows by SV vectors of score columns (at most 32 columns: the keys are padded to a
 * multiple of 32), and RB rows by OV vectors of output channels; 6 x VREGS / 8 accumulators at most, three quarters
 * of the registers, the rest for the loaded vectors and a broadcast */
#define RB 6
#define OV (VREGS / 8)
#define SV (OV < 32 / VW ? OV : 32 / VW)

typedef struct {
  const float *q, *k, *v;
  float *out;
  long qs[3], ks[3], vs[3], os[3]; /* strides in floats: batch, head, token */
  int heads, N, Nk, hd, nkp, rows, chunks;
  float scale;
} job_t;

/* task = (image, head, chunk of rows); scratch: kT (hd x nkp), V (Nk x hd), scores (RB x nkp), column mask */
static void run_task(const void *ctx, int task, float *buf) {
  const job_t *J = (const job_t *)ctx;
  const int hd = J->hd, nkp = J->nkp, Nk = J->Nk;
  const int chunk = task % J->chunks, h = (task / J->chunks) % J->heads, b = task / J->chunks / J->heads;
  const float *q = J->q + b * J->qs[0] + h * J->qs[1];
  const float *k = J->k + b * J->ks[0] + h * J->ks[1];
  const float *v = J->v + b * J->vs[0] + h * J->vs[1];
  float *out = J->out + b * J->os[0] + h * J->os[1];
  float *kT = buf, *vb = kT + (size_t)hd * nkp, *s = vb + (size_t)Nk * hd, *mask = s + RB * (size_t)nkp;
  for (int t0 = 0; t0 < nkp; t0 += VW) /* K (Nk x hd, strided) -> kT (hd x nkp); columns >= Nk zero */
    for (int d0 = 0; d0 < hd; d0 += VW) {
      vf r[VW];
      for (int i = 0; i < VW; i++) r[i] = t0 + i < Nk ? ld(k + (t0 + i) * J->ks[2] + d0) : (vf){};
      transpose(r);
      for (int i = 0; i < VW; i++) st(kT + (d0 + i) * nkp + t0, r[i]);
    }
  for (int t = 0; t < Nk; t++) memcpy(vb + (size_t)t * hd, v + t * J->vs[2], sizeof(float) * hd);
  for (int j = 0; j < nkp; j++) mask[j] = j < Nk ? 0.f : -__builtin_inff();
  const int i_start = chunk * J->rows, i_end = i_start + J->rows < J->N ? i_start + J->rows : J->N;
  for (int i0 = i_start; i0 < i_end; i0 += RB) {
    const float *qr[RB];
    for (int r = 0; r < RB; r++) qr[r] = q + (i0 + r < i_end ? i0 + r : i_end - 1) * J->qs[2];
    /* scores: RB rows x SV vectors of columns at a time */
    vf m[RB] = {0};
    for (int j0 = 0; j0 < nkp; j0 += SV * VW) {
      vf a[RB][SV] = {{{0}}};
      const float *kc = kT + j0;
      for (int d = 0; d < hd; d++) {
        vf kv[SV];
        for (int c = 0; c < SV; c++) kv[c] = ld(kc + d * nkp + VW * c);
        for (int r = 0; r < RB; r++)
          for (int c = 0; c < SV; c++) a[r][c] += qr[r][d] * kv[c];
      }
      for (int r = 0; r < RB; r++)
        for (int c = 0; c < SV; c++) {
          vf z = a[r][c] * J->scale + ld(mask + j0 + VW * c);
          st(s + r * nkp + j0 + VW * c, z);
          m[r] = j0 || c ? vmax(m[r], z) : z;
        }
    }
    float inv[RB];
    for (int r = 0; r < RB; r++) {
      const float mx = hmax(m[r]);
      float *sr = s + r * nkp;
      vf sum = {0};
      for (int j0 = 0; j0 < nkp; j0 += VW) {
        vf e = vexp(ld(sr + j0) - mx);
        st(sr + j0, e);
        sum += e;
      }
      inv[r] = 1.f / hsum(sum);
    }
    /* out = P V / sum: RB rows x OV vectors of channels at a time (fewer at the end of hd) */
    for (int d0 = 0; d0 < hd; d0 += OV * VW) {
      const int nb = (hd - d0) / VW < OV ? (hd - d0) / VW : OV;
      vf a[RB][OV] = {{{0}}};
      for (int j = 0; j < Nk; j++) {
        const float *vr = vb + (size_t)j * hd + d0;
        vf x[OV];
        for (int c = 0; c < OV; c++) x[c] = c < nb ? ld(vr + VW * c) : (vf){};
        for (int r = 0; r < RB; r++) {
          const float p = s[r * nkp + j];
          for (int c = 0; c < OV; c++) a[r][c] += p * x[c];
        }
      }
      for (int r = 0; r < RB && i0 + r < i_end; r++)
        for (int c = 0; c < nb; c++) st(out + (i0 + r) * J->os[2] + d0 + VW * c, a[r][c] * inv[r]);
    }
  }
}

/* strides: {batch, head, token} in floats for q, k, v, out. Returns 0, 1 for an unsupported shape, 2 when
 * memory ran out. */
int vk_attention(const float *q, const float *k, const float *v, float *out, const long *qs, const long *ks,
                 const long *vs, const long *os, int B, int heads, int N, int Nk, int hd, float scale, int nthreads) {
  if (B <= 0 || heads <= 0 || N <= 0 || Nk <= 0 || hd <= 0 || hd % 16) return 1;
  const int nkp = (Nk + 31) / 32 * 32;
  /* about 4 tasks per thread and image-head pair at least, whole blocks of RB rows */
  int per = nthreads > 0 ? nthreads : 1;
  int chunks = (per * 4 + B * heads - 1) / (B * heads);
  if (chunks > (N + RB - 1) / RB) chunks = (N + RB - 1) / RB;
  if (chunks < 1) chunks = 1;
  int rows = ((N + chunks - 1) / chunks + RB - 1) / RB * RB;
  chunks = (N + rows - 1) / rows;
  job_t job = {q, k, v, out, {qs[0], qs[1], qs[2]}, {ks[0], ks[1], ks[2]}, {vs[0], vs[1], vs[2]},
               {os[0], os[1], os[2]}, heads, N, Nk, hd, nkp, rows, chunks, scale};
  const size_t scratch = (size_t)hd * nkp + (size_t)Nk * hd + RB * (size_t)nkp + nkp;
  return run_parallel(B * heads * chunks, nthreads, scratch, run_task, &job);
}
