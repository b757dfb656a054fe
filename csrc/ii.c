/*
 * ii.c: inverted index, exact top-k BM25 by MaxScore with block skipping.
 * See ii.h for the interface.
 *
 * Data structures:
 *   docs[]   one record per document id below next_doc (ids are the caller's,
 *            dense from 1): live flag, length (tokens), distinct terms, ts,
 *            role, group, flags. A deleted or never-added id has live = 0.
 *   terms[]  one posting list per term id: doc ids ascending with their term
 *            frequencies, cut into blocks of II_BLOCK postings; per block the
 *            largest tf and the smallest document length, which bound the
 *            BM25 term score of every posting in the block. ub caches the
 *            largest such bound over the blocks at average length ub_avgdl.
 *
 * Scoring is FTS5's bm25() (k1 = 1.2, b = 0.75): for each query term present,
 *   (w * idf) * (tf * (k1 + 1)) / (tf + k1 * (1 - b + b * len / avgdl)),
 * with w its weight (FTS5 scores a term quoted twice twice: w = 2),
 *   idf = log((N - df + 0.5) / (df + 0.5)), or 1e-6 when that is <= 0,
 * over the live documents (N, df, avgdl), summed in query-term order. Ties go
 * to the larger document id (the newer page).
 *
 * Invariants (ii_check verifies each):
 *   1. Each posting list is strictly ascending by doc, every doc is below
 *      next_doc, every tf >= 1; df counts its postings of live documents.
 *   2. Each block's maximum tf and minimum length bound its postings
 *      (max >= tf, min <= the document's length, dead documents included).
 *   3. A term's cached ub, when valid (ub_avgdl > 0), is >= the bound of every
 *      block at average length ub_avgdl.
 *   4. docs = the number of live documents; tokens = the sum of their lengths;
 *      a live document's length is the sum of its postings' tf, and it has
 *      nterm postings.
 *   5. dead = the number of postings of documents that are not live;
 *      postings = the sum of the lists' lengths.
 *   6. Between searches every accumulator of the exhaustive search is 0.
 *
 * Why the bounds stay valid without maintenance: the score of a posting grows
 * with tf and with avgdl and falls with the length, so (max tf, min length) of a
 * block bounds it at any avgdl; ub is recomputed (O(blocks)) by a search that
 * finds avgdl above ub_avgdl, at 1/16 headroom, and raised by every ii_add.
 *
 * Search (MaxScore, Turtle & Flood 1995; block skipping as in block-max
 * indexes): query terms sorted by their score bound ascending; once the top k
 * hold a k-th score theta, the longest prefix of terms whose bounds sum below
 * theta is "non-essential": a document holding only those cannot enter, so
 * only the other lists are walked, and a candidate is looked up in the
 * non-essential lists (skipping whole blocks by their last doc) only while its
 * score plus their remaining bounds can still reach theta. The top k are
 * exact; the match count is exact when no list was ever skipped, else estimated from the
 * documents' frequencies assuming independence and flagged approximate.
 * Once the top k are full, a range of documents up to the first end of the
 * essential lists' current blocks is skipped whole when those blocks' bounds
 * plus the non-essential bounds fall below theta (block-max skipping).
 * When the query's lists hold at most exact_max postings, the search is
 * exhaustive instead, term at a time (search_taat), and its count exact.
 */
#include "ii.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K1 1.2
#define BB 0.75
#define END_DOC 0xFFFFFFFFu
#define SNAP_MAGIC 0x49494d56u /* "VMII" */
#define SNAP_VERSION 2u

typedef struct ii_doc {
    double ts;
    uint32_t len;
    uint32_t group;
    uint32_t nterm;
    uint8_t live;
    uint8_t role;
    uint8_t flags;
    uint8_t _pad;
} ii_doc;

typedef struct ii_term {
    uint32_t *doc;
    uint32_t *tf;
    uint32_t *bmax; /* per block: largest tf */
    uint32_t *bmin; /* per block: smallest document length */
    uint32_t n, cap, df;
    uint64_t mark; /* duplicate detection within one call (epoch) */
    double ub, ub_avgdl;
} ii_term;

struct ii {
    ii_doc *docs;
    double *acc;       /* exhaustive search: score accumulators, all 0 between searches */
    uint32_t *touched; /* exhaustive search: the documents whose accumulator is set */
    uint32_t dcap;
    uint32_t next_doc;
    ii_term *terms;
    uint32_t tcap;
    uint32_t nterms;
    uint64_t ndocs, tokens, postings, dead, memory, epoch;
    char err[192];
};

/* ---------------------------------------------------------------- errors */

static int fail(const ii_t *ii, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf((char *)ii->err, sizeof ii->err, fmt, ap);
    va_end(ap);
    return code;
}

const char *ii_errmsg(const ii_t *ii) { return ii->err; }

/* ---------------------------------------------------------------- memory */

static void *grow(ii_t *ii, void *p, size_t old_bytes, size_t new_bytes)
{
    void *q = realloc(p, new_bytes);
    if (q) {
        if (new_bytes > old_bytes)
            memset((char *)q + old_bytes, 0, new_bytes - old_bytes);
        ii->memory += new_bytes - old_bytes;
    }
    return q;
}

static int reserve_terms(ii_t *ii, uint64_t want)
{
    if (want <= ii->tcap)
        return II_OK;
    uint64_t ncap = ii->tcap ? ii->tcap : 1024;
    while (ncap < want)
        ncap *= 2;
    ii_term *t = grow(ii, ii->terms, (size_t)ii->tcap * sizeof *t, (size_t)ncap * sizeof *t);
    if (!t)
        return fail(ii, II_ENOMEM, "ii_add: out of memory for %llu terms", (unsigned long long)ncap);
    ii->terms = t;
    ii->tcap = (uint32_t)ncap;
    return II_OK;
}

