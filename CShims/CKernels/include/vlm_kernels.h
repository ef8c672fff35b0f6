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

#endif
