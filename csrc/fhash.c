/*
 * fhash.c: keyed BLAKE2b with an 8-byte digest, many inputs per call.
 * See fhash.h. Written from RFC 7693 (sections 2.1-3.3): 64-bit words,
 * 12 rounds of G over the SIGMA message schedule, rotations 32/24/16/63.
 *
 * Invariant: the state after the key block depends on the key alone, so it is
 * computed once per call and copied for every input.
 */
#include "fhash.h"

#include <string.h>

static const uint64_t IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const uint8_t SIGMA[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

static inline uint64_t rotr(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

static inline uint64_t load64(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t x;
    memcpy(&x, p, 8); /* the words are little-endian: one load */
    return x;
#else
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = (x << 8) | p[i];
    return x;
#endif
}

#define G(a, b, c, d, x, y)          \
    do {                             \
        v[a] = v[a] + v[b] + (x);    \
        v[d] = rotr(v[d] ^ v[a], 32); \
        v[c] = v[c] + v[d];          \
        v[b] = rotr(v[b] ^ v[c], 24); \
        v[a] = v[a] + v[b] + (y);    \
        v[d] = rotr(v[d] ^ v[a], 16); \
        v[c] = v[c] + v[d];          \
        v[b] = rotr(v[b] ^ v[c], 63); \
    } while (0)

/* One round with a constant schedule row: spelled out for each of the 12 rounds, every
 * SIGMA index is a compile-time constant, so m[] and v[] live in registers (a loop over
 * r indexes m[] through memory: ~4x slower for the short features the embedder hashes). */
#define ROUND(r)                                                 \
    do {                                                         \
        G(0, 4, 8, 12, m[SIGMA[r][0]], m[SIGMA[r][1]]);          \
        G(1, 5, 9, 13, m[SIGMA[r][2]], m[SIGMA[r][3]]);          \
        G(2, 6, 10, 14, m[SIGMA[r][4]], m[SIGMA[r][5]]);         \
        G(3, 7, 11, 15, m[SIGMA[r][6]], m[SIGMA[r][7]]);         \
        G(0, 5, 10, 15, m[SIGMA[r][8]], m[SIGMA[r][9]]);         \
        G(1, 6, 11, 12, m[SIGMA[r][10]], m[SIGMA[r][11]]);       \
        G(2, 7, 8, 13, m[SIGMA[r][12]], m[SIGMA[r][13]]);        \
        G(3, 4, 9, 14, m[SIGMA[r][14]], m[SIGMA[r][15]]);        \
    } while (0)

/* F: compress one 128-byte block into h; t is the byte count so far (< 2^64 here) */
static void compress(uint64_t h[8], const uint8_t block[128], uint64_t t, int last)
{
    uint64_t v[16], m[16];
    for (int i = 0; i < 16; i++)
        m[i] = load64(block + 8 * i);
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = IV[i];
    }
    v[12] ^= t;
    if (last)
        v[14] = ~v[14];
    ROUND(0); ROUND(1); ROUND(2); ROUND(3); ROUND(4); ROUND(5);
    ROUND(6); ROUND(7); ROUND(8); ROUND(9); ROUND(0); ROUND(1); /* rounds 10 and 11 reuse rows 0 and 1 */
    for (int i = 0; i < 8; i++)
        h[i] ^= v[i] ^ v[i + 8];
}

int fh_blake2b64_many(const uint8_t *key, size_t keylen, const uint8_t *data, const uint64_t *offsets,
                      size_t n, uint64_t *out)
{
    if (keylen < 1 || keylen > 64)
        return -3; /* an empty key would need the unkeyed parameter block; not used here */
    uint64_t base[8];
    uint8_t block[128];
    for (int i = 0; i < 8; i++)
        base[i] = IV[i];
    base[0] ^= 0x01010000ULL ^ ((uint64_t)keylen << 8) ^ 8u; /* depth 1, fanout 1, key, 8-byte digest */
    memset(block, 0, sizeof block);
    memcpy(block, key, keylen);
    /* the key block is the last block only for an empty message: compressed per input below then */
    uint64_t keyed[8];
    memcpy(keyed, base, sizeof keyed);
    compress(keyed, block, 128, 0);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = data + offsets[i];
        size_t len = (size_t)(offsets[i + 1] - offsets[i]);
        uint64_t h[8];
        if (len == 0) {
            memcpy(h, base, sizeof h);
            compress(h, block, 128, 1);
            out[i] = h[0];
            continue;
        }
        memcpy(h, keyed, sizeof h);
        uint64_t t = 128;
        while (len > 128) {
            t += 128;
            compress(h, p, t, 0);
            p += 128;
            len -= 128;
        }
        uint8_t last[128];
        memset(last, 0, sizeof last);
        memcpy(last, p, len);
        compress(h, last, t + len, 1);
        out[i] = h[0];
    }
    return 0;
}