static int reserve_docs(ii_t *ii, uint64_t want)
{
    if (want <= ii->dcap)
        return II_OK;
    uint64_t ncap = ii->dcap ? ii->dcap : 1024;
    while (ncap < want)
        ncap *= 2;
    ii_doc *d = grow(ii, ii->docs, (size_t)ii->dcap * sizeof *d, (size_t)ncap * sizeof *d);
    if (!d)
        return fail(ii, II_ENOMEM, "ii_add: out of memory for %llu documents", (unsigned long long)ncap);
    ii->docs = d;
    double *acc = grow(ii, ii->acc, (size_t)ii->dcap * sizeof *acc, (size_t)ncap * sizeof *acc);
    if (!acc)
        return fail(ii, II_ENOMEM, "ii_add: out of memory for %llu documents", (unsigned long long)ncap);
    ii->acc = acc;
    uint32_t *touched = grow(ii, ii->touched, (size_t)ii->dcap * sizeof *touched, (size_t)ncap * sizeof *touched);
    if (!touched)
        return fail(ii, II_ENOMEM, "ii_add: out of memory for %llu documents", (unsigned long long)ncap);
    ii->touched = touched;
    ii->dcap = (uint32_t)ncap; /* only now: a failure above left every array at least dcap long */
    return II_OK;
}

static inline uint32_t nblocks(uint32_t n) { return (n + II_BLOCK - 1) / II_BLOCK; }

/* Room for one more posting in t (all arrays), or II_ENOMEM with t unchanged. */
static int reserve_posting(ii_t *ii, ii_term *t)
{
    if (t->n < t->cap)
        return II_OK;
    uint32_t ncap = t->cap ? t->cap * 2 : 4;
    size_t ob = nblocks(t->cap), nb = nblocks(ncap);
    uint32_t *d = grow(ii, t->doc, (size_t)t->cap * 4, (size_t)ncap * 4);
    if (!d)
        return fail(ii, II_ENOMEM, "ii_add: out of memory for postings");
    t->doc = d;
    uint32_t *f = grow(ii, t->tf, (size_t)t->cap * 4, (size_t)ncap * 4);
    if (!f)
        return fail(ii, II_ENOMEM, "ii_add: out of memory for postings");
    t->tf = f;
    uint32_t *mx = grow(ii, t->bmax, ob * 4, nb * 4);
    if (!mx)
        return fail(ii, II_ENOMEM, "ii_add: out of memory for blocks");
    t->bmax = mx;
    uint32_t *mn = grow(ii, t->bmin, ob * 4, nb * 4);
    if (!mn)
        return fail(ii, II_ENOMEM, "ii_add: out of memory for blocks");
    t->bmin = mn;
    t->cap = ncap; /* only now: a failure above left cap as it was (arrays merely larger) */
    return II_OK;
}

ii_t *ii_new(void)
{
    ii_t *ii = calloc(1, sizeof *ii);
    return ii;
}

static void free_contents(ii_t *ii)
{
    for (uint32_t i = 0; i < ii->tcap; i++) {
        free(ii->terms[i].doc);
        free(ii->terms[i].tf);
        free(ii->terms[i].bmax);
        free(ii->terms[i].bmin);
    }
    free(ii->terms);
    free(ii->docs);
    free(ii->acc);
    free(ii->touched);
}

void ii_free(ii_t *ii)
{
    if (!ii)
        return;
    free_contents(ii);
    free(ii);
}

/* ---------------------------------------------------------------- scoring */

static inline double tfpart(double tf, double len, double avgdl)
{
    return (tf * (K1 + 1.0)) / (tf + K1 * (1.0 - BB + BB * len / avgdl));
}

static inline double idf_of(double n, double df)
{
    double idf = log((n - df + 0.5) / (df + 0.5));
    return idf <= 0.0 ? 1e-6 : idf;
}

static void block_put(ii_term *t, uint32_t i, uint32_t tf, uint32_t len)
{
    uint32_t b = i / II_BLOCK;
    if (i % II_BLOCK == 0) {
        t->bmax[b] = tf;
        t->bmin[b] = len;
    } else {
        if (tf > t->bmax[b])
            t->bmax[b] = tf;
        if (len < t->bmin[b])
            t->bmin[b] = len;
    }
}

static void term_ub(ii_term *t, double avgdl)
{
    double ub = 0.0;
    for (uint32_t b = 0, nb = nblocks(t->n); b < nb; b++) {
        double x = tfpart(t->bmax[b], t->bmin[b], avgdl);
        if (x > ub)
            ub = x;
    }
    t->ub = ub;
    t->ub_avgdl = avgdl;
}

/* ---------------------------------------------------------------- add / delete */

int ii_add(ii_t *ii, uint32_t doc, const uint32_t *terms, const uint32_t *tfs, size_t n,
           double ts, uint32_t role, uint32_t group, uint32_t flags)
{
    if (doc == 0 || doc == END_DOC)
        return fail(ii, II_EINVAL, "ii_add: document id %u is out of range", doc);
    if (doc < ii->next_doc)
        return fail(ii, II_EEXIST, "ii_add: document %u is not after the last one added (%u)", doc,
                    ii->next_doc - 1);
    if (role > II_MAX_ROLE)
        return fail(ii, II_EINVAL, "ii_add: role %u is above %d", role, II_MAX_ROLE);
    if (!isfinite(ts))
        return fail(ii, II_EINVAL, "ii_add: timestamp is not finite");
    if (flags & ~(uint32_t)II_FLAGS_ALL)
        return fail(ii, II_EINVAL, "ii_add: unknown flags %#x", flags);
    uint64_t len = 0, top = 0;
    for (size_t i = 0; i < n; i++) {
        if (tfs[i] == 0)
            return fail(ii, II_EINVAL, "ii_add: term %u has frequency 0", terms[i]);
        if (terms[i] >= 0x7fffffffu)
            return fail(ii, II_EINVAL, "ii_add: term id %u is out of range", terms[i]);
        if (terms[i] + 1ull > top)
            top = terms[i] + 1ull;
        len += tfs[i];
    }
    if (len > 0xffffffffu)
        return fail(ii, II_EINVAL, "ii_add: document %u is too long", doc);
    if (ii->ndocs > 0 && ii->tokens + len < ii->tokens)
        return fail(ii, II_EINVAL, "ii_add: token count overflows");
    int rc = reserve_terms(ii, top);
    if (rc)
        return rc;
    uint64_t epoch = ++ii->epoch;
    for (size_t i = 0; i < n; i++) {
        ii_term *t = &ii->terms[terms[i]];
        if (t->mark == epoch)
            return fail(ii, II_EINVAL, "ii_add: term %u is listed twice", terms[i]);
        t->mark = epoch;
    }
    if ((rc = reserve_docs(ii, (uint64_t)doc + 1)))
        return rc;
    for (size_t i = 0; i < n; i++)
        if ((rc = reserve_posting(ii, &ii->terms[terms[i]])))
            return rc;
    /* commit: nothing below fails */
    for (size_t i = 0; i < n; i++) {
        ii_term *t = &ii->terms[terms[i]];
        uint32_t at = t->n++;
        t->doc[at] = doc;
        t->tf[at] = tfs[i];
        block_put(t, at, tfs[i], (uint32_t)len);
        t->df++;
        if (t->ub_avgdl > 0.0) {
            uint32_t b = at / II_BLOCK;
            double x = tfpart(t->bmax[b], t->bmin[b], t->ub_avgdl);
            if (x > t->ub)
                t->ub = x;
        }
    }
    ii_doc *d = &ii->docs[doc];
    d->ts = ts;
    d->len = (uint32_t)len;
    d->group = group;
    d->nterm = (uint32_t)n;
    d->live = 1;
    d->role = (uint8_t)role;
    d->flags = (uint8_t)flags;
    ii->next_doc = doc + 1;
    if (top > ii->nterms)
        ii->nterms = (uint32_t)top;
    ii->ndocs++;
    ii->tokens += len;
    ii->postings += n;
    return II_OK;
}

