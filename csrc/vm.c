/*
 * vm.c: page table, regions, token budget, eviction planning, page-in
 * admission, snapshot and the invariant checker. See vm.h for the interface.
 *
 * Data structures:
 *   pages[]  one 40-byte record per slot; a free slot has region VM_FREE and
 *            chains to the next free slot through .next.
 *   hash[]   open addressing with linear probing and backward-shift deletion;
 *            an entry is slot+1 (0: empty); load <= 3/4. O(1) lookup by id.
 *   lists    SYSTEM, CORE, SUMMARY, QUEUE: doubly linked through .prev/.next,
 *            head is the oldest, tail the newest (the queue is FIFO).
 *   heap[]   WORKSET: a binary heap of slots, coldest at heap[0]; for a
 *            working-set page .prev holds its heap position.
 *   OUT      not resident: no list, only counted.
 *
 * Invariants (vm_check verifies each; its message names the one that broke,
 * "vm_check: invariant 3: ..."; a debug build asserts them all after every
 * call that changes the table, see VM_CHECKED below):
 *   1. Every live page is in exactly one region; per-region page counts and
 *      token sums, and the resident pinned tokens, equal what the records say;
 *      used = sum over regions 1..5.
 *   2. Each list is consistent: head.prev = -1, tail.next = -1, x.next.prev = x,
 *      and it holds exactly the pages of its region.
 *   3. heap[i] is a working-set page whose .prev = i, and no child is colder
 *      than its parent.
 *   4. Every live page is found by its id in hash[]; hash[] holds nothing else.
 *   5. Resident pinned tokens <= budget; working-set tokens <= ws_budget.
 *   6. No page was touched after the sequence counter (last_touch <= seq).
 *   7. The free-slot chain holds exactly the slots below hiwater that are not
 *      live, each once (free + live = hiwater).
 *   8. A page's flags are known flags only (VM_FLAGS_ALL).
 *
 * Atomic groups: a run of consecutive queue pages sharing a nonzero group id
 * (a tool call and its results). Eviction takes a run whole or not at all.
 *
 * Page lifecycle:
 *
 *                 vm_add(r)                 vm_move / vm_admit
 *    (absent) -------------> region r  <---------------------->  region r'
 *        ^                                                          |
 *        +---------------------------- vm_remove -------------------+
 *
 *   vm_plan_evict proposes QUEUE -> OUT moves; the caller applies them with
 *   vm_move_many once their summary exists. vm_admit moves OUT -> WORKSET and
 *   WORKSET -> OUT (its victims).
 */
#include "vm.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VM_FREE 0xFF
#define VM_MARK 0x80 /* transient flag bit used by batch validation */

typedef struct vm_page {
    uint64_t id;
    uint64_t last_touch;
    uint32_t tokens;
    uint32_t touches;
    uint32_t group;
    int32_t prev; /* list link; heap position in the working set */
    int32_t next; /* list link; next free slot when free */
    uint8_t region;
    uint8_t flags;
    uint16_t _pad;
} vm_page;

struct vm {
    vm_page *pages;
    uint32_t cap;      /* slots allocated */
    uint32_t hiwater;  /* slots ever used: pages[0..hiwater) */
    uint32_t npages;   /* live pages */
    int32_t free_head; /* chain of free slots below hiwater */
    uint32_t *hash;
    uint32_t hmask;
    int32_t *heap; /* cap entries */
    uint32_t nheap;
    int32_t head[VM_NREGIONS], tail[VM_NREGIONS];
    uint64_t tokens[VM_NREGIONS], count[VM_NREGIONS];
    uint64_t pinned;
    uint64_t seq;
    vm_config cfg;
    uint64_t budget, warn_line, flush_line;
    char err[192];
};

/* ---------------------------------------------------------------- errors */

static int fail(vm_t *vm, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(vm->err, sizeof vm->err, fmt, ap);
    va_end(ap);
    return code;
}

const char *vm_errmsg(const vm_t *vm) { return vm->err; }

/* ---------------------------------------------------------------- debug build
 *
 * Compiled with -DVM_DEBUG (VMEM_CORE_DEBUG=1 when the extension is built, see
 * csrc/build_vmcore.py), every public call that can change the table checks every
 * invariant on its way out, whichever return it takes: SQLite's
 * assert( assert_pager_state(p) ), here a cleanup handler declared by VM_CHECKED at
 * the top of the call. A broken invariant aborts the process with the call's name and
 * vm_check's message ("vm_check: invariant 2: ..."); the caller's error message, if
 * the call failed, is left as it was. O(pages) per call: for tests, not production.
 */
#ifdef VM_DEBUG
typedef struct {
    vm_t *vm;
    const char *fn;
} vm_guard;

static void vm_guard_check(const vm_guard *g)
{
    char saved[sizeof g->vm->err];
    memcpy(saved, g->vm->err, sizeof saved);
    if (vm_check(g->vm) != VM_OK) {
        fprintf(stderr, "vmem core (debug build): %s left the page table broken: %s\n", g->fn, g->vm->err);
        abort();
    }
    memcpy(g->vm->err, saved, sizeof saved);
}
#define VM_CHECKED(t) \
    vm_guard vm_guard_ __attribute__((cleanup(vm_guard_check), unused)) = {(t), __func__}
#else
#define VM_CHECKED(t) ((void)0)
#endif

int vm_debug_build(void)
{
#ifdef VM_DEBUG
    return 1;
#else
    return 0;
#endif
}

/* ---------------------------------------------------------------- hash */

