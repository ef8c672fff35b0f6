// Element-wise kernels of the transformer compiled per instruction set (AVX-512, AVX2+FMA,
// baseline) with runtime selection (target_clones), so the engine runs wide vectors on CPUs
// that have them and still runs everywhere. Same formulas as VLMCore's Swift versions.
#ifndef VLM_KERNELS_H
#define VLM_KERNELS_H
#include <stddef.h>

/// e^x for x in about [-87, 88] (clamped): Cody–Waite reduction, Cephes' polynomial (≤ 2 ulp).
float vlm_exp_approx(float x);

/// erf(x) from Numerical Recipes' erfc Chebyshev fit: ≤ 2.4e-7 from the fit plus float
/// rounding, ≤ 3.6e-7 in all.
float vlm_erf_approx(float x);

/// x[i] = 0.5·x·(1 + erf(x/√2)), erf from Numerical Recipes' erfc fit (|error| ≤ 3.6e-7).
void vlm_gelu_erf(float *x, size_t n);

/// row[j] = exp(scale·(row[j] − max)) / Σ, Cody–Waite/Cephes exp (≤ 2 ulp).
void vlm_softmax_row(float *row, size_t n, float scale);

/// LayerNorm over each of `rows` rows of `cols` floats, in place, then ·gamma + beta; mean and
/// biased variance (as torch) accumulated in double.
void vlm_layer_norm_rows(float *x, const float *gamma, const float *beta, size_t rows, size_t cols, float eps);

/// ctx (l, d), row stride ldc = softmax(scale·Q·Kᵀ)·V for one sequence and head; q, k, v are
/// (l, d) with row stride ld; scratch holds at least vlm_attention_head_scratch(l, d) floats.
size_t vlm_attention_head_scratch(size_t l, size_t d);
void vlm_attention_head(float *ctx, size_t ldc, const float *q, const float *k, const float *v,
                        size_t ld, size_t l, size_t d, float scale, float *scratch);

/// Runs iterations × 12 independent 16-float multiply-add chains (for measuring the FMA peak);
/// sets *lanes to 16 and returns a value that depends on every chain.
float vlm_fma_chains(long iterations, int *lanes);

#endif