static int64_t find_posting(const ii_term *t, uint32_t doc)
{
    uint32_t lo = 0, hi = t->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (t->doc[mid] < doc)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (lo < t->n && t->doc[lo] == doc) ? (int64_t)lo : -1;
}

int ii_delete(ii_t *ii, uint32_t doc, const uint32_t *terms, size_t n)
{
    if (doc >= ii->next_doc || !ii->docs[doc].live)
        return fail(ii, II_ENOENT, "ii_delete: no live document %u", doc);
    ii_doc *d = &ii->docs[doc];
    if (n != d->nterm)
        return fail(ii, II_EINVAL, "ii_delete: document %u has %u terms, %zu given", doc, d->nterm, n);
    uint64_t epoch = ++ii->epoch;
    for (size_t i = 0; i < n; i++) {
        if (terms[i] >= ii->nterms || find_posting(&ii->terms[terms[i]], doc) < 0)
            return fail(ii, II_EINVAL, "ii_delete: document %u does not hold term %u", doc, terms[i]);
        ii_term *t = &ii->terms[terms[i]];
        if (t->mark == epoch)
            return fail(ii, II_EINVAL, "ii_delete: term %u is listed twice", terms[i]);
        t->mark = epoch;
    }
    for (size_t i = 0; i < n; i++)
        ii->terms[terms[i]].df--;
    d->live = 0;
    ii->ndocs--;
    ii->tokens -= d->len;
    ii->dead += n;
    return II_OK;
}

int ii_compact(ii_t *ii)
{
    for (uint32_t i = 0; i < ii->nterms; i++) {
        ii_term *t = &ii->terms[i];
        uint32_t w = 0;
        for (uint32_t r = 0; r < t->n; r++) {
            uint32_t dd = t->doc[r];
            if (!ii->docs[dd].live)
                continue;
            t->doc[w] = dd;
            t->tf[w] = t->tf[r];
            block_put(t, w, t->tf[r], ii->docs[dd].len);
            w++;
        }
        ii->postings -= t->n - w;
        t->n = w;
        t->ub_avgdl = 0.0;
    }
    ii->dead = 0;
    return II_OK;
}

/* ---------------------------------------------------------------- search */

static inline int admits(const ii_t *ii, const ii_filter *f, uint32_t d)
{
    const ii_doc *x = &ii->docs[d];
    if (!x->live)
        return 0;
    if (!f)
        return 1;
    if (!(x->ts >= f->ts_lo && x->ts <= f->ts_hi))
        return 0;
    if (!((f->roles >> x->role) & 1u))
        return 0;
    if (f->allow && (d >= f->nallow || !((f->allow[d >> 6] >> (d & 63)) & 1u)))
        return 0;
    return 1;
}

typedef struct cursor {
    const ii_term *t;
    uint32_t pos;
    uint32_t qi;  /* position in the query (the summation order) */
    double idf;   /* times the term's weight */
    double ub;    /* idf * the term's tf-part bound */
    uint32_t blk; /* the block bub belongs to (UINT32_MAX: none yet) */
    double bub;   /* idf * the bound of block blk */
} cursor;

/* idf times the bound of the block holding c's current posting (cached per block) */
static inline double block_bound(cursor *c, double avgdl)
{
    uint32_t b = c->pos / II_BLOCK;
    if (b != c->blk) {
        c->blk = b;
        c->bub = c->idf * tfpart(c->t->bmax[b], c->t->bmin[b], avgdl);
    }
    return c->bub;
}

static inline uint32_t cur_doc(const cursor *c) { return c->pos < c->t->n ? c->t->doc[c->pos] : END_DOC; }

static inline uint32_t block_last(const ii_term *t, uint32_t b)
{
    uint32_t end = (b + 1) * II_BLOCK;
    return t->doc[(end < t->n ? end : t->n) - 1];
}

/* Move c to its first posting with doc >= d, skipping whole blocks by their last doc. */
static void seek(cursor *c, uint32_t d)
{
    const ii_term *t = c->t;
    uint32_t p = c->pos, n = t->n;
    if (p >= n || t->doc[p] >= d)
        return;
    uint32_t b = p / II_BLOCK, nb = nblocks(n);
    if (block_last(t, b) < d) {
        /* gallop to a block whose last doc is >= d, then bisect */
        uint32_t lo = b + 1, step = 1, hi = lo;
        while (hi < nb && block_last(t, hi) < d) {
            lo = hi + 1;
            hi += step;
            step *= 2;
        }
        if (lo >= nb) {
            c->pos = n;
            return;
        }
        if (hi >= nb)
            hi = nb - 1;
        while (lo < hi) { /* first block in [lo, hi] with last >= d (hi has it) */
            uint32_t mid = lo + (hi - lo) / 2;
            if (block_last(t, mid) < d)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (block_last(t, lo) < d) {
            c->pos = n;
            return;
        }
        p = lo * II_BLOCK;
    }
    while (t->doc[p] < d)
        p++;
    c->pos = p;
}

/* The heap lives in the caller's output arrays: a min-heap, worst at the root
 * (lower score, or equal score and smaller doc). */
static inline int worse(double sa, uint32_t da, double sb, uint32_t db)
{
    return sa < sb || (sa == sb && da < db);
}

static void sift_down(uint32_t *docs, double *sc, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(sc[l], docs[l], sc[m], docs[m]))
            m = l;
        if (r < n && worse(sc[r], docs[r], sc[m], docs[m]))
            m = r;
        if (m == i)
            return;
        double ts = sc[i];
        sc[i] = sc[m];
        sc[m] = ts;
        uint32_t td = docs[i];
        docs[i] = docs[m];
        docs[m] = td;
        i = m;
    }
}