static inline uint64_t mix64(uint64_t x)
{ /* splitmix64 finaliser */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static inline int32_t find(const vm_t *vm, uint64_t id)
{
    uint32_t i = (uint32_t)mix64(id) & vm->hmask;
    for (;;) {
        uint32_t e = vm->hash[i];
        if (!e)
            return -1;
        if (vm->pages[e - 1].id == id)
            return (int32_t)(e - 1);
        i = (i + 1) & vm->hmask;
    }
}

static inline void hash_put(uint32_t *hash, uint32_t mask, uint64_t id, int32_t slot)
{
    uint32_t i = (uint32_t)mix64(id) & mask;
    while (hash[i])
        i = (i + 1) & mask;
    hash[i] = (uint32_t)slot + 1;
}

static void hash_del(vm_t *vm, uint64_t id)
{
    uint32_t m = vm->hmask, i = (uint32_t)mix64(id) & m;
    while (vm->pages[vm->hash[i] - 1].id != id)
        i = (i + 1) & m;
    for (uint32_t j = i;;) { /* backward-shift deletion */
        j = (j + 1) & m;
        if (!vm->hash[j])
            break;
        uint32_t home = (uint32_t)mix64(vm->pages[vm->hash[j] - 1].id) & m;
        /* move j into the hole at i unless its home lies cyclically in (i, j] */
        int keep = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (!keep) {
            vm->hash[i] = vm->hash[j];
            i = j;
        }
    }
    vm->hash[i] = 0;
}

/* Make room for `extra` more pages: slots, heap and hash, all or nothing. */
static int reserve_pages(vm_t *vm, size_t extra)
{
    size_t want = (size_t)vm->npages + extra;
    if (want > 0x7fffffffu)
        return fail(vm, VM_ENOMEM, "vm_add: more than 2^31 pages");
    size_t free_slots = (size_t)vm->cap - vm->npages;
    if (extra > free_slots) {
        size_t ncap = vm->cap ? vm->cap : 1024;
        while (ncap < want)
            ncap *= 2;
        vm_page *p = realloc(vm->pages, ncap * sizeof *p);
        if (!p)
            return fail(vm, VM_ENOMEM, "vm_add: out of memory for %zu pages", ncap);
        vm->pages = p;
        int32_t *h = realloc(vm->heap, ncap * sizeof *h);
        if (!h)
            return fail(vm, VM_ENOMEM, "vm_add: out of memory for the heap");
        vm->heap = h;
        vm->cap = (uint32_t)ncap;
    }
    size_t hcap = (size_t)vm->hmask + 1;
    if (want * 4 > hcap * 3) {
        size_t ncap = hcap;
        while (want * 4 > ncap * 3)
            ncap *= 2;
        uint32_t *nh = calloc(ncap, sizeof *nh);
        if (!nh)
            return fail(vm, VM_ENOMEM, "vm_add: out of memory for the hash");
        for (uint32_t s = 0; s < vm->hiwater; s++)
            if (vm->pages[s].region != VM_FREE)
                hash_put(nh, (uint32_t)ncap - 1, vm->pages[s].id, (int32_t)s);
        free(vm->hash);
        vm->hash = nh;
        vm->hmask = (uint32_t)ncap - 1;
    }
    return VM_OK;
}

static int32_t slot_alloc(vm_t *vm)
{ /* reserve_pages has made room */
    int32_t s = vm->free_head;
    if (s >= 0)
        vm->free_head = vm->pages[s].next;
    else
        s = (int32_t)vm->hiwater++;
    return s;
}

static void slot_free(vm_t *vm, int32_t s)
{
    vm->pages[s].region = VM_FREE;
    vm->pages[s].next = vm->free_head;
    vm->free_head = s;
}

/* ---------------------------------------------------------------- working-set heap */

/* 1 if a should be evicted before b: the one score of each policy. */
static inline int colder(const vm_t *vm, const vm_page *a, const vm_page *b)
{
    if (vm->cfg.policy == VM_LFU && a->touches != b->touches)
        return a->touches < b->touches;
    return a->last_touch < b->last_touch;
}

static inline void heap_set(vm_t *vm, uint32_t i, int32_t s)
{
    vm->heap[i] = s;
    vm->pages[s].prev = (int32_t)i;
}

static void sift_up(vm_t *vm, uint32_t i)
{
    int32_t s = vm->heap[i];
    while (i > 0) {
        uint32_t up = (i - 1) / 2;
        if (!colder(vm, &vm->pages[s], &vm->pages[vm->heap[up]]))
            break;
        heap_set(vm, i, vm->heap[up]);
        i = up;
    }
    heap_set(vm, i, s);
}

static void sift_down(vm_t *vm, uint32_t i)
{
    int32_t s = vm->heap[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= vm->nheap)
            break;
        if (c + 1 < vm->nheap && colder(vm, &vm->pages[vm->heap[c + 1]], &vm->pages[vm->heap[c]]))
            c++;
        if (!colder(vm, &vm->pages[vm->heap[c]], &vm->pages[s]))
            break;
        heap_set(vm, i, vm->heap[c]);
        i = c;
    }
    heap_set(vm, i, s);
}

static void heap_push(vm_t *vm, int32_t s)
{
    vm->heap[vm->nheap] = s;
    sift_up(vm, vm->nheap++);
}

static void heap_remove(vm_t *vm, uint32_t i)
{
    uint32_t last = --vm->nheap;
    if (i == last)
        return;
    int32_t moved = vm->heap[last];
    heap_set(vm, i, moved);
    sift_down(vm, i);
    sift_up(vm, (uint32_t)vm->pages[moved].prev);
}

/* Pop the coldest page; it is left at heap[nheap] (just past the heap). */
static int32_t heap_pop(vm_t *vm)
{
    int32_t s = vm->heap[0];
    uint32_t last = --vm->nheap;
    if (last > 0) {
        heap_set(vm, 0, vm->heap[last]);
        sift_down(vm, 0);
    }
    vm->heap[last] = s;
    return s;
}

static void heapify(vm_t *vm)
{
    for (uint32_t i = vm->nheap / 2; i-- > 0;)
        sift_down(vm, i);
}

/* ---------------------------------------------------------------- regions */

static inline int resident(int r) { return r != VM_OUT; }

/* Put slot s (its .region already set) into its region and account it. */
static void place(vm_t *vm, int32_t s)
{
    vm_page *p = &vm->pages[s];
    int r = p->region;
    vm->tokens[r] += p->tokens;
    vm->count[r]++;
    if (resident(r) && (p->flags & VM_PINNED))
        vm->pinned += p->tokens;
    if (r == VM_WORKSET) {
        heap_push(vm, s);
    } else if (r != VM_OUT) {
        p->next = -1;
        p->prev = vm->tail[r];
        if (vm->tail[r] >= 0)
            vm->pages[vm->tail[r]].next = s;
        else
            vm->head[r] = s;
        vm->tail[r] = s;
    }
}

/* Take slot s out of its region and its accounting. */
static void unplace(vm_t *vm, int32_t s)
{
    vm_page *p = &vm->pages[s];
    int r = p->region;
    vm->tokens[r] -= p->tokens;
    vm->count[r]--;
    if (resident(r) && (p->flags & VM_PINNED))
        vm->pinned -= p->tokens;
    if (r == VM_WORKSET) {
        heap_remove(vm, (uint32_t)p->prev);
    } else if (r != VM_OUT) {
        if (p->prev >= 0)
            vm->pages[p->prev].next = p->next;
        else
            vm->head[r] = p->next;
        if (p->next >= 0)
            vm->pages[p->next].prev = p->prev;
        else
            vm->tail[r] = p->prev;
    }
}

static void relocate(vm_t *vm, int32_t s, int r)
{
    unplace(vm, s);
    vm->pages[s].region = (uint8_t)r;
    place(vm, s);
}

static uint64_t used(const vm_t *vm)
{
    return vm->tokens[VM_SYSTEM] + vm->tokens[VM_CORE] + vm->tokens[VM_SUMMARY] +
           vm->tokens[VM_QUEUE] + vm->tokens[VM_WORKSET];
}

