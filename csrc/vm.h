/*
 * vm.h: the vmem core, a paged context buffer with token-budget accounting.
 *
 * Interface:
 *   vm_new, vm_free                  create / destroy a core
 *   vm_configure, vm_get_config      window, reserve, watermarks, working-set budget, policy
 *   vm_add, vm_add_many, vm_remove,  register / unregister pages (by 64-bit id)
 *   vm_remove_many
 *   vm_move, vm_move_many, vm_resize move pages between regions, change token counts
 *   vm_set_flags, vm_touch, vm_info  flags (pinned), access stats, one page's record
 *   vm_stats, vm_status              per-region accounting; OK / WARN / OVER + tokens to free
 *   vm_plan_evict                    which queue pages to evict to free N tokens (pure)
 *   vm_admit                         page candidates into the working set (batch)
 *   vm_list                          a region's page ids in region order
 *   vm_snapshot*, vm_restore         the whole state to bytes and back, exactly
 *   vm_copy                          one core's whole state into another (rollback)
 *   vm_check                         verify every invariant (the message names it)
 *   vm_debug_build                   1 if every change is checked (a VM_DEBUG build)
 *   vm_estimate_tokens               a fast token estimate of UTF-8 text
 *
 * Every function that can fail returns VM_OK (0) or a negative vm_err code and
 * leaves the state unchanged on failure; vm_errmsg() says "function: reason".
 * The core does no I/O, holds no Python objects, and calls back into nothing.
 * It is not thread-safe: callers serialise access to one vm (the Python
 * wrapper holds a lock per instance).
 *
 * This header is also the cffi cdef: csrc/build_vmcore.py strips the
 * preprocessor lines, so keep declarations within what cffi parses.
 */
#ifndef VMEM_VM_H
#define VMEM_VM_H

#include <stddef.h>
#include <stdint.h>

typedef struct vm vm_t;

/* Regions. VM_OUT: registered but not resident (the page lives in recall or
 * archival storage, which the Python side owns). The others are the parts of
 * the main context, in the order the context is compiled. */
enum vm_region {
    VM_OUT = 0,
    VM_SYSTEM = 1,
    VM_CORE = 2,
    VM_SUMMARY = 3,
    VM_QUEUE = 4,
    VM_WORKSET = 5,
    VM_NREGIONS = 6
};

enum vm_flag { VM_PINNED = 1, VM_FLAGS_ALL = 1 };

enum vm_state { VM_STATE_OK = 0, VM_STATE_WARN = 1, VM_STATE_OVER = 2 };

/* Working-set eviction policies: each reduces to one score, higher = evict
 * first. LRU: least recently touched. LFU: fewest touches, then LRU. */
enum vm_policy { VM_LRU = 0, VM_LFU = 1 };

enum vm_err {
    VM_OK = 0,
    VM_ENOENT = -1,   /* no page with that id */
    VM_EEXIST = -2,   /* a page with that id already exists */
    VM_EINVAL = -3,   /* an argument is out of range */
    VM_ENOSPACE = -4, /* eviction cannot free the tokens asked for */
    VM_EBUDGET = -5,  /* the budget cannot hold what must stay resident */
    VM_ENOMEM = -6,   /* out of memory */
    VM_ECORRUPT = -7, /* a snapshot is malformed */
    VM_ECHECK = -8    /* vm_check found a broken invariant */
};

enum vm_limits {
    VM_MAX_PAGE_TOKENS = 268435456, /* 2^28: more than any context window */
    VM_MAX_CANDIDATES = 4096        /* per vm_admit call */
};

typedef struct vm_config {
    uint64_t window;    /* context window, tokens */
    uint64_t reserve;   /* kept free: output + tool schemas */
    double warn;        /* warning watermark, fraction of the budget (0.70) */
    double flush;       /* flush watermark, fraction of the budget (1.00) */
    double target;      /* fraction of the queue's tokens kept by a flush (0.50) */
    uint32_t keep_last; /* the newest queue pages that eviction never takes */
    uint32_t policy;    /* enum vm_policy, for the working set */
    uint64_t ws_budget; /* the working set's own token budget */
} vm_config;

typedef struct vm_page_info {
    uint64_t id;
    uint64_t last_touch; /* sequence number of the last touch */
    uint32_t tokens;
    uint32_t touches;
    uint32_t group; /* atomic group (0: none); see vm_plan_evict */
    uint8_t region;
    uint8_t flags;
} vm_page_info;

typedef struct vm_stats {
    uint64_t tokens[6]; /* per region; tokens[VM_OUT] is what lives in storage */
    uint64_t pages[6];
    uint64_t used;   /* resident tokens: sum of tokens[1..5] */
    uint64_t budget; /* window - reserve */
    uint64_t pinned; /* resident pinned tokens */
    uint64_t seq;    /* the access sequence counter */
} vm_stats;

vm_t *vm_new(void);
void vm_free(vm_t *vm);
const char *vm_errmsg(const vm_t *vm);

int vm_configure(vm_t *vm, const vm_config *cfg);
void vm_get_config(const vm_t *vm, vm_config *cfg);

int vm_add(vm_t *vm, uint64_t id, int64_t tokens, int region, uint32_t flags, uint32_t group);
int vm_add_many(vm_t *vm, const uint64_t *ids, const uint32_t *tokens, size_t n, int region);
int vm_remove(vm_t *vm, uint64_t id);
int vm_remove_many(vm_t *vm, const uint64_t *ids, size_t n);
int vm_move(vm_t *vm, uint64_t id, int region);
int vm_move_many(vm_t *vm, const uint64_t *ids, size_t n, int region);
int vm_resize(vm_t *vm, uint64_t id, int64_t tokens);
int vm_set_flags(vm_t *vm, uint64_t id, uint32_t flags);
int vm_touch(vm_t *vm, uint64_t id);
int vm_info(vm_t *vm, uint64_t id, vm_page_info *out);

void vm_stats_get(const vm_t *vm, vm_stats *out);
int vm_status(const vm_t *vm, uint64_t *need);

int vm_plan_evict(vm_t *vm, uint64_t need, uint64_t *out, size_t cap, size_t *n, uint64_t *freed);
int vm_admit(vm_t *vm, const uint64_t *ids, const float *scores, size_t n,
             uint64_t *admitted, size_t *nadmitted,
             uint64_t *evicted, size_t cap_evicted, size_t *nevicted);

size_t vm_list(const vm_t *vm, int region, uint64_t *out, size_t cap);
size_t vm_count(const vm_t *vm);
size_t vm_memory(const vm_t *vm);

size_t vm_snapshot_size(const vm_t *vm);
int vm_snapshot(vm_t *vm, uint8_t *buf, size_t cap, size_t *written);
int vm_restore(vm_t *vm, const uint8_t *buf, size_t n);
int vm_copy(vm_t *dst, const vm_t *src);

int vm_check(vm_t *vm);
int vm_debug_build(void); /* 1: built with VM_DEBUG, every change checked (see vm.c) */

uint64_t vm_estimate_tokens(const char *text, size_t n);
void vm_estimate_tokens_many(const char *text, const uint64_t *offsets, size_t n, uint32_t *out);

#endif
