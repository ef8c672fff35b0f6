// See include/vlm_kernels.h.
#include "vlm_kernels.h"
#include <stdint.h>
#include <string.h>

#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

static inline float exp_approx(float x) {
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

static inline float erf_approx(float x) {
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

CLONES void vlm_gelu_erf(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + erf_approx(v * 0.70710678118654752f));
    }
}

CLONES void vlm_softmax_row(float *row, size_t n, float scale) {
    float mx = -__builtin_inff();
    for (size_t j = 0; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    float sum = 0;
    for (size_t j = 0; j < n; j++) {
        float e = exp_approx((row[j] - mx) * scale);
        row[j] = e;
        sum += e;
    }
    float inv = 1.0f / sum;
    for (size_t j = 0; j < n; j++) row[j] *= inv;
}

// Rows of `cols` floats, in place: (x − mean)/√(var + eps)·gamma + beta, mean and biased
// variance accumulated in double over eight independent lanes (so it vectorises without
// reassociating a single sum), then combined.
CLONES void vlm_layer_norm_rows(float *x, const float *gamma, const float *beta,
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

// One (sequence, head) of attention, sized by the caller's constants so the compiler can keep
// the head's context row in registers: scores = Q·Kᵀ through Kᵀ (d, l) so the inner loop runs
// over contiguous keys, softmax(scale·scores), ctx = scores·V with the inner loop over d.
static inline void attention_head(float *ctx, size_t ldc, const float *q, const float *k, const float *v,
                                  size_t ld, size_t l, size_t d, float scale, float *scratch) {
    float *scores = scratch, *kt = scratch + l * l;
    for (size_t j = 0; j < l; j++)
        for (size_t p = 0; p < d; p++) kt[p * l + j] = k[j * ld + p];
    for (size_t i = 0; i < l; i++) {
        float *s = scores + i * l;
        const float *qi = q + i * ld;
        for (size_t j = 0; j < l; j++) s[j] = 0;
        for (size_t p = 0; p < d; p++) {
            float a = qi[p];
            const float *kp = kt + p * l;
            for (size_t j = 0; j < l; j++) s[j] += a * kp[j];
        }
        float mx = -__builtin_inff();
        for (size_t j = 0; j < l; j++) mx = s[j] > mx ? s[j] : mx;
        float sum = 0;
        for (size_t j = 0; j < l; j++) { float e = exp_approx((s[j] - mx) * scale); s[j] = e; sum += e; }
        float inv = 1.0f / sum;
        float *c = ctx + i * ldc;
        for (size_t p = 0; p < d; p++) c[p] = 0;
        for (size_t j = 0; j < l; j++) {
            float w = s[j] * inv;
            const float *vj = v + j * ld;
            for (size_t p = 0; p < d; p++) c[p] += w * vj[p];
        }
    }
}

CLONES void vlm_attention_head(float *ctx, size_t ldc, const float *q, const float *k, const float *v,
                               size_t ld, size_t l, size_t d, float scale, float *scratch) {
    if (d == 32) attention_head(ctx, ldc, q, k, v, ld, l, 32, scale, scratch);
    else if (d == 64) attention_head(ctx, ldc, q, k, v, ld, l, 64, scale, scratch);
    else attention_head(ctx, ldc, q, k, v, ld, l, d, scale, scratch);
}