static inline void touch(vm_t *vm, int32_t s)
{
    vm_page *p = &vm->pages[s];
    p->last_touch = ++vm->seq;
    if (p->touches != UINT32_MAX)
        p->touches++;
    if (p->region == VM_WORKSET)
        sift_down(vm, (uint32_t)p->prev); /* both scores only ever cool down */
}

/* Would moving `tokens` (pinned or not) from region `from` to `to` break the
 * pinned or working-set budget? Returns VM_OK or VM_EBUDGET with a message. */
static int budget_check(vm_t *vm, const char *fn, uint64_t add_pinned, uint64_t add_ws,
                        uint64_t sub_pinned, uint64_t sub_ws)
{
    uint64_t pinned = vm->pinned + add_pinned - sub_pinned;
    uint64_t ws = vm->tokens[VM_WORKSET] + add_ws - sub_ws;
    if (pinned > vm->budget)
        return fail(vm, VM_EBUDGET, "%s: pinned pages would need %llu tokens, the budget is %llu",
                    fn, (unsigned long long)pinned, (unsigned long long)vm->budget);
    if (ws > vm->cfg.ws_budget)
        return fail(vm, VM_EBUDGET, "%s: the working set would hold %llu tokens, its budget is %llu",
                    fn, (unsigned long long)ws, (unsigned long long)vm->cfg.ws_budget);
    return VM_OK;
}

static int check_region(vm_t *vm, const char *fn, int region)
{
    if (region < 0 || region >= VM_NREGIONS)
        return fail(vm, VM_EINVAL, "%s: no region %d", fn, region);
    return VM_OK;
}

static int check_tokens(vm_t *vm, const char *fn, int64_t tokens)
{
    if (tokens < 0 || tokens > VM_MAX_PAGE_TOKENS)
        return fail(vm, VM_EINVAL, "%s: token count %lld is outside 0..%d", fn, (long long)tokens,
                    VM_MAX_PAGE_TOKENS);
    return VM_OK;
}

static int lookup(vm_t *vm, const char *fn, uint64_t id, int32_t *slot)
{
    *slot = find(vm, id);
    if (*slot < 0)
        return fail(vm, VM_ENOENT, "%s: no page %llu", fn, (unsigned long long)id);
    return VM_OK;
}

/* ---------------------------------------------------------------- lifecycle */

static void set_lines(vm_t *vm)
{
    vm->budget = vm->cfg.window - vm->cfg.reserve;
    vm->warn_line = (uint64_t)(vm->cfg.warn * (double)vm->budget);
    vm->flush_line = (uint64_t)(vm->cfg.flush * (double)vm->budget);
}

vm_t *vm_new(void)
{
    vm_t *vm = calloc(1, sizeof *vm);
    if (!vm)
        return NULL;
    vm->hash = calloc(1024, sizeof *vm->hash);
    if (!vm->hash) {
        free(vm);
        return NULL;
    }
    vm->hmask = 1023;
    vm->free_head = -1;
    for (int r = 0; r < VM_NREGIONS; r++)
        vm->head[r] = vm->tail[r] = -1;
    vm->cfg = (vm_config){.window = 8192, .reserve = 1024, .warn = 0.70, .flush = 1.0,
                          .target = 0.50, .keep_last = 3, .policy = VM_LRU, .ws_budget = 1024};
    set_lines(vm);
    return vm;
}

void vm_free(vm_t *vm)
{
    if (!vm)
        return;
    free(vm->pages);
    free(vm->heap);
    free(vm->hash);
    free(vm);
}

int vm_configure(vm_t *vm, const vm_config *c)
{
    VM_CHECKED(vm);
    const char *fn = "vm_configure";
    if (c->window == 0 || c->window > ((uint64_t)1 << 40))
        return fail(vm, VM_EINVAL, "%s: window %llu is outside 1..2^40", fn, (unsigned long long)c->window);
    if (c->reserve >= c->window)
        return fail(vm, VM_EINVAL, "%s: reserve %llu leaves no room in a window of %llu", fn,
                    (unsigned long long)c->reserve, (unsigned long long)c->window);
    if (!(c->warn > 0.0 && c->warn <= c->flush && c->flush <= 1.0))
        return fail(vm, VM_EINVAL, "%s: need 0 < warn <= flush <= 1, got warn %g, flush %g", fn, c->warn,
                    c->flush);
    if (!(c->target >= 0.0 && c->target < 1.0))
        return fail(vm, VM_EINVAL, "%s: need 0 <= target < 1, got %g", fn, c->target);
    if (c->policy != VM_LRU && c->policy != VM_LFU)
        return fail(vm, VM_EINVAL, "%s: no policy %u", fn, c->policy);
    uint64_t budget = c->window - c->reserve;
    if (c->ws_budget > budget)
        return fail(vm, VM_EINVAL, "%s: working-set budget %llu exceeds the budget %llu", fn,
                    (unsigned long long)c->ws_budget, (unsigned long long)budget);
    if (vm->pinned > budget)
        return fail(vm, VM_EBUDGET, "%s: pinned pages hold %llu tokens, more than the budget %llu", fn,
                    (unsigned long long)vm->pinned, (unsigned long long)budget);
    if (vm->tokens[VM_WORKSET] > c->ws_budget)
        return fail(vm, VM_EBUDGET, "%s: the working set holds %llu tokens, more than its new budget %llu",
                    fn, (unsigned long long)vm->tokens[VM_WORKSET], (unsigned long long)c->ws_budget);
    uint32_t old_policy = vm->cfg.policy;
    vm->cfg = *c;
    set_lines(vm);
    if (c->policy != old_policy)
        heapify(vm);
    return VM_OK;
}

void vm_get_config(const vm_t *vm, vm_config *c) { *c = vm->cfg; }

/* ---------------------------------------------------------------- pages */

static int32_t insert_page(vm_t *vm, uint64_t id, uint32_t tokens, int region, uint32_t flags,
                           uint32_t group)
{
    int32_t s = slot_alloc(vm);
    vm->pages[s] = (vm_page){.id = id, .tokens = tokens, .group = group,
                             .prev = -1, .next = -1, .region = (uint8_t)region, .flags = (uint8_t)flags};
    hash_put(vm->hash, vm->hmask, id, s);
    vm->npages++;
    place(vm, s);
    return s;
}

static void drop(vm_t *vm, int32_t s)
{
    unplace(vm, s);
    hash_del(vm, vm->pages[s].id);
    slot_free(vm, s);
    vm->npages--;
}

