// See include/vlm_kernels.h.
#include "vlm_kernels.h"
#include <stdint.h>
#include <string.h>
#include <stdlib.h>

// Each exported kernel is built three times — AVX-512 (with FMA), AVX2 with FMA, and the
// baseline x86-64 (SSE2) — from one always-inlined body, and `vlm_isa()` picks the build once,
// from the CPU's features. (GCC/clang `target_clones("avx2")` would build AVX2 *without* FMA,
// since FMA is a separate feature, and `arch=haswell` clones are chosen by CPU model, so an
// AMD Zen CPU never got them: explicit builds and a feature test avoid both.)
#define ISA_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi2")))
#define ISA_AVX2 __attribute__((target("avx2,fma,bmi2")))

int vlm_cpu_isa(void) {
    static int cpu = -1;
    if (cpu < 0) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")
            && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma")) cpu = 2;
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) cpu = 1;
        else cpu = 0;
    }
    return cpu;
}

int vlm_isa_level(const char *name) {
    if (!name) return -1;
    if (!strcmp(name, "baseline")) return 0;
    if (!strcmp(name, "avx2")) return 1;
    if (!strcmp(name, "avx512")) return 2;
    return -1;
}

static int isa = -1;

// The CPU's level, or VLM_KERNELS's when it names one the CPU runs (read once; the command line
// refuses any other value before a kernel runs).
int vlm_isa(void) {
    if (isa < 0) {
        int cpu = vlm_cpu_isa(), want = vlm_isa_level(getenv("VLM_KERNELS"));
        isa = (want >= 0 && want <= cpu) ? want : cpu;
    }
    return isa;
}

int vlm_isa_force(int level) {
    int cpu = vlm_cpu_isa();
    isa = level < 0 ? cpu : (level > cpu ? cpu : level);
    return isa;
}

const char *vlm_isa_name(void) {
    switch (vlm_isa()) {
    case 2: return "avx512";
    case 1: return "avx2+fma";
    default: return "baseline";
    }
}

// DISPATCH(name, params, args): name_avx512, name_avx2 and name_base around body_<name>, and
// the exported name calling the one for this CPU.
#define DISPATCH(ret, name, params, args) \
    static ISA_AVX512 ret name##_avx512 params { return body_##name args; } \
    static ISA_AVX2 ret name##_avx2 params { return body_##name args; } \
    static ret name##_base params { return body_##name args; } \
    ret name params { \
        switch (vlm_isa()) { \
        case 2: return name##_avx512 args; \
        case 1: return name##_avx2 args; \
        default: return name##_base args; \
        } \
    }
#define INLINE static inline __attribute__((always_inline))

static inline __attribute__((always_inline)) float exp_approx(float x) {
    float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float t = xc * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    float r = xc - n * 0.693359375f - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float e = p * r * r + r + 1.0f;
    uint32_t tb;
    memcpy(&tb, &t, 4);
    uint32_t sb = (tb - 0x4B400000u + 127u) << 23;
    float s;
    memcpy(&s, &sb, 4);
    return e * s;
}

static inline __attribute__((always_inline)) float erf_approx(float x) {
    float z = x < 0 ? -x : x;
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    float r = 1.0f - t * exp_approx(-z * z + p);
    return x < 0 ? -r : r;
}

float vlm_exp_approx(float x) { return exp_approx(x); }

float vlm_erf_approx(float x) { return erf_approx(x); }

INLINE void body_vlm_gelu_erf(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + erf_approx(v * 0.70710678118654752f));
    }
}
DISPATCH(void, vlm_gelu_erf, (float *x, size_t n), (x, n))