static void sift_up(uint32_t *docs, double *sc, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!worse(sc[i], docs[i], sc[p], docs[p]))
            return;
        double ts = sc[i];
        sc[i] = sc[p];
        sc[p] = ts;
        uint32_t td = docs[i];
        docs[i] = docs[p];
        docs[p] = td;
        i = p;
    }
}

/* Heap sort of out[0..heap): each pass moves the worst left to the end, so the array ends best first. */
static void heap_sort(uint32_t *docs, double *sc, size_t heap)
{
    for (size_t m = heap; m > 1; m--) {
        double ts = sc[0];
        sc[0] = sc[m - 1];
        sc[m - 1] = ts;
        uint32_t td = docs[0];
        docs[0] = docs[m - 1];
        docs[m - 1] = td;
        sift_down(docs, sc, m - 1, 0);
    }
}

/* Exhaustive search, term at a time: every posting of every query term adds its
 * contribution to its document's accumulator, terms in query order (so each sum is
 * the one the pruned path computes); then the admitted documents compete for the k
 * places. Cheaper per posting than walking the lists side by side, and the count of
 * matches comes out exact. */
static void search_taat(ii_t *ii, cursor *cur, size_t nq, const ii_filter *f, size_t k, double avgdl,
                        uint32_t *out_docs, double *out_scores, size_t *nout, uint64_t *total)
{
    cursor *byq[II_MAX_TERMS];
    for (size_t i = 0; i < nq; i++) { /* query order */
        size_t j = i;
        while (j > 0 && byq[j - 1]->qi > cur[i].qi) {
            byq[j] = byq[j - 1];
            j--;
        }
        byq[j] = &cur[i];
    }
    double *acc = ii->acc;
    uint32_t *touched = ii->touched;
    size_t nt = 0;
    for (size_t i = 0; i < nq; i++) {
        const cursor *c = byq[i];
        const ii_term *t = c->t;
        for (uint32_t r = 0; r < t->n; r++) {
            uint32_t d = t->doc[r];
            const ii_doc *x = &ii->docs[d];
            if (!x->live)
                continue;
            if (acc[d] == 0.0) /* contributions are > 0, so 0 means untouched */
                touched[nt++] = d;
            acc[d] += c->idf * tfpart(t->tf[r], x->len, avgdl);
        }
    }
    size_t heap = 0;
    uint64_t counted = 0;
    for (size_t i = 0; i < nt; i++) {
        uint32_t d = touched[i];
        double s = acc[d];
        acc[d] = 0.0;
        if (!admits(ii, f, d))
            continue;
        counted++;
        if (heap < k) {
            out_docs[heap] = d;
            out_scores[heap] = s;
            sift_up(out_docs, out_scores, heap);
            heap++;
        } else if (k && !worse(s, d, out_scores[0], out_docs[0])) {
            out_docs[0] = d;
            out_scores[0] = s;
            sift_down(out_docs, out_scores, heap, 0);
        }
    }
    heap_sort(out_docs, out_scores, heap);
    *nout = heap;
    *total = counted;
}

/* ---------------------------------------------------------------- explain */

/* Whether term t's posting list holds doc (binary search; lists are ascending). */
static int term_has(const ii_term *t, uint32_t doc)
{
    uint32_t lo = 0, hi = t->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (t->doc[mid] < doc)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < t->n && t->doc[lo] == doc;
}

int ii_explain(const ii_t *ii, const uint32_t *terms, size_t n, const uint32_t *docs, size_t ndocs,
               uint64_t *out_masks, double *out_ts, double *out_idf)
{
    if (n > II_MAX_TERMS)
        return fail(ii, II_EINVAL, "ii_explain: %zu terms, at most %d", n, II_MAX_TERMS);
    const double N = (double)ii->ndocs;
    for (size_t i = 0; i < n; i++) {
        uint32_t id = terms[i];
        out_idf[i] = id < ii->nterms && ii->terms[id].df ? idf_of(N, ii->terms[id].df) : 0.0;
    }
    for (size_t j = 0; j < ndocs; j++) {
        uint32_t d = docs[j];
        uint64_t mask = 0;
        if (d >= ii->next_doc || !ii->docs[d].live) {
            out_masks[j] = 0;
            out_ts[j] = NAN;
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            uint32_t id = terms[i];
            if (id < ii->nterms && ii->terms[id].df && term_has(&ii->terms[id], d))
                mask |= 1ull << i;
        }
        out_masks[j] = mask;
        out_ts[j] = ii->docs[d].ts;
    }
    return II_OK;
}