int vm_add(vm_t *vm, uint64_t id, int64_t tokens, int region, uint32_t flags, uint32_t group)
{
    VM_CHECKED(vm);
    const char *fn = "vm_add";
    int rc;
    if ((rc = check_tokens(vm, fn, tokens)) || (rc = check_region(vm, fn, region)))
        return rc;
    if (flags & ~(uint32_t)VM_FLAGS_ALL)
        return fail(vm, VM_EINVAL, "%s: unknown flags %#x", fn, flags);
    if (find(vm, id) >= 0)
        return fail(vm, VM_EEXIST, "%s: page %llu exists", fn, (unsigned long long)id);
    uint64_t t = (uint64_t)tokens;
    uint64_t pin = (resident(region) && (flags & VM_PINNED)) ? t : 0;
    if ((rc = budget_check(vm, fn, pin, region == VM_WORKSET ? t : 0, 0, 0)))
        return rc;
    if ((rc = reserve_pages(vm, 1)))
        return rc;
    int32_t s = insert_page(vm, id, (uint32_t)t, region, flags, group);
    if (region == VM_WORKSET)
        touch(vm, s);
    return VM_OK;
}

int vm_add_many(vm_t *vm, const uint64_t *ids, const uint32_t *tokens, size_t n, int region)
{
    VM_CHECKED(vm);
    const char *fn = "vm_add_many";
    int rc;
    if ((rc = check_region(vm, fn, region)))
        return rc;
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        if ((rc = check_tokens(vm, fn, tokens[i])))
            return rc;
        sum += tokens[i];
    }
    if ((rc = budget_check(vm, fn, 0, region == VM_WORKSET ? sum : 0, 0, 0)))
        return rc;
    if ((rc = reserve_pages(vm, n)))
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (find(vm, ids[i]) >= 0) { /* undo this batch: nothing half-done */
            for (size_t j = i; j-- > 0;)
                drop(vm, find(vm, ids[j]));
            return fail(vm, VM_EEXIST, "%s: page %llu exists (or repeats in the batch)", fn,
                        (unsigned long long)ids[i]);
        }
        insert_page(vm, ids[i], tokens[i], region, 0, 0);
    }
    if (region == VM_WORKSET) /* touched only once the batch is in */
        for (size_t i = 0; i < n; i++)
            touch(vm, find(vm, ids[i]));
    return VM_OK;
}

int vm_remove(vm_t *vm, uint64_t id)
{
    VM_CHECKED(vm);
    int32_t s;
    int rc;
    if ((rc = lookup(vm, "vm_remove", id, &s)))
        return rc;
    drop(vm, s);
    return VM_OK;
}

/* Validate a batch of ids: each exists, none repeats (marks are cleared again). */
static int check_batch(vm_t *vm, const char *fn, const uint64_t *ids, size_t n)
{
    int rc = VM_OK;
    size_t i;
    for (i = 0; i < n; i++) {
        int32_t s = find(vm, ids[i]);
        if (s < 0) {
            rc = fail(vm, VM_ENOENT, "%s: no page %llu", fn, (unsigned long long)ids[i]);
            break;
        }
        if (vm->pages[s].flags & VM_MARK) {
            rc = fail(vm, VM_EINVAL, "%s: page %llu repeats in the batch", fn, (unsigned long long)ids[i]);
            break;
        }
        vm->pages[s].flags |= VM_MARK;
    }
    for (size_t j = 0; j < i; j++)
        vm->pages[find(vm, ids[j])].flags &= (uint8_t)~VM_MARK;
    return rc;
}

int vm_remove_many(vm_t *vm, const uint64_t *ids, size_t n)
{
    VM_CHECKED(vm);
    int rc = check_batch(vm, "vm_remove_many", ids, n);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        drop(vm, find(vm, ids[i]));
    return VM_OK;
}

int vm_move(vm_t *vm, uint64_t id, int region)
{
    VM_CHECKED(vm);
    const char *fn = "vm_move";
    int32_t s;
    int rc;
    if ((rc = check_region(vm, fn, region)) || (rc = lookup(vm, fn, id, &s)))
        return rc;
    vm_page *p = &vm->pages[s];
    if (p->region == region)
        return VM_OK;
    uint64_t t = p->tokens, pinned = (p->flags & VM_PINNED) ? t : 0;
    rc = budget_check(vm, fn, resident(region) ? pinned : 0, region == VM_WORKSET ? t : 0,
                      resident(p->region) ? pinned : 0, p->region == VM_WORKSET ? t : 0);
    if (rc)
        return rc;
    relocate(vm, s, region);
    if (region == VM_WORKSET)
        touch(vm, s);
    return VM_OK;
}

int vm_move_many(vm_t *vm, const uint64_t *ids, size_t n, int region)
{
    VM_CHECKED(vm);
    const char *fn = "vm_move_many";
    int rc;
    if ((rc = check_region(vm, fn, region)))
        return rc;
    if ((rc = check_batch(vm, fn, ids, n)))
        return rc;
    uint64_t add_pin = 0, sub_pin = 0, add_ws = 0, sub_ws = 0;
    for (size_t i = 0; i < n; i++) {
        vm_page *p = &vm->pages[find(vm, ids[i])];
        if (p->region == region)
            continue;
        uint64_t t = p->tokens, pin = (p->flags & VM_PINNED) ? t : 0;
        add_pin += resident(region) ? pin : 0;
        sub_pin += resident(p->region) ? pin : 0;
        add_ws += region == VM_WORKSET ? t : 0;
        sub_ws += p->region == VM_WORKSET ? t : 0;
    }
    if ((rc = budget_check(vm, fn, add_pin, add_ws, sub_pin, sub_ws)))
        return rc;
    for (size_t i = 0; i < n; i++) {
        int32_t s = find(vm, ids[i]);
        if (vm->pages[s].region != region) {
            relocate(vm, s, region);
            if (region == VM_WORKSET)
                touch(vm, s);
        }
    }
    return VM_OK;
}

int vm_resize(vm_t *vm, uint64_t id, int64_t tokens)
{
    VM_CHECKED(vm);
    const char *fn = "vm_resize";
    int32_t s;
    int rc;
    if ((rc = check_tokens(vm, fn, tokens)) || (rc = lookup(vm, fn, id, &s)))
        return rc;
    vm_page *p = &vm->pages[s];
    uint64_t old = p->tokens, t = (uint64_t)tokens;
    int pinned = resident(p->region) && (p->flags & VM_PINNED);
    int ws = p->region == VM_WORKSET;
    if ((rc = budget_check(vm, fn, pinned ? t : 0, ws ? t : 0, pinned ? old : 0, ws ? old : 0)))
        return rc;
    vm->tokens[p->region] += t - old; /* unsigned wrap-around is exact here */
    if (pinned)
        vm->pinned += t - old;
    p->tokens = (uint32_t)t;
    return VM_OK;
}

