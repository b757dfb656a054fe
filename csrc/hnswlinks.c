/*
 * hnswlinks.c: the walk over hnswlib's upper-level link lists. See hnswlinks.h.
 *
 * Invariant: pos never passes len (every read is checked against the bytes left first),
 * so a damaged buffer is reported, never read out of bounds.
 */
#include "hnswlinks.h"

int hl_walk(const uint8_t *buf, size_t len, size_t count, uint64_t per_level, int64_t maxlevel,
            int32_t *levels, uint64_t *offsets, size_t *n_upper, size_t *where)
{
    size_t pos = 0, k = 0;
    *n_upper = 0;
    *where = 0;
    for (size_t i = 0; i < count; i++) {
        if (len - pos < 4) {
            *where = i;
            return HL_ETRUNC;
        }
        uint64_t n = (uint64_t)buf[pos] | (uint64_t)buf[pos + 1] << 8 | (uint64_t)buf[pos + 2] << 16
                     | (uint64_t)buf[pos + 3] << 24;  /* little-endian, whatever the host */
        pos += 4;
        levels[i] = 0;
        if (n) {
            uint64_t lv = n / per_level;
            if (n % per_level || maxlevel < 1 || lv > (uint64_t)maxlevel || n > len - pos) {
                *where = i;
                return HL_ESIZE;
            }
            levels[i] = (int32_t)lv;
            offsets[k++] = pos;
            pos += (size_t)n;
        }
    }
    *n_upper = k;
    if (pos != len) {
        *where = count;
        return HL_ETRAIL;
    }
    return HL_OK;
}