int ii_search(ii_t *ii, const uint32_t *terms, const double *weights, size_t n, const ii_filter *f, size_t k,
              uint64_t exact_max, uint32_t *out_docs, double *out_scores, size_t *nout,
              uint64_t *total, int *exact)
{
    *nout = 0;
    *total = 0;
    *exact = 1;
    if (n > II_MAX_TERMS)
        return fail(ii, II_EINVAL, "ii_search: %zu terms, at most %d", n, II_MAX_TERMS);
    if (ii->ndocs == 0)
        return II_OK;
    const double N = (double)ii->ndocs;
    const double avgdl = (double)ii->tokens / N;
    cursor cur[II_MAX_TERMS];
    size_t nq = 0;
    uint64_t entries = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t id = terms[i];
        int dup = 0;
        for (size_t j = 0; j < i; j++)
            dup |= terms[j] == id;
        if (dup)
            return fail(ii, II_EINVAL, "ii_search: term %u is listed twice", id);
        if (id >= ii->nterms || ii->terms[id].df == 0)
            continue;
        ii_term *t = &ii->terms[id];
        if (t->ub_avgdl < avgdl)
            term_ub(t, avgdl * (1.0 + 1.0 / 16));
        double w = weights ? weights[i] : 1.0;
        if (!(w > 0.0) || !isfinite(w))
            return fail(ii, II_EINVAL, "ii_search: term %u has weight %g", id, w);
        cursor c = {t, 0, (uint32_t)i, w * idf_of(N, t->df), 0.0, UINT32_MAX, 0.0};
        c.ub = c.idf * t->ub;
        /* insertion sort by bound, ascending */
        size_t j = nq++;
        while (j > 0 && cur[j - 1].ub > c.ub) {
            cur[j] = cur[j - 1];
            j--;
        }
        cur[j] = c;
        entries += t->n;
    }
    if (nq == 0)
        return II_OK;
    double ps[II_MAX_TERMS]; /* ps[i]: the bounds of cursors 0..i summed */
    for (size_t i = 0; i < nq; i++)
        ps[i] = cur[i].ub + (i ? ps[i - 1] : 0.0);
    const int exhaustive = entries <= exact_max;
    if (exhaustive) {
        search_taat(ii, cur, nq, f, k, avgdl, out_docs, out_scores, nout, total);
        return II_OK;
    }
    double contrib[II_MAX_TERMS];
    size_t heap = 0, e = 0; /* cursors [0, e) are non-essential */
    double theta = -INFINITY, tol = 0.0;
    uint64_t counted = 0, examined = 0;
    int skipped = 0;
    for (;;) {
        uint32_t d = END_DOC;
        for (size_t i = e; i < nq; i++) {
            uint32_t x = cur_doc(&cur[i]);
            if (x < d)
                d = x;
        }
        if (d == END_DOC)
            break;
        if (heap == k && !exhaustive) {
            /* block skipping: every essential posting in [d, end] lies in its cursor's
             * current block, end being the first of those blocks to finish; if their
             * bounds and the non-essential bounds cannot reach theta, skip the range */
            double bound = e ? ps[e - 1] : 0.0;
            uint32_t end = END_DOC;
            for (size_t i = e; i < nq; i++) {
                cursor *c = &cur[i];
                if (c->pos >= c->t->n)
                    continue;
                bound += block_bound(c, avgdl);
                uint32_t last = block_last(c->t, c->pos / II_BLOCK);
                if (last < end)
                    end = last;
            }
            if (bound < theta - tol) {
                for (size_t i = e; i < nq; i++)
                    seek(&cur[i], end == END_DOC ? END_DOC : end + 1);
                skipped = 1;
                continue;
            }
        }
        if (!ii->docs[d].live || !admits(ii, f, d)) {
            examined += ii->docs[d].live;
            for (size_t i = e; i < nq; i++)
                if (cur_doc(&cur[i]) == d)
                    cur[i].pos++;
            continue;
        }
        examined++;
        counted++;
        const double len = ii->docs[d].len;
        uint64_t present = 0;
        double s = 0.0;
        for (size_t i = e; i < nq; i++) {
            cursor *c = &cur[i];
            if (cur_doc(c) != d)
                continue;
            double x = c->idf * tfpart(c->t->tf[c->pos], len, avgdl);
            contrib[c->qi] = x;
            present |= 1ull << c->qi;
            s += x;
            c->pos++;
        }
        int pruned = 0;
        for (size_t i = e; i-- > 0;) {
            if (s + ps[i] < theta - tol) {
                pruned = 1;
                break;
            }
            cursor *c = &cur[i];
            seek(c, d);
            if (cur_doc(c) == d) {
                double x = c->idf * tfpart(c->t->tf[c->pos], len, avgdl);
                contrib[c->qi] = x;
                present |= 1ull << c->qi;
                s += x;
            }
        }
        if (pruned)
            continue;
        double exact_s = 0.0; /* canonical order: the query's */
        for (size_t q = 0; q < n; q++)
            if ((present >> q) & 1u)
                exact_s += contrib[q];
        if (k == 0)
            continue;
        if (heap < k) {
            out_docs[heap] = d;
            out_scores[heap] = exact_s;
            sift_up(out_docs, out_scores, heap);
            heap++;
        } else if (!worse(exact_s, d, out_scores[0], out_docs[0])) {
            out_docs[0] = d;
            out_scores[0] = exact_s;
            sift_down(out_docs, out_scores, heap, 0);
        } else {
            continue;
        }
        if (heap == k) {
            theta = out_scores[0];
            tol = 1e-9 * fabs(theta) + 1e-300;
            if (!exhaustive)
                while (e < nq && ps[e] < theta - tol)
                    e++;
            if (e)
                skipped = 1;
        }
    }
    heap_sort(out_docs, out_scores, heap);
    *nout = heap;
    if (!skipped) {
        *total = counted;
        return II_OK;
    }
    /* estimate: P(a document holds some term) under independence, times the
     * share of examined documents that passed the filter */
    double miss = 1.0, upper = 0.0;
    for (size_t i = 0; i < nq; i++) {
        miss *= 1.0 - cur[i].t->df / N;
        upper += cur[i].t->df;
    }
    double rho = examined ? (double)counted / (double)examined : 1.0;
    double est = floor(rho * N * (1.0 - miss) + 0.5);
    if (est > upper)
        est = upper;
    if (est < (double)counted)
        est = (double)counted;
    *total = (uint64_t)est;
    *exact = 0;
    return II_OK;
}

int ii_neighbours(const ii_t *ii, const uint32_t *docs, size_t n, const ii_filter *f,
                  double max_gap, uint32_t *prev, uint32_t *next, uint8_t *flags)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t d = docs[i];
        prev[i] = next[i] = 0;
        if (flags)
            flags[i] = 0;
        if (d == 0 || d >= ii->next_doc || !ii->docs[d].live)
            continue;
        const ii_doc *x = &ii->docs[d];
        if (flags)
            flags[i] = x->flags;
        if (d > 1) {
            const ii_doc *y = &ii->docs[d - 1];
            if (y->live && y->group == x->group && fabs(x->ts - y->ts) <= max_gap && admits(ii, f, d - 1))
                prev[i] = d - 1;
        }
        if (d + 1 < ii->next_doc) {
            const ii_doc *y = &ii->docs[d + 1];
            if (y->live && y->group == x->group && fabs(y->ts - x->ts) <= max_gap && admits(ii, f, d + 1))
                next[i] = d + 1;
        }
    }
    return II_OK;
}

/* ---------------------------------------------------------------- hybrid ranking
 *
 * Candidates live in parallel arrays carved from the caller's scratch, found by
 * doc through an open-addressing table (load <= 1/2). Every float operation
 * happens in the order vmem.rank performs it, so the two agree bit for bit:
 *   fuse:   t = text score / best text score (ranks (n-r)/n if no usable best),
 *           v = similarity clipped to [0, 1]; score = 0 + wt * t, then + wv * v;
 *           order: score desc, first rank in either list asc, doc asc.
 *   spread: base = score / best (same fallback); each candidate in that order
 *           adds share * base to its next, then to its previous neighbour;
 *           a neighbour new to the list ranks after every listed tie.
 */