int vm_set_flags(vm_t *vm, uint64_t id, uint32_t flags)
{
    VM_CHECKED(vm);
    const char *fn = "vm_set_flags";
    int32_t s;
    int rc;
    if (flags & ~(uint32_t)VM_FLAGS_ALL)
        return fail(vm, VM_EINVAL, "%s: unknown flags %#x", fn, flags);
    if ((rc = lookup(vm, fn, id, &s)))
        return rc;
    vm_page *p = &vm->pages[s];
    uint64_t t = resident(p->region) ? p->tokens : 0;
    uint64_t was = (p->flags & VM_PINNED) ? t : 0, will = (flags & VM_PINNED) ? t : 0;
    if ((rc = budget_check(vm, fn, will, 0, was, 0)))
        return rc;
    vm->pinned += will - was;
    p->flags = (uint8_t)flags;
    return VM_OK;
}

int vm_touch(vm_t *vm, uint64_t id)
{
    VM_CHECKED(vm);
    int32_t s;
    int rc;
    if ((rc = lookup(vm, "vm_touch", id, &s)))
        return rc;
    touch(vm, s);
    return VM_OK;
}

int vm_info(vm_t *vm, uint64_t id, vm_page_info *out)
{
    int32_t s;
    int rc;
    if ((rc = lookup(vm, "vm_info", id, &s)))
        return rc;
    const vm_page *p = &vm->pages[s];
    *out = (vm_page_info){.id = p->id, .last_touch = p->last_touch, .tokens = p->tokens,
                          .touches = p->touches, .group = p->group, .region = p->region,
                          .flags = p->flags};
    return VM_OK;
}

/* ---------------------------------------------------------------- accounting */

void vm_stats_get(const vm_t *vm, vm_stats *out)
{
    for (int r = 0; r < VM_NREGIONS; r++) {
        out->tokens[r] = vm->tokens[r];
        out->pages[r] = vm->count[r];
    }
    out->used = used(vm);
    out->budget = vm->budget;
    out->pinned = vm->pinned;
    out->seq = vm->seq;
}

/* OK below the warn line; WARN above it (need: tokens above the warn line);
 * OVER above the flush line (need: enough to get under the flush line, and at
 * least the part of the queue a flush gives up, (1 - target) of it). */
int vm_status(const vm_t *vm, uint64_t *need)
{
    uint64_t u = used(vm);
    if (u > vm->flush_line) {
        uint64_t q = vm->tokens[VM_QUEUE];
        uint64_t give = q - (uint64_t)(vm->cfg.target * (double)q);
        uint64_t over = u - vm->flush_line;
        *need = over > give ? over : give;
        return VM_STATE_OVER;
    }
    if (u > vm->warn_line) {
        *need = u - vm->warn_line;
        return VM_STATE_WARN;
    }
    *need = 0;
    return VM_STATE_OK;
}

/* ---------------------------------------------------------------- eviction planning */

/* Choose queue pages to free at least `need` tokens, oldest first. A run of an
 * atomic group is taken whole or skipped whole; pinned pages and the newest
 * keep_last pages are never taken (a group reaching into them is kept whole).
 * Pure: it changes nothing. VM_ENOSPACE (with *freed = the most that could be
 * freed, *n = 0) when the target cannot be reached. */
int vm_plan_evict(vm_t *vm, uint64_t need, uint64_t *out, size_t cap, size_t *n, uint64_t *freed)
{
    *n = 0;
    *freed = 0;
    if (need == 0)
        return VM_OK;
    int32_t guard = -1; /* the oldest protected page */
    int32_t s = vm->tail[VM_QUEUE];
    for (uint32_t k = 0; k < vm->cfg.keep_last && s >= 0; k++) {
        guard = s;
        s = vm->pages[s].prev;
    }
    size_t nout = 0;
    uint64_t got = 0;
    s = vm->head[VM_QUEUE];
    while (s >= 0 && s != guard && got < need) {
        uint32_t g = vm->pages[s].group;
        int32_t t = s;
        uint64_t run = 0;
        size_t len = 0;
        int pinned = 0, hit_guard = 0;
        do { /* one page, or the whole run of group g */
            if (t == guard) {
                hit_guard = 1;
                break;
            }
            pinned |= vm->pages[t].flags & VM_PINNED;
            run += vm->pages[t].tokens;
            len++;
            t = vm->pages[t].next;
        } while (g && t >= 0 && vm->pages[t].group == g);
        if (hit_guard)
            break;
        if (!pinned) {
            if (nout + len > cap)
                return fail(vm, VM_EINVAL, "vm_plan_evict: out holds %zu ids, the plan needs more", cap);
            for (int32_t u = s; u != t; u = vm->pages[u].next)
                out[nout++] = vm->pages[u].id;
            got += run;
        }
        s = t;
    }
    if (got < need) {
        *freed = got;
        return fail(vm, VM_ENOSPACE,
                    "vm_plan_evict: can free %llu of the %llu tokens asked for (the rest is pinned or "
                    "among the last %u messages)",
                    (unsigned long long)got, (unsigned long long)need, vm->cfg.keep_last);
    }
    *n = nout;
    *freed = got;
    return VM_OK;
}

/* ---------------------------------------------------------------- page-in admission */

/* Page candidates into the working set, most relevant (highest score) first.
 * First every resident candidate is touched, so no candidate of the call is
 * ever a victim; then each candidate in OUT is admitted if the working set can
 * make room for it by evicting its coldest pages, never a pinned one and never
 * one touched in this call; otherwise it is skipped.
 * admitted[] receives at most n ids; evicted[] at most the working set's page
 * count (cap_evicted must be at least that; else VM_EINVAL and *nevicted says
 * how many). Unknown ids or NaN scores: VM_EINVAL/VM_ENOENT, nothing done. */
