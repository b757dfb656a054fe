/*
 * fhash.h: keyed BLAKE2b-64 of many short strings at once (RFC 7693).
 *
 * Interface:
 *   fh_blake2b64_many   hash n strings (data[offsets[i]..offsets[i+1]]) with one key;
 *                       out[i] is the 8-byte digest read as a little-endian integer
 *
 * The built-in HashEmbedder hashes every feature of every new word; one call per
 * word (not per feature) keeps Python's per-call cost off its inner loop. The
 * digests equal hashlib.blake2b(s, digest_size=8, key=key).digest() (tested).
 * No I/O, no allocation. Part of the cffi cdef (csrc/build_vmcore.py).
 */
#ifndef VMEM_FHASH_H
#define VMEM_FHASH_H

#include <stddef.h>
#include <stdint.h>

int fh_blake2b64_many(const uint8_t *key, size_t keylen, const uint8_t *data, const uint64_t *offsets,
                      size_t n, uint64_t *out);

#endif