typedef struct fcand {
    double score;
    double base;
    uint64_t first; /* first rank seen; FIRST_NONE for neighbours brought in */
    uint32_t doc;
    uint32_t _pad;  /* 1: in the text hits, 2: in the vector hits */
} fcand;

#define FIRST_NONE (1ull << 62)

size_t ii_fuse_scratch(size_t nt, size_t nv)
{
    size_t maxc = 3 * (nt + nv) + 1, h = 16;
    while (h < 2 * maxc)
        h *= 2;
    return (maxc * sizeof(fcand) + h * sizeof(uint32_t)) / sizeof(uint64_t) + 2;
}

static int fcand_cmp(const void *a, const void *b)
{
    const fcand *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    if (x->first != y->first)
        return x->first < y->first ? -1 : 1;
    return (x->doc > y->doc) - (x->doc < y->doc);
}

typedef struct ftable {
    fcand *c;
    uint32_t *slot; /* index + 1 into c; 0 empty */
    uint32_t mask, n;
} ftable;

static fcand *ft_get(ftable *t, uint32_t doc, int add)
{
    uint32_t i = (uint32_t)(doc * 0x9E3779B1u) & t->mask;
    for (;;) {
        uint32_t e = t->slot[i];
        if (!e)
            break;
        if (t->c[e - 1].doc == doc)
            return &t->c[e - 1];
        i = (i + 1) & t->mask;
    }
    if (!add)
        return NULL;
    fcand *c = &t->c[t->n];
    memset(c, 0, sizeof *c);
    c->doc = doc;
    c->first = FIRST_NONE;
    t->slot[i] = ++t->n;
    return c;
}

static void ft_rehash(ftable *t)
{
    memset(t->slot, 0, ((size_t)t->mask + 1) * sizeof *t->slot);
    for (uint32_t k = 0; k < t->n; k++) {
        uint32_t i = (uint32_t)(t->c[k].doc * 0x9E3779B1u) & t->mask;
        while (t->slot[i])
            i = (i + 1) & t->mask;
        t->slot[i] = k + 1;
    }
}

/* list[i] / best when every value is finite and best > 0, else (n - rank) / n */
static int usable_best(const double *v, size_t n, double *best)
{
    double top = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(v[i]))
            return 0;
        if (v[i] > top)
            top = v[i];
    }
    *best = top;
    return n && top > 0.0;
}

int ii_fuse(const ii_t *ii, const uint32_t *tdocs, const double *tscores, size_t nt,
            const uint32_t *vdocs, const double *vsims, size_t nv, const ii_filter *f,
            const ii_fuse_params *p, uint32_t *out_docs, double *out_scores, size_t cap,
            size_t *nout, uint64_t *scratch, size_t nscratch)
{
    *nout = 0;
    if (!(p->text_weight >= 0.0 && p->text_weight <= 1.0))
        return fail(ii, II_EINVAL, "ii_fuse: text weight %g is outside [0, 1]", p->text_weight);
    if (!(p->fwd_ask >= 0.0 && p->fwd_ask <= 1.0 && p->fwd_stmt >= 0.0 && p->fwd_stmt <= 1.0 && p->bwd >= 0.0 &&
          p->bwd <= 1.0))
        return fail(ii, II_EINVAL, "ii_fuse: spread shares must be in [0, 1]");
    if (nscratch < ii_fuse_scratch(nt, nv))
        return fail(ii, II_EINVAL, "ii_fuse: scratch of %zu words, %zu needed", nscratch, ii_fuse_scratch(nt, nv));
    size_t maxc = 3 * (nt + nv) + 1, h = 16;
    while (h < 2 * maxc)
        h *= 2;
    if (cap < maxc - 1)
        return fail(ii, II_EINVAL, "ii_fuse: output of %zu, up to %zu results", cap, maxc - 1);
    ftable t = {(fcand *)scratch, (uint32_t *)((fcand *)scratch + maxc), (uint32_t)(h - 1), 0};
    memset(t.slot, 0, h * sizeof *t.slot);
    const double wt = p->text_weight, wv = 1.0 - p->text_weight;

    /* fuse: the text side first (normalised), then the vector side (clipped) */
    double best = 0.0;
    int scaled = usable_best(tscores, nt, &best);
    for (size_t r = 0; r < nt; r++) {
        if (ft_get(&t, tdocs[r], 0))
            return fail(ii, II_EINVAL, "ii_fuse: doc %u is listed twice in the text hits", tdocs[r]);
        fcand *c = ft_get(&t, tdocs[r], 1);
        double x = scaled ? (tscores[r] > 0.0 ? tscores[r] : 0.0) / best : (double)(nt - r) / (double)nt;
        c->score = 0.0 + wt * x;
        c->first = r;
        c->_pad = 1;
    }
    for (size_t r = 0; r < nv; r++) {
        fcand *c = ft_get(&t, vdocs[r], 0);
        if (c && (c->_pad & 2))
            return fail(ii, II_EINVAL, "ii_fuse: doc %u is listed twice in the vector hits", vdocs[r]);
        double v = isfinite(vsims[r]) ? (vsims[r] < 0.0 ? 0.0 : vsims[r] > 1.0 ? 1.0 : vsims[r]) : 0.0;
        if (!c) {
            c = ft_get(&t, vdocs[r], 1);
            c->first = r;
        } else if (r < c->first) {
            c->first = r;
        }
        c->_pad |= 2;
        c->score = c->score + wv * v;
    }
    qsort(t.c, t.n, sizeof *t.c, fcand_cmp);
    const int spread_on = p->fwd_ask > 0.0 || p->fwd_stmt > 0.0 || p->bwd > 0.0;
    if (spread_on && t.n) {
        ft_rehash(&t);
        size_t n0 = t.n;
        double top = t.c[0].score;
        int ok = 1;
        for (size_t i = 0; i < n0; i++)
            ok &= isfinite(t.c[i].score);
        int sc = ok && top > 0.0;
        for (size_t i = 0; i < n0; i++) {
            t.c[i].base = sc ? (t.c[i].score > 0.0 ? t.c[i].score : 0.0) / top : (double)(n0 - i) / (double)n0;
            t.c[i].score = t.c[i].base;
            t.c[i].first = i; /* spread's own first-seen: the rank in the fused list */
        }
        for (size_t i = 0; i < n0; i++) {
            uint32_t d = t.c[i].doc;
            double s = t.c[i].base;
            if (s == 0.0 || d == 0 || d >= ii->next_doc || !ii->docs[d].live)
                continue;
            const ii_doc *x = &ii->docs[d];
            double fw = (x->flags & II_ASKS) ? p->fwd_ask : p->fwd_stmt;
            for (int side = 0; side < 2; side++) {
                double w = side ? p->bwd : fw;
                uint32_t nb = side ? d - 1 : d + 1;
                if (w == 0.0 || nb == 0 || nb >= ii->next_doc)
                    continue;
                const ii_doc *y = &ii->docs[nb];
                if (!y->live || y->group != x->group || fabs(y->ts - x->ts) > p->max_gap || !admits(ii, f, nb))
                    continue;
                fcand *c = ft_get(&t, nb, 1);
                c->score = c->score + w * s;
            }
        }
        qsort(t.c, t.n, sizeof *t.c, fcand_cmp);
    }
    for (size_t i = 0; i < t.n; i++) {
        out_docs[i] = t.c[i].doc;
        out_scores[i] = t.c[i].score;
    }
    *nout = t.n;
    return II_OK;
}

