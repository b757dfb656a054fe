/*
 * hnswlinks.h: the walk over the link lists above level 0 in hnswlib's saved graph.
 *
 * Interface:
 *   hl_walk   check each element's list (a u32 byte size, then that many bytes) against
 *             the buffer's length and the graph's parameters; give each element's top
 *             level and the offset of each non-empty list, in element order
 *
 * vmem/hnsw_file.py validates a graph file before hnswlib reads it (hnswlib trusts
 * every size it reads). The lists are variable-length, one after another, so the walk
 * is sequential: a Python loop cost ~0.1 s per 100k elements at every store open.
 * No I/O, no allocation. Part of the cffi cdef (csrc/build_vmcore.py).
 */
#ifndef VMEM_HNSWLINKS_H
#define VMEM_HNSWLINKS_H

#include <stddef.h>
#include <stdint.h>

enum {
    HL_OK = 0,
    HL_ETRUNC = 1,  /* the buffer ends inside element *where's size field */
    HL_ESIZE = 2,   /* element *where's size is not a whole number of levels, too high, or past the end */
    HL_ETRAIL = 3   /* bytes remain after the last element's list */
};

/* levels: count entries; offsets: room for count entries (*n_upper are written).
 * per_level > 0; maxlevel may be -1 (an empty graph: every list must then be empty). */
int hl_walk(const uint8_t *buf, size_t len, size_t count, uint64_t per_level, int64_t maxlevel,
            int32_t *levels, uint64_t *offsets, size_t *n_upper, size_t *where);

#endif