int vm_admit(vm_t *vm, const uint64_t *ids, const float *scores, size_t n,
             uint64_t *admitted, size_t *nadmitted,
             uint64_t *evicted, size_t cap_evicted, size_t *nevicted)
{
    VM_CHECKED(vm);
    const char *fn = "vm_admit";
    int32_t slot[VM_MAX_CANDIDATES];
    uint16_t order[VM_MAX_CANDIDATES];
    *nadmitted = 0;
    *nevicted = 0;
    if (n > VM_MAX_CANDIDATES)
        return fail(vm, VM_EINVAL, "%s: %zu candidates, at most %d", fn, n, VM_MAX_CANDIDATES);
    if (cap_evicted < vm->count[VM_WORKSET]) {
        *nevicted = (size_t)vm->count[VM_WORKSET];
        return fail(vm, VM_EINVAL, "%s: evicted holds %zu ids, the working set has %zu pages", fn,
                    cap_evicted, *nevicted);
    }
    for (size_t i = 0; i < n; i++) {
        if (isnan(scores[i]))
            return fail(vm, VM_EINVAL, "%s: candidate %zu has a NaN score", fn, i);
        if ((slot[i] = find(vm, ids[i])) < 0)
            return fail(vm, VM_ENOENT, "%s: no page %llu", fn, (unsigned long long)ids[i]);
        /* insertion sort by descending score, stable */
        size_t j = i;
        while (j > 0 && scores[order[j - 1]] < scores[i]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = (uint16_t)i;
    }
    uint64_t call_start = vm->seq + 1; /* pages touched in this call have last_touch >= this */
    size_t na = 0, ne = 0;
    for (size_t k = 0; k < n; k++) /* resident candidates first: touched, so never victims */
        if (vm->pages[slot[order[k]]].region != VM_OUT)
            touch(vm, slot[order[k]]);
    for (size_t k = 0; k < n; k++) {
        int32_t s = slot[order[k]];
        vm_page *p = &vm->pages[s];
        if (p->region != VM_OUT) /* touched above, or a repeated candidate admitted above */
            continue;
        if (p->tokens > vm->cfg.ws_budget)
            continue;
        uint64_t ws = vm->tokens[VM_WORKSET];
        uint64_t over = ws + p->tokens > vm->cfg.ws_budget ? ws + p->tokens - vm->cfg.ws_budget : 0;
        if (over) {
            /* pop coldest pages until enough evictable tokens are found;
             * popped slots collect at heap[nheap..top) in reverse pop order */
            uint32_t top = vm->nheap;
            uint64_t got = 0;
            while (got < over && vm->nheap > 0) {
                vm_page *v = &vm->pages[heap_pop(vm)];
                if (!(v->flags & VM_PINNED) && v->last_touch < call_start)
                    got += v->tokens;
            }
            int enough = got >= over;
            if (enough) { /* victims in pop order: coldest first */
                for (uint32_t i = top; i-- > vm->nheap;) {
                    vm_page *v = &vm->pages[vm->heap[i]];
                    if (!(v->flags & VM_PINNED) && v->last_touch < call_start)
                        evicted[ne++] = v->id;
                }
            }
            for (uint32_t i = vm->nheap; i < top; i++) {
                int32_t v = vm->heap[i];
                vm_page *vp = &vm->pages[v];
                if (enough && !(vp->flags & VM_PINNED) && vp->last_touch < call_start) {
                    vm->tokens[VM_WORKSET] -= vp->tokens;
                    vm->count[VM_WORKSET]--;
                    vm->tokens[VM_OUT] += vp->tokens;
                    vm->count[VM_OUT]++;
                    vp->region = VM_OUT;
                } else {
                    heap_push(vm, v); /* writes heap[nheap] with nheap <= i: safe */
                }
            }
            if (!enough)
                continue;
        }
        relocate(vm, s, VM_WORKSET);
        touch(vm, s);
        admitted[na++] = p->id;
    }
    *nadmitted = na;
    *nevicted = ne;
    return VM_OK;
}

/* ---------------------------------------------------------------- listing */

size_t vm_list(const vm_t *vm, int region, uint64_t *out, size_t cap)
{
    size_t k = 0;
    if (region < 0 || region >= VM_NREGIONS)
        return 0;
    if (region == VM_WORKSET) {
        for (uint32_t i = 0; i < vm->nheap; i++, k++)
            if (k < cap)
                out[k] = vm->pages[vm->heap[i]].id;
    } else if (region == VM_OUT) {
        for (uint32_t s = 0; s < vm->hiwater; s++)
            if (vm->pages[s].region == VM_OUT && k++ < cap)
                out[k - 1] = vm->pages[s].id;
    } else {
        for (int32_t s = vm->head[region]; s >= 0; s = vm->pages[s].next, k++)
            if (k < cap)
                out[k] = vm->pages[s].id;
    }
    return k;
}

size_t vm_count(const vm_t *vm) { return vm->npages; }

size_t vm_memory(const vm_t *vm)
{
    return sizeof *vm + (size_t)vm->cap * (sizeof(vm_page) + sizeof(int32_t)) +
           ((size_t)vm->hmask + 1) * sizeof(uint32_t);
}

/* ---------------------------------------------------------------- copy */

/* Make dst an exact copy of src (what a rollback restores). dst's buffers are
 * reused when they are large enough, so copying into the same dst again does
 * not allocate; on VM_ENOMEM dst is unchanged. */
int vm_copy(vm_t *dst, const vm_t *src)
{
    VM_CHECKED(dst);
    if (dst == src)
        return VM_OK;
    size_t hsize = (size_t)src->hmask + 1;
    vm_page *pages = dst->pages;
    int32_t *heap = dst->heap;
    uint32_t cap = dst->cap;
    uint32_t *hash = dst->hash;
    if (cap < src->hiwater) {
        cap = src->cap;
        pages = malloc((size_t)cap * sizeof *pages);
        heap = malloc((size_t)cap * sizeof *heap);
        if (!pages || !heap) {
            free(pages);
            free(heap);
            return fail(dst, VM_ENOMEM, "vm_copy: out of memory for %u pages", cap);
        }
    }
    if (dst->hmask != src->hmask) {
        hash = malloc(hsize * sizeof *hash);
        if (!hash) {
            if (pages != dst->pages) {
                free(pages);
                free(heap);
            }
            return fail(dst, VM_ENOMEM, "vm_copy: out of memory for the hash");
        }
    }
    if (pages != dst->pages) {
        free(dst->pages);
        free(dst->heap);
    }
    if (hash != dst->hash)
        free(dst->hash);
    *dst = *src; /* scalars, list heads, counters, config, lines */
    dst->pages = pages;
    dst->heap = heap;
    dst->cap = cap;
    dst->hash = hash;
    if (src->hiwater)
        memcpy(pages, src->pages, (size_t)src->hiwater * sizeof *pages);
    if (src->nheap)
        memcpy(heap, src->heap, (size_t)src->nheap * sizeof *heap);
    memcpy(hash, src->hash, hsize * sizeof *hash);
    return VM_OK;
}

/* ---------------------------------------------------------------- snapshot */

/* Image (little-endian):
 *   "VMEMCORE" u32 version u32 page_size
 *   config: u64 window, reserve; f64 warn, flush, target; u32 keep_last, policy; u64 ws_budget
 *   u64 seq, u64 npages
 *   npages x { u64 id, last_touch; u32 tokens, touches, group; u8 region, flags; u16 0 }
 *   for r in SYSTEM..WORKSET: u64 count, count x u32 (index into the pages above,
 *     in list order; the working set in heap order)
 *   u64 FNV-1a of everything before
 * Pages are written in slot order and restored into slots 0..n-1, so a
 * snapshot of a restored core is byte-identical to the one it came from. */

#define SNAP_MAGIC "VMEMCORE"
#define SNAP_VERSION 1u
#define SNAP_PAGE 32u
#define SNAP_HEAD (8 + 4 + 4 + 8 * 2 + 8 * 3 + 4 * 2 + 8 + 8 + 8)

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

size_t vm_snapshot_size(const vm_t *vm)
{
    uint64_t resident_pages = vm->npages - vm->count[VM_OUT];
    return SNAP_HEAD + (size_t)vm->npages * SNAP_PAGE + 5 * 8 + (size_t)resident_pages * 4 + 8;
}

#define PUT(ptr, v)                         \
    do {                                    \
        __typeof__(v) put_v_ = (v);         \
        memcpy((ptr), &put_v_, sizeof put_v_); \
        (ptr) += sizeof put_v_;             \
    } while (0)

int vm_snapshot(vm_t *vm, uint8_t *buf, size_t cap, size_t *written)
{
    size_t size = vm_snapshot_size(vm);
    *written = 0;
    if (cap < size)
        return fail(vm, VM_EINVAL, "vm_snapshot: buffer holds %zu bytes, need %zu", cap, size);
    uint8_t *w = buf;
    memcpy(w, SNAP_MAGIC, 8);
    w += 8;
    PUT(w, (uint32_t)SNAP_VERSION);
    PUT(w, (uint32_t)SNAP_PAGE);
    PUT(w, vm->cfg.window);
    PUT(w, vm->cfg.reserve);
    PUT(w, vm->cfg.warn);
    PUT(w, vm->cfg.flush);
    PUT(w, vm->cfg.target);
    PUT(w, vm->cfg.keep_last);
    PUT(w, vm->cfg.policy);
    PUT(w, vm->cfg.ws_budget);
    PUT(w, vm->seq);
    PUT(w, (uint64_t)vm->npages);
    for (uint32_t s = 0; s < vm->hiwater; s++) {
        const vm_page *p = &vm->pages[s];
        if (p->region == VM_FREE)
            continue;
        PUT(w, p->id);
        PUT(w, p->last_touch);
        PUT(w, p->tokens);
        PUT(w, p->touches);
        PUT(w, p->group);
        PUT(w, p->region);
        PUT(w, p->flags);
        PUT(w, (uint16_t)0);
    }
    /* a list entry is the page's index in the image: its rank among live slots */
    uint32_t *rank = (uint32_t *)malloc((size_t)vm->hiwater * sizeof *rank + 1);
    if (!rank)
        return fail(vm, VM_ENOMEM, "vm_snapshot: out of memory");
    for (uint32_t s = 0, r = 0; s < vm->hiwater; s++)
        rank[s] = vm->pages[s].region == VM_FREE ? UINT32_MAX : r++;
    for (int r = VM_SYSTEM; r <= VM_WORKSET; r++) {
        PUT(w, vm->count[r]);
        if (r == VM_WORKSET) {
            for (uint32_t i = 0; i < vm->nheap; i++)
                PUT(w, rank[vm->heap[i]]);
        } else {
            for (int32_t s = vm->head[r]; s >= 0; s = vm->pages[s].next)
                PUT(w, rank[s]);
        }
    }
    free(rank);
    PUT(w, fnv1a(buf, (size_t)(w - buf)));
    *written = (size_t)(w - buf);
    return VM_OK;
}

#define GET(ptr, v)                      \
    do {                                 \
        memcpy(&(v), (ptr), sizeof(v));  \
        (ptr) += sizeof(v);              \
    } while (0)

int vm_restore(vm_t *vm, const uint8_t *buf, size_t n)
{
    VM_CHECKED(vm);
    const char *fn = "vm_restore";
    if (n < SNAP_HEAD + 5 * 8 + 8 || memcmp(buf, SNAP_MAGIC, 8) != 0)
        return fail(vm, VM_ECORRUPT, "%s: not a vmem core snapshot", fn);
    uint64_t sum;
    memcpy(&sum, buf + n - 8, 8);
    if (fnv1a(buf, n - 8) != sum)
        return fail(vm, VM_ECORRUPT, "%s: checksum mismatch (the snapshot is damaged)", fn);
    const uint8_t *r = buf + 8;
    uint32_t version, page_size;
    GET(r, version);
    GET(r, page_size);
    if (version != SNAP_VERSION || page_size != SNAP_PAGE)
        return fail(vm, VM_ECORRUPT, "%s: snapshot version %u is not %u", fn, version, SNAP_VERSION);
    vm_config c;
    GET(r, c.window);
    GET(r, c.reserve);
    GET(r, c.warn);
    GET(r, c.flush);
    GET(r, c.target);
    GET(r, c.keep_last);
    GET(r, c.policy);
    GET(r, c.ws_budget);
    uint64_t seq, npages;
    GET(r, seq);
    GET(r, npages);
    const uint8_t *end = buf + n - 8;
    if (npages > 0x7fffffffu || (uint64_t)(end - r) < npages * SNAP_PAGE + 5 * 8)
        return fail(vm, VM_ECORRUPT, "%s: truncated page table", fn);

    vm_t *t = vm_new();
    if (!t)
        return fail(vm, VM_ENOMEM, "%s: out of memory", fn);
    int rc;
    /* configure on an empty core cannot hit a budget error */
    if ((rc = vm_configure(t, &c)) != VM_OK) {
        fail(vm, VM_ECORRUPT, "%s: bad configuration: %s", fn, t->err);
        vm_free(t);
        return VM_ECORRUPT;
    }
    if ((rc = reserve_pages(t, (size_t)npages)) != VM_OK) {
        vm_free(t);
        return fail(vm, rc, "%s: out of memory for %llu pages", fn, (unsigned long long)npages);
    }
#define BAD(...)                                \
    do {                                        \
        fail(vm, VM_ECORRUPT, __VA_ARGS__);     \
        vm_free(t);                             \
        return VM_ECORRUPT;                     \
    } while (0)
    for (uint64_t i = 0; i < npages; i++) {
        vm_page p = {0};
        GET(r, p.id);
        GET(r, p.last_touch);
        GET(r, p.tokens);
        GET(r, p.touches);
        GET(r, p.group);
        GET(r, p.region);
        GET(r, p.flags);
        r += 2;
        if (p.region >= VM_NREGIONS || (p.flags & ~VM_FLAGS_ALL) || p.tokens > VM_MAX_PAGE_TOKENS ||
            p.last_touch > seq)
            BAD("%s: page %llu has an invalid record", fn, (unsigned long long)i);
        if (find(t, p.id) >= 0)
            BAD("%s: page id %llu repeats", fn, (unsigned long long)p.id);
        p.prev = p.next = -1;
        int32_t s = slot_alloc(t);
        t->pages[s] = p;
        hash_put(t->hash, t->hmask, p.id, s);
        t->npages++;
        if (p.region == VM_OUT) {
            t->tokens[VM_OUT] += p.tokens;
            t->count[VM_OUT]++;
        } else {
            t->pages[s].region = VM_FREE; /* placed when its list entry is read */
            t->pages[s].next = p.region;  /* remember the region meanwhile */
        }
    }
    t->seq = seq;
    for (int reg = VM_SYSTEM; reg <= VM_WORKSET; reg++) {
        uint64_t cnt;
        if ((uint64_t)(end - r) < 8)
            BAD("%s: truncated region lists", fn);
        GET(r, cnt);
        if (cnt > npages || (uint64_t)(end - r) < cnt * 4)
            BAD("%s: truncated region lists", fn);
        for (uint64_t k = 0; k < cnt; k++) {
            uint32_t ix;
            GET(r, ix);
            if (ix >= npages || t->pages[ix].region != VM_FREE || t->pages[ix].next != reg)
                BAD("%s: region %d lists page %u wrongly", fn, reg, ix);
            t->pages[ix].region = (uint8_t)reg;
            t->pages[ix].next = -1;
            if (reg == VM_WORKSET) { /* keep the saved heap order exactly */
                t->tokens[reg] += t->pages[ix].tokens;
                t->count[reg]++;
                if (t->pages[ix].flags & VM_PINNED)
                    t->pinned += t->pages[ix].tokens;
                heap_set(t, t->nheap++, (int32_t)ix);
            } else {
                place(t, (int32_t)ix);
            }
        }
    }
    if (r != end)
        BAD("%s: %zu trailing bytes", fn, (size_t)(end - r));
    for (uint32_t s = 0; s < t->hiwater; s++)
        if (t->pages[s].region == VM_FREE)
            BAD("%s: page %u is in no region list", fn, s);
    if (vm_check(t) != VM_OK)
        BAD("%s: inconsistent snapshot: %s", fn, t->err);
#undef BAD
    /* commit: swap the new state in */
    vm_t old = *vm;
    *vm = *t;
    memcpy(vm->err, old.err, sizeof vm->err);
    *t = old;
    vm_free(t);
    return VM_OK;
}

/* ---------------------------------------------------------------- invariants */

/* CHECK(n, cond, fmt, ...): invariant n of this file's header holds, or vm_check fails
 * with "vm_check: invariant n: <what broke>". */
#define CHECK(n, cond, ...)                                                        \
    do {                                                                           \
        if (!(cond))                                                               \
            return fail(vm, VM_ECHECK, "vm_check: invariant " #n ": " __VA_ARGS__); \
    } while (0)

int vm_check(vm_t *vm)
{
    uint64_t tok[VM_NREGIONS] = {0}, cnt[VM_NREGIONS] = {0}, pinned = 0, live = 0;
    for (uint32_t s = 0; s < vm->hiwater; s++) {
        const vm_page *p = &vm->pages[s];
        if (p->region == VM_FREE)
            continue;
        CHECK(1, p->region < VM_NREGIONS, "page %llu has region %u", (unsigned long long)p->id,
              p->region);
        CHECK(4, find(vm, p->id) == (int32_t)s, "page %llu is not found by its id",
              (unsigned long long)p->id);
        CHECK(6, p->last_touch <= vm->seq, "page %llu touched in the future",
              (unsigned long long)p->id);
        CHECK(8, !(p->flags & ~VM_FLAGS_ALL), "page %llu has stray flags",
              (unsigned long long)p->id);
        tok[p->region] += p->tokens;
        cnt[p->region]++;
        if (resident(p->region) && (p->flags & VM_PINNED))
            pinned += p->tokens;
        live++;
    }
    CHECK(1, live == vm->npages, "%llu live pages, counted %u", (unsigned long long)live,
          vm->npages);
    for (int r = 0; r < VM_NREGIONS; r++) {
        CHECK(1, tok[r] == vm->tokens[r], "region %d holds %llu tokens, accounted %llu", r,
              (unsigned long long)tok[r], (unsigned long long)vm->tokens[r]);
        CHECK(1, cnt[r] == vm->count[r], "region %d holds %llu pages, accounted %llu", r,
              (unsigned long long)cnt[r], (unsigned long long)vm->count[r]);
    }
    CHECK(1, pinned == vm->pinned, "pinned tokens %llu, accounted %llu",
          (unsigned long long)pinned, (unsigned long long)vm->pinned);
    CHECK(5, pinned <= vm->budget, "pinned tokens %llu exceed the budget %llu",
          (unsigned long long)pinned, (unsigned long long)vm->budget);
    CHECK(5, vm->tokens[VM_WORKSET] <= vm->cfg.ws_budget, "working set over its budget");
    for (int r = VM_SYSTEM; r <= VM_QUEUE; r++) {
        uint64_t k = 0;
        int32_t prev = -1;
        for (int32_t s = vm->head[r]; s >= 0; prev = s, s = vm->pages[s].next, k++) {
            CHECK(2, k < cnt[r], "region %d list is longer than the region (a cycle?)", r);
            CHECK(2, vm->pages[s].region == r, "region %d list holds a page of region %u", r,
                  vm->pages[s].region);
            CHECK(2, vm->pages[s].prev == prev, "region %d list has a broken back link", r);
        }
        CHECK(2, k == cnt[r], "region %d list holds %llu of its %llu pages", r,
              (unsigned long long)k, (unsigned long long)cnt[r]);
        CHECK(2, vm->tail[r] == prev, "region %d tail is not the last page", r);
    }
    CHECK(3, vm->nheap == cnt[VM_WORKSET], "heap holds %u of the working set's %llu pages",
          vm->nheap, (unsigned long long)cnt[VM_WORKSET]);
    for (uint32_t i = 0; i < vm->nheap; i++) {
        const vm_page *p = &vm->pages[vm->heap[i]];
        CHECK(3, p->region == VM_WORKSET && p->prev == (int32_t)i,
              "heap entry %u is not a working-set page at its position", i);
        CHECK(3, i == 0 || !colder(vm, p, &vm->pages[vm->heap[(i - 1) / 2]]),
              "heap entry %u is colder than its parent", i);
    }
    uint64_t used_entries = 0;
    for (uint32_t i = 0; i <= vm->hmask; i++)
        used_entries += vm->hash[i] != 0;
    CHECK(4, used_entries == vm->npages, "hash holds %llu entries for %u pages",
          (unsigned long long)used_entries, vm->npages);
    uint32_t nfree = 0;
    for (int32_t s = vm->free_head; s >= 0; s = vm->pages[s].next, nfree++) {
        CHECK(7, nfree < vm->hiwater, "free-slot chain has a cycle");
        CHECK(7, vm->pages[s].region == VM_FREE, "free-slot chain holds a live page");
    }
    CHECK(7, nfree + vm->npages == vm->hiwater, "%u free + %u live slots != %u used", nfree,
          vm->npages, vm->hiwater);
    return VM_OK;
}
