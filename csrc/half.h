/*
 * half.h: IEEE 754 binary16 (float16) to binary32, many values per call.
 *
 * Interface:
 *   hf_to_f32       widen n float16 values (their bit patterns) to float32 bit patterns
 *   hf_rows_to_f32  widen rows of dim values into rows stride bytes apart (the vector slots
 *                   of hnswlib's element layout), each optionally scaled to unit length
 *                   exactly as hnswlib's normalize_vector does it
 *
 * The stores keep each embedding as float16 (vmem/storage/vecblob.py); opening a store
 * widens every one of them for the vector index. numpy converts one value at a time on
 * CPUs without a float16 unit, and the load then needed a float32 copy of all vectors
 * besides the graph's own. The widening is bit for bit numpy's astype(float32) for all
 * 65,536 inputs, NaN payloads included (tested). No I/O, no allocation. Part of the cdef.
 */
#ifndef VMEM_HALF_H
#define VMEM_HALF_H

#include <stddef.h>
#include <stdint.h>

void hf_to_f32(const uint16_t *in, uint32_t *out, size_t n);
void hf_rows_to_f32(const uint16_t *in, size_t rows, size_t dim, uint8_t *out, size_t stride, int unit);
void hf_unit_rows(uint8_t *rows, size_t n, size_t dim, size_t stride);

#endif
