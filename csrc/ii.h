/*
 * ii.h: an inverted index with exact top-k BM25 by dynamic pruning.
 *
 * Interface:
 *   ii_new, ii_free                  create / destroy an index
 *   ii_add                           index one document (ids ascending): its term ids and
 *                                    frequencies (its length is their sum), timestamp,
 *                                    role, group and flags (II_ASKS: it asks a question)
 *   ii_delete                        unindex a live document (the caller names its terms)
 *   ii_compact                       drop the postings of deleted documents
 *   ii_search                        the k best documents by BM25 (FTS5's formula; a
 *                                    term listed w times in the query counts w times)
 *                                    that pass a filter, and the number of matches
 *                                    (exact, or an estimate flagged as such)
 *   ii_fuse                          hybrid ranking: text and vector top-k fused, then
 *                                    relevance spread to neighbours (turn order)
 *   ii_neighbours                    each document's previous / next document in its
 *                                    group (turn order), within a filter and a time gap,
 *                                    and its flags
 *   ii_docs, ii_stats_get            live document ids; counts and memory
 *   ii_snapshot*, ii_restore         the whole index to bytes and back
 *   ii_check                         verify every invariant
 *
 * Documents are numbered by the caller (the SQLite rowid: 1, 2, ...) and added in
 * increasing order; terms are small integers the caller assigns (its vocabulary).
 * Every function that can fail returns II_OK (0) or a negative ii_err code and
 * leaves the index unchanged on failure; ii_errmsg() says "function: reason".
 * No I/O, no callbacks, no Python objects; ii_search allocates nothing (the
 * caller's output arrays hold its heap). Not thread-safe: the caller serialises.
 *
 * This header is also cffi's cdef (csrc/build_vmcore.py strips preprocessor lines).
 */
#ifndef VMEM_II_H
#define VMEM_II_H

#include <stddef.h>
#include <stdint.h>

typedef struct ii ii_t;

enum ii_err {
    II_OK = 0,
    II_ENOENT = -1,   /* no live document with that id */
    II_EEXIST = -2,   /* a document with that id (or a later one) was added */
    II_EINVAL = -3,   /* an argument is out of range */
    II_ENOMEM = -6,   /* out of memory */
    II_ECORRUPT = -7, /* a snapshot is malformed */
    II_ECHECK = -8    /* ii_check found a broken invariant */
};

enum ii_flags { II_ASKS = 1, II_FLAGS_ALL = 1 };

enum ii_limits {
    II_MAX_TERMS = 64,   /* distinct terms per query */
    II_MAX_ROLE = 63,    /* roles are 0..63 (a bit each in ii_filter.roles) */
    II_BLOCK = 128       /* postings per block (block maxima for skipping) */
};

/* What a search or a neighbour lookup admits. ts bounds are inclusive (pass
 * -inf / +inf for open ends); roles is a bit mask (bit r admits role r);
 * allow, when not NULL, is a bitmap over document ids (nallow bits). */
typedef struct ii_filter {
    double ts_lo;
    double ts_hi;
    uint64_t roles;
    const uint64_t *allow;
    uint64_t nallow;
} ii_filter;

typedef struct ii_stats {
    uint64_t docs;     /* live documents */
    uint64_t next_doc; /* the smallest id ii_add accepts */
    uint64_t tokens;   /* sum of live documents' lengths */
    uint64_t terms;    /* term slots (ids below this have been seen) */
    uint64_t postings; /* postings held, live and dead */
    uint64_t dead;     /* postings of deleted documents (until ii_compact) */
    uint64_t memory;   /* bytes allocated */
} ii_stats;

ii_t *ii_new(void);
void ii_free(ii_t *ii);
const char *ii_errmsg(const ii_t *ii);

int ii_add(ii_t *ii, uint32_t doc, const uint32_t *terms, const uint32_t *tfs, size_t n,
           double ts, uint32_t role, uint32_t group, uint32_t flags);
int ii_delete(ii_t *ii, uint32_t doc, const uint32_t *terms, size_t n);
int ii_compact(ii_t *ii);

int ii_search(ii_t *ii, const uint32_t *terms, const double *weights, size_t n, const ii_filter *f, size_t k,
              uint64_t exact_max, uint32_t *out_docs, double *out_scores, size_t *nout,
              uint64_t *total, int *exact);
int ii_neighbours(const ii_t *ii, const uint32_t *docs, size_t n, const ii_filter *f,
                  double max_gap, uint32_t *prev, uint32_t *next, uint8_t *flags);

/* Hybrid ranking (ii_fuse): a convex fusion of a text and a vector top-k, then
 * conversation context. Mirrors vmem.rank.fuse(method="convex") followed by
 * vmem.rank.spread(asks=...), score for score. */
typedef struct ii_fuse_params {
    double text_weight; /* the text side's weight; the vector side gets the rest */
    double fwd_ask;     /* share a question passes to the next document */
    double fwd_stmt;    /* share any other document passes to the next one */
    double bwd;         /* share every document passes to the previous one */
    double max_gap;     /* neighbours further apart (ts) pass nothing */
} ii_fuse_params;

size_t ii_fuse_scratch(size_t nt, size_t nv);
int ii_fuse(const ii_t *ii, const uint32_t *tdocs, const double *tscores, size_t nt,
            const uint32_t *vdocs, const double *vsims, size_t nv, const ii_filter *f,
            const ii_fuse_params *p, uint32_t *out_docs, double *out_scores, size_t cap,
            size_t *nout, uint64_t *scratch, size_t nscratch);

/* Why documents matched (ii_explain): for each of docs[0..ndocs), a bit mask of the
 * query terms (terms[0..n), n <= II_MAX_TERMS; bit i = terms[i]) it holds, and its
 * ts (NAN, mask 0 when it is not live); and each query term's idf as ii_search weighs
 * it (0 for a term no live document holds). Reads only. */
int ii_explain(const ii_t *ii, const uint32_t *terms, size_t n, const uint32_t *docs, size_t ndocs,
               uint64_t *out_masks, double *out_ts, double *out_idf);

int ii_is_live(const ii_t *ii, uint32_t doc);
size_t ii_docs(const ii_t *ii, uint32_t *out, size_t cap);
void ii_stats_get(const ii_t *ii, ii_stats *out);

size_t ii_snapshot_size(const ii_t *ii);
int ii_snapshot(const ii_t *ii, uint8_t *buf, size_t cap, size_t *written);
int ii_restore(ii_t *ii, const uint8_t *buf, size_t n);

int ii_check(ii_t *ii);

#endif
