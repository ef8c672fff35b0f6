// Element-wise kernels of the transformer, built per instruction set (AVX-512, AVX2 with FMA,
// baseline x86-64) and chosen once at run time from the CPU's features, so the engine runs wide
// vectors on CPUs that have them and still runs everywhere.
#ifndef VLM_KERNELS_H
#define VLM_KERNELS_H
#include <stddef.h>
#include <stdint.h>

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
/// causal ≠ 0: query i attends to keys 0…i only (a causal mask, as CLIP's text tower).
size_t vlm_attention_head_scratch(size_t l, size_t d);
void vlm_attention_head(float *ctx, size_t ldc, const float *q, const float *k, const float *v,
                        size_t ld, size_t l, size_t d, float scale, float *scratch, int causal);

/// The instruction set the kernels run: 2 AVX-512, 1 AVX2 with FMA, 0 baseline; and its name.
/// It is the CPU's best (`vlm_cpu_isa`), or the lower one `VLM_KERNELS` (baseline, avx2, avx512)
/// names, read once.
int vlm_isa(void);
const char *vlm_isa_name(void);
/// CPUs in this process's affinity mask, or -1 when it cannot be read.
int vlm_affinity_cpus(void);
/// Names the calling thread (15 bytes at most) for /proc, top and debuggers.
void vlm_set_thread_name(const char *name);
int vlm_cpu_isa(void);
/// The level VLM_KERNELS's value names (-1: none of them).
int vlm_isa_level(const char *name);
/// Tests: run `level` (clamped to the CPU's; -1 the CPU's) from now on; returns the level in effect.
int vlm_isa_force(int level);

/// Runs iterations × 12 independent multiply-add chains of the widest vectors this CPU runs
/// (for measuring the FMA peak); sets *lanes to the floats per vector and returns a value that
/// depends on every chain.
float vlm_fma_chains(long iterations, int *lanes);

/// Pillow's bilinear resample passes on 8-bit RGB, fixed point with `precision` fractional
/// bits (Pillow's Resample.c): the horizontal pass over rows [y0, y1) of an in_width-wide image
/// to out_width pixels, and the vertical pass producing output rows [y0, y1) (acc: row_bytes
/// int32 of scratch). start/count/weights: per output position, the first input index, the
/// number of taps and `stride` weights.
void vlm_resample_horizontal_rgb(uint8_t *out, const uint8_t *in, size_t in_width, size_t out_width, size_t y0, size_t y1,
                                 const int32_t *start, const int32_t *count, const int32_t *weights, size_t stride, int precision);
void vlm_resample_vertical(uint8_t *out, const uint8_t *in, size_t row_bytes, size_t y0, size_t y1, const int32_t *start,
                           const int32_t *count, const int32_t *weights, size_t stride, int precision, int32_t *acc);

#endif