/* ---------------------------------------------------------------- queries */

int ii_is_live(const ii_t *ii, uint32_t doc) { return doc < ii->next_doc && ii->docs[doc].live; }

size_t ii_docs(const ii_t *ii, uint32_t *out, size_t cap)
{
    size_t m = 0;
    for (uint32_t d = 1; d < ii->next_doc; d++)
        if (ii->docs[d].live) {
            if (m < cap)
                out[m] = d;
            m++;
        }
    return m;
}

void ii_stats_get(const ii_t *ii, ii_stats *out)
{
    out->docs = ii->ndocs;
    out->next_doc = ii->next_doc ? ii->next_doc : 1;
    out->tokens = ii->tokens;
    out->terms = ii->nterms;
    out->postings = ii->postings;
    out->dead = ii->dead;
    out->memory = ii->memory + sizeof *ii;
}

/* ---------------------------------------------------------------- snapshot
 *
 * Little-endian, native layout of fixed-size fields:
 *   u32 magic "VMII", u32 version, u32 next_doc, u32 nterms,
 *   per id 1..next_doc-1: u8 live; if live: f64 ts, u32 group, u8 role, u8 flags
 *   per term 0..nterms-1: u32 count, then count x (u32 doc, u32 tf), live postings only
 * Lengths, term counts, df, blocks and totals are recomputed on restore.
 */

static inline void put(uint8_t **p, const void *v, size_t n)
{
    memcpy(*p, v, n);
    *p += n;
}

size_t ii_snapshot_size(const ii_t *ii)
{
    size_t sz = 16;
    for (uint32_t d = 1; d < ii->next_doc; d++)
        sz += ii->docs[d].live ? 15 : 1;
    for (uint32_t i = 0; i < ii->nterms; i++)
        sz += 4 + 8 * (size_t)ii->terms[i].df;
    return sz;
}

int ii_snapshot(const ii_t *ii, uint8_t *buf, size_t cap, size_t *written)
{
    size_t need = ii_snapshot_size(ii);
    if (cap < need)
        return fail(ii, II_EINVAL, "ii_snapshot: buffer of %zu bytes, %zu needed", cap, need);
    uint8_t *p = buf;
    uint32_t hdr[4] = {SNAP_MAGIC, SNAP_VERSION, ii->next_doc ? ii->next_doc : 1, ii->nterms};
    put(&p, hdr, sizeof hdr);
    for (uint32_t d = 1; d < ii->next_doc; d++) {
        const ii_doc *x = &ii->docs[d];
        put(&p, &x->live, 1);
        if (x->live) {
            put(&p, &x->ts, 8);
            put(&p, &x->group, 4);
            put(&p, &x->role, 1);
            put(&p, &x->flags, 1);
        }
    }
    for (uint32_t i = 0; i < ii->nterms; i++) {
        const ii_term *t = &ii->terms[i];
        put(&p, &t->df, 4);
        for (uint32_t r = 0; r < t->n; r++)
            if (ii->docs[t->doc[r]].live) {
                put(&p, &t->doc[r], 4);
                put(&p, &t->tf[r], 4);
            }
    }
    *written = (size_t)(p - buf);
    return II_OK;
}

static int take(const uint8_t **p, const uint8_t *end, void *v, size_t n)
{
    if ((size_t)(end - *p) < n)
        return 0;
    memcpy(v, *p, n);
    *p += n;
    return 1;
}

