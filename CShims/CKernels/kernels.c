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
