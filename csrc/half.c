/*
 * half.c: float16 to float32. See half.h.
 *
 * Every float16 value is exactly a float32 value, so there is one right answer per input:
 *   zero and subnormals (exponent 0): the mantissa times 2^-24, computed in float (exact:
 *     an integer below 2^10 times a power of two);
 *   normals: exponent rebiased from 15 to 127, mantissa shifted into place;
 *   infinities and NaNs (exponent 31): exponent 255, mantissa shifted (the payload kept).
 * Written without branches on the value, so the compiler vectorises the loop.
 *
 * The unit scaling is hnswlib's (hnswlib/bindings.cpp, normalize_vector): the squares summed
 * in order in float, then each value times 1 / (sqrt(sum) + 1e-30), so a vector loaded this
 * way is the vector hnswlib stored when it was added (the build keeps -ffp-contract=off).
 */
#include "half.h"

#include <math.h>
#include <string.h>

static inline uint32_t widen(uint32_t h)
{
    uint32_t sign = (h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu;                      /* exponent and mantissa */
    uint32_t normal = (em << 13) + 0x38000000u;     /* + (127 - 15) << 23 */
    uint32_t special = (em << 13) | 0x7f800000u;
    float tiny = (float)(int32_t)em * 5.9604644775390625e-8f;  /* 2^-24 */
    uint32_t sub;
    memcpy(&sub, &tiny, sizeof sub);
    return (em >= 0x7c00u ? special : (em >= 0x0400u ? normal : sub)) | sign;
}

void hf_to_f32(const uint16_t *restrict in, uint32_t *restrict out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = widen(in[i]);
}

static void unit(float *v, size_t dim)
{
    float sum = 0.0f;
    for (size_t i = 0; i < dim; i++)
        sum += v[i] * v[i];
    float scale = 1.0f / (sqrtf(sum) + 1e-30f);
    for (size_t i = 0; i < dim; i++)
        v[i] *= scale;
}

void hf_rows_to_f32(const uint16_t *restrict in, size_t rows, size_t dim, uint8_t *restrict out, size_t stride,
                    int scale)
{
    for (size_t r = 0; r < rows; r++) {
        uint32_t *row = (uint32_t *)(void *)(out + r * stride);  /* stride keeps rows 4-byte aligned */
        hf_to_f32(in + r * dim, row, dim);
        if (scale)
            unit((float *)(void *)row, dim);
    }
}

void hf_unit_rows(uint8_t *rows, size_t n, size_t dim, size_t stride)
{
    for (size_t r = 0; r < n; r++)
        unit((float *)(void *)(rows + r * stride), dim);
}