// row[j] = exp(scale·(row[j] − max)), returning 1/Σ. The max and the sum run over 16
// independent lanes and the exponentials in a loop of their own, so all three vectorise
// (a single running sum or max would not, without reassociating floating point).
static inline __attribute__((always_inline)) float exp_shifted_row(float *row, size_t n, float scale) {
    float lm[16];
    for (int t = 0; t < 16; t++) lm[t] = -__builtin_inff();
    size_t j = 0;
    for (; j + 16 <= n; j += 16)
        for (int t = 0; t < 16; t++) lm[t] = row[j + t] > lm[t] ? row[j + t] : lm[t];
    float mx = -__builtin_inff();
    for (; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    for (int t = 0; t < 16; t++) mx = lm[t] > mx ? lm[t] : mx;
    for (j = 0; j < n; j++) row[j] = exp_approx((row[j] - mx) * scale);
    float ls[16] = {0};
    j = 0;
    for (; j + 16 <= n; j += 16)
        for (int t = 0; t < 16; t++) ls[t] += row[j + t];
    float sum = 0;
    for (; j < n; j++) sum += row[j];
    for (int t = 0; t < 16; t++) sum += ls[t];
    return 1.0f / sum;
}

INLINE void body_vlm_softmax_row(float *row, size_t n, float scale) {
    float inv = exp_shifted_row(row, n, scale);
    for (size_t j = 0; j < n; j++) row[j] *= inv;
}
DISPATCH(void, vlm_softmax_row, (float *row, size_t n, float scale), (row, n, scale))

// Rows of `cols` floats, in place: (x − mean)/√(var + eps)·gamma + beta, mean and biased
// variance accumulated in double over eight independent lanes (so it vectorises without
// reassociating a single sum), then combined.
INLINE void body_vlm_layer_norm_rows(float *x, const float *gamma, const float *beta,
                                     size_t rows, size_t cols, float eps) {
    for (size_t r = 0; r < rows; r++) {
        float *row = x + r * cols;
        double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        size_t j = 0;
        for (; j + 8 <= cols; j += 8)
            for (int t = 0; t < 8; t++) lane[t] += (double)row[j + t];
        double sum = 0;
        for (; j < cols; j++) sum += (double)row[j];
        for (int t = 0; t < 8; t++) sum += lane[t];
        double mean = sum / (double)cols;
        double sq[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        j = 0;
        for (; j + 8 <= cols; j += 8)
            for (int t = 0; t < 8; t++) { double d = (double)row[j + t] - mean; sq[t] += d * d; }
        double var = 0;
        for (; j < cols; j++) { double d = (double)row[j] - mean; var += d * d; }
        for (int t = 0; t < 8; t++) var += sq[t];
        float m = (float)mean;
        float s = (float)(1.0 / __builtin_sqrt(var / (double)cols + (double)eps));
        for (j = 0; j < cols; j++) row[j] = (row[j] - m) * s * gamma[j] + beta[j];
    }
}
DISPATCH(void, vlm_layer_norm_rows, (float *x, const float *gamma, const float *beta, size_t rows, size_t cols, float eps),
         (x, gamma, beta, rows, cols, eps))

// One (sequence, head) of attention for short sequences. Keys are padded to lp, a multiple of
// 16, and every loop over them runs in blocks of exactly 16, which the compiler turns into
// one vector each (a loop over, say, 17 keys would otherwise run scalar); loops over the head
// dimension get the caller's constant d. Per query row i: scores = q_i·Kᵀ through Kᵀ (d, lp),
// softmax(scale·scores), ctx_i = scores·V. Causal: query i sees keys 0…i only (the later ones
// are masked as the padding is).
static inline __attribute__((always_inline)) void attention_head(
        float *restrict ctx, size_t ldc, const float *restrict q, const float *restrict k, const float *restrict v,
        size_t ld, size_t l, size_t d, float scale, float *restrict scratch, int causal) {
    size_t lp = (l + 15) & ~(size_t)15;
    float *s = scratch, *kt = scratch + lp;
    for (size_t p = 0; p < d; p++) {
        for (size_t j = 0; j < l; j++) kt[p * lp + j] = k[j * ld + p];
        for (size_t j = l; j < lp; j++) kt[p * lp + j] = 0;
    }
    for (size_t i = 0; i < l; i++) {
        const float *qi = q + i * ld;
        for (size_t jb = 0; jb < lp; jb += 16) {
            float acc[16] = {0};
            for (size_t p = 0; p < d; p++) {
                float a = qi[p];
                const float *kp = kt + p * lp + jb;
                for (int t = 0; t < 16; t++) acc[t] += a * kp[t];
            }
            for (int t = 0; t < 16; t++) s[jb + t] = acc[t];
        }
        size_t seen = causal ? i + 1 : l;
        for (size_t j = seen; j < lp; j++) s[j] = -__builtin_inff();
        float lm[16];
        for (int t = 0; t < 16; t++) lm[t] = -__builtin_inff();
        for (size_t jb = 0; jb < lp; jb += 16)
            for (int t = 0; t < 16; t++) lm[t] = s[jb + t] > lm[t] ? s[jb + t] : lm[t];
        float mx = lm[0];
        for (int t = 1; t < 16; t++) mx = lm[t] > mx ? lm[t] : mx;
        for (size_t jb = 0; jb < lp; jb += 16)
            for (int t = 0; t < 16; t++) s[jb + t] = exp_approx((s[jb + t] - mx) * scale);
        for (size_t j = seen; j < lp; j++) s[j] = 0;  // masked keys' e^(−87), from exp's clamp
        float ls[16] = {0};
        for (size_t jb = 0; jb < lp; jb += 16)
            for (int t = 0; t < 16; t++) ls[t] += s[jb + t];
        float sum = 0;
        for (int t = 0; t < 16; t++) sum += ls[t];
        float inv = 1.0f / sum;
        float *restrict c = ctx + i * ldc;
        for (size_t p = 0; p < d; p++) c[p] = 0;
        for (size_t j = 0; j < seen; j++) {
            float w = s[j] * inv;
            const float *restrict vj = v + j * ld;
            for (size_t p = 0; p < d; p++) c[p] += w * vj[p];
        }
    }
}

size_t vlm_attention_head_scratch(size_t l, size_t d) { return (d + 1) * ((l + 15) & ~(size_t)15); }

INLINE void body_vlm_attention_head(float *ctx, size_t ldc, const float *q, const float *k, const float *v,
                                    size_t ld, size_t l, size_t d, float scale, float *scratch, int causal) {
    if (d == 32) attention_head(ctx, ldc, q, k, v, ld, l, 32, scale, scratch, causal);
    else if (d == 64) attention_head(ctx, ldc, q, k, v, ld, l, 64, scale, scratch, causal);
    else attention_head(ctx, ldc, q, k, v, ld, l, d, scale, scratch, causal);
}
DISPATCH(void, vlm_attention_head, (float *ctx, size_t ldc, const float *q, const float *k, const float *v,
                                    size_t ld, size_t l, size_t d, float scale, float *scratch, int causal),
         (ctx, ldc, q, k, v, ld, l, d, scale, scratch, causal))

// FMA throughput: 12 independent chains of native-width vector multiply-adds per build (enough
// to cover the FMA latency on two ports, and few enough to stay in registers: 12 of the 16
// ymm registers on AVX2, where 16-float vectors would take 24 and spill), `iterations` rounds;
// returns a value that depends on every chain so the work is not optimised away. The baseline
// build has no FMA: a multiply and an add, counted as the same two operations.
// Floating-point operations: iterations · 12 · lanes · 2.
#define FMA_CHAINS(lanes_n) { \
    typedef float vec __attribute__((vector_size(4 * lanes_n))); \
    vec acc[12]; \
    for (int c = 0; c < 12; c++) for (int t = 0; t < lanes_n; t++) acc[c][t] = (float)(c + t) * 1e-3f; \
    vec a, b; \
    for (int t = 0; t < lanes_n; t++) { a[t] = 0.999999f; b[t] = 1e-7f; } \
    for (long i = 0; i < iterations; i++) \
        for (int c = 0; c < 12; c++) acc[c] = acc[c] * a + b; \
    float s = 0; \
    for (int c = 0; c < 12; c++) for (int t = 0; t < lanes_n; t++) s += acc[c][t]; \
    *lanes = lanes_n; \
    return s; }

static ISA_AVX512 float fma_chains_avx512(long iterations, int *lanes) FMA_CHAINS(16)
static ISA_AVX2 float fma_chains_avx2(long iterations, int *lanes) FMA_CHAINS(8)
static float fma_chains_base(long iterations, int *lanes) FMA_CHAINS(4)

float vlm_fma_chains(long iterations, int *lanes) {
    switch (vlm_isa()) {
    case 2: return fma_chains_avx512(iterations, lanes);
    case 1: return fma_chains_avx2(iterations, lanes);
    default: return fma_chains_base(iterations, lanes);
    }
}

// MARK: - Pillow's bilinear resample, 8-bit RGB (the passes of VLMImage's resize)

// One horizontal pass over rows [y0, y1): out[y][x] = clip8(Σ_i in[y][start[x] + i] · w[x][i]),
// fixed point with `precision` fractional bits, each of the three channels. int32 sums, as
// Pillow's Resample.c (its weights are normalised so a sum of 255·2^precision fits).
INLINE void body_vlm_resample_horizontal_rgb(uint8_t *out, const uint8_t *in, size_t in_width, size_t out_width,
                                             size_t y0, size_t y1, const int32_t *start, const int32_t *count,
                                             const int32_t *weights, size_t stride, int precision) {
    const int32_t half = 1 << (precision - 1);
    for (size_t y = y0; y < y1; y++) {
        const uint8_t *row = in + y * in_width * 3;
        uint8_t *o = out + y * out_width * 3;
        for (size_t x = 0; x < out_width; x++) {
            const uint8_t *p = row + (size_t)start[x] * 3;
            const int32_t *w = weights + x * stride;
            int32_t r = half, g = half, b = half;
            for (int32_t i = 0; i < count[x]; i++) {
                r += p[3 * i] * w[i]; g += p[3 * i + 1] * w[i]; b += p[3 * i + 2] * w[i];
            }
            r >>= precision; g >>= precision; b >>= precision;
            o[3 * x] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
            o[3 * x + 1] = (uint8_t)(g < 0 ? 0 : g > 255 ? 255 : g);
            o[3 * x + 2] = (uint8_t)(b < 0 ? 0 : b > 255 ? 255 : b);
        }
    }
}
DISPATCH(void, vlm_resample_horizontal_rgb, (uint8_t *out, const uint8_t *in, size_t in_width, size_t out_width, size_t y0,
                                             size_t y1, const int32_t *start, const int32_t *count, const int32_t *weights,
                                             size_t stride, int precision),
         (out, in, in_width, out_width, y0, y1, start, count, weights, stride, precision))

// One vertical pass over output rows [y0, y1): out[y][j] = clip8(Σ_i in[start[y] + i][j] · w[y][i])
// for every byte j of a row (row_bytes = width·3). The taps run outermost, so the loop over a
// row's bytes is contiguous and vectorises; `acc` holds row_bytes int32.
INLINE void body_vlm_resample_vertical(uint8_t *out, const uint8_t *in, size_t row_bytes, size_t y0, size_t y1,
                                       const int32_t *start, const int32_t *count, const int32_t *weights, size_t stride,
                                       int precision, int32_t *acc) {
    const int32_t half = 1 << (precision - 1);
    for (size_t y = y0; y < y1; y++) {
        for (size_t j = 0; j < row_bytes; j++) acc[j] = half;
        const int32_t *w = weights + y * stride;
        for (int32_t i = 0; i < count[y]; i++) {
            const uint8_t *src = in + ((size_t)start[y] + (size_t)i) * row_bytes;
            const int32_t wi = w[i];
            for (size_t j = 0; j < row_bytes; j++) acc[j] += src[j] * wi;
        }
        uint8_t *o = out + y * row_bytes;
        for (size_t j = 0; j < row_bytes; j++) {
            int32_t v = acc[j] >> precision;
            o[j] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}
DISPATCH(void, vlm_resample_vertical, (uint8_t *out, const uint8_t *in, size_t row_bytes, size_t y0, size_t y1,
                                       const int32_t *start, const int32_t *count, const int32_t *weights, size_t stride,
                                       int precision, int32_t *acc),
         (out, in, row_bytes, y0, y1, start, count, weights, stride, precision, acc))