int ii_restore(ii_t *ii, const uint8_t *buf, size_t nbytes)
{
    const uint8_t *p = buf, *end = buf + nbytes;
    uint32_t hdr[4];
    if (!take(&p, end, hdr, sizeof hdr) || hdr[0] != SNAP_MAGIC)
        return fail(ii, II_ECORRUPT, "ii_restore: not an index snapshot");
    if (hdr[1] != SNAP_VERSION)
        return fail(ii, II_ECORRUPT, "ii_restore: snapshot version %u, this code reads %u", hdr[1], SNAP_VERSION);
    uint32_t next_doc = hdr[2], nterms = hdr[3];
    if (next_doc == 0 || next_doc == END_DOC || nterms >= 0x7fffffffu)
        return fail(ii, II_ECORRUPT, "ii_restore: bad header");
    ii_t tmp;
    memset(&tmp, 0, sizeof tmp);
    int rc = II_OK;
#define BAD(...)                                     \
    do {                                             \
        rc = fail(ii, II_ECORRUPT, __VA_ARGS__);     \
        goto out;                                    \
    } while (0)
    if (reserve_docs(&tmp, (uint64_t)next_doc + 1) || reserve_terms(&tmp, nterms ? nterms : 1)) {
        rc = fail(ii, II_ENOMEM, "ii_restore: out of memory");
        goto out;
    }
    for (uint32_t d = 1; d < next_doc; d++) {
        ii_doc *x = &tmp.docs[d];
        if (!take(&p, end, &x->live, 1) || x->live > 1)
            BAD("ii_restore: truncated or bad document %u", d);
        if (x->live) {
            if (!take(&p, end, &x->ts, 8) || !take(&p, end, &x->group, 4) || !take(&p, end, &x->role, 1) ||
                !take(&p, end, &x->flags, 1))
                BAD("ii_restore: truncated document %u", d);
            if (!isfinite(x->ts) || x->role > II_MAX_ROLE || (x->flags & ~II_FLAGS_ALL))
                BAD("ii_restore: bad document %u", d);
            tmp.ndocs++;
        }
    }
    tmp.next_doc = next_doc;
    tmp.nterms = nterms;
    for (uint32_t i = 0; i < nterms; i++) {
        ii_term *t = &tmp.terms[i];
        uint32_t cnt;
        if (!take(&p, end, &cnt, 4) || (size_t)(end - p) / 8 < cnt)
            BAD("ii_restore: truncated term %u", i);
        if (cnt) {
            uint32_t cap = 4;
            while (cap < cnt)
                cap *= 2;
            t->doc = grow(&tmp, NULL, 0, (size_t)cap * 4);
            t->tf = grow(&tmp, NULL, 0, (size_t)cap * 4);
            t->bmax = grow(&tmp, NULL, 0, (size_t)nblocks(cap) * 4);
            t->bmin = grow(&tmp, NULL, 0, (size_t)nblocks(cap) * 4);
            if (!t->doc || !t->tf || !t->bmax || !t->bmin) {
                rc = fail(ii, II_ENOMEM, "ii_restore: out of memory");
                goto out;
            }
            t->cap = cap;
        }
        uint32_t last = 0;
        for (uint32_t r = 0; r < cnt; r++) {
            uint32_t dd = 0, tf = 0;
            take(&p, end, &dd, 4);
            take(&p, end, &tf, 4);
            if (dd <= last || dd >= next_doc || !tmp.docs[dd].live || tf == 0)
                BAD("ii_restore: bad posting %u of term %u", r, i);
            if ((uint64_t)tmp.docs[dd].len + tf > 0xffffffffu)
                BAD("ii_restore: document %u is too long", dd);
            last = dd;
            t->doc[r] = dd;
            t->tf[r] = tf;
            tmp.docs[dd].len += tf;
            tmp.docs[dd].nterm++;
        }
        t->n = t->df = cnt;
        tmp.postings += cnt;
    }
    if (p != end)
        BAD("ii_restore: %zu trailing bytes", (size_t)(end - p));
    for (uint32_t i = 0; i < nterms; i++) { /* blocks need the final lengths */
        ii_term *t = &tmp.terms[i];
        for (uint32_t r = 0; r < t->n; r++)
            block_put(t, r, t->tf[r], tmp.docs[t->doc[r]].len);
    }
    for (uint32_t d = 1; d < next_doc; d++)
        if (tmp.docs[d].live)
            tmp.tokens += tmp.docs[d].len;
#undef BAD
out:
    if (rc) {
        free_contents(&tmp);
        return rc;
    }
    free_contents(ii);
    tmp.epoch = ii->epoch;
    memcpy(tmp.err, ii->err, sizeof tmp.err);
    *ii = tmp;
    return II_OK;
}

/* ---------------------------------------------------------------- check */

int ii_check(ii_t *ii)
{
    uint32_t *cnt = calloc(ii->next_doc ? ii->next_doc : 1, sizeof *cnt);
    uint64_t *sum = calloc(ii->next_doc ? ii->next_doc : 1, sizeof *sum);
    int rc = II_OK;
    if (!cnt || !sum) {
        rc = fail(ii, II_ENOMEM, "ii_check: out of memory");
        goto out;
    }
#define BROKEN(...)                              \
    do {                                         \
        rc = fail(ii, II_ECHECK, __VA_ARGS__);   \
        goto out;                                \
    } while (0)
    uint64_t postings = 0, dead = 0;
    for (uint32_t i = 0; i < ii->nterms; i++) {
        const ii_term *t = &ii->terms[i];
        uint32_t live = 0;
        if (t->n > t->cap)
            BROKEN("ii_check: term %u holds %u postings in %u slots", i, t->n, t->cap);
        for (uint32_t r = 0; r < t->n; r++) {
            uint32_t d = t->doc[r];
            if (d == 0 || d >= ii->next_doc || (r && d <= t->doc[r - 1]))
                BROKEN("ii_check: term %u posting %u (doc %u) out of order or range", i, r, d); /* 1 */
            if (t->tf[r] == 0)
                BROKEN("ii_check: term %u posting %u has tf 0", i, r);
            uint32_t b = r / II_BLOCK;
            if (t->bmax[b] < t->tf[r] || t->bmin[b] > ii->docs[d].len)
                BROKEN("ii_check: term %u block %u does not bound posting %u", i, b, r); /* 2 */
            if (ii->docs[d].live) {
                live++;
                cnt[d]++;
                sum[d] += t->tf[r];
            } else {
                dead++;
            }
        }
        if (live != t->df)
            BROKEN("ii_check: term %u has df %u but %u live postings", i, t->df, live); /* 1 */
        if (t->ub_avgdl > 0.0)
            for (uint32_t b = 0; b < nblocks(t->n); b++)
                if (tfpart(t->bmax[b], t->bmin[b], t->ub_avgdl) > t->ub)
                    BROKEN("ii_check: term %u bound %g is below block %u", i, t->ub, b); /* 3 */
        postings += t->n;
    }
    uint64_t ndocs = 0, tokens = 0;
    for (uint32_t d = 1; d < ii->next_doc; d++) {
        const ii_doc *x = &ii->docs[d];
        if (!x->live)
            continue;
        ndocs++;
        tokens += x->len;
        if (x->len != sum[d] || x->nterm != cnt[d])
            BROKEN("ii_check: doc %u has length %u / %u terms, its postings say %llu / %u", d, x->len,
                   x->nterm, (unsigned long long)sum[d], cnt[d]); /* 4 */
    }
    if (ndocs != ii->ndocs || tokens != ii->tokens)
        BROKEN("ii_check: %llu live docs / %llu tokens counted, %llu / %llu recorded",
               (unsigned long long)ndocs, (unsigned long long)tokens, (unsigned long long)ii->ndocs,
               (unsigned long long)ii->tokens); /* 4 */
    for (uint32_t d = 0; d < ii->dcap; d++)
        if (ii->acc[d] != 0.0)
            BROKEN("ii_check: accumulator of doc %u is %g between searches", d, ii->acc[d]); /* 6 */
    if (postings != ii->postings || dead != ii->dead)
        BROKEN("ii_check: %llu postings / %llu dead counted, %llu / %llu recorded", (unsigned long long)postings,
               (unsigned long long)dead, (unsigned long long)ii->postings, (unsigned long long)ii->dead); /* 5 */
#undef BROKEN
out:
    free(cnt);
    free(sum);
    return rc;
}
