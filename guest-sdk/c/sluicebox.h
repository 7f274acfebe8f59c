/*
 * sluicebox.h: write sluicebox filters in C. ONE header, no libc, sluicebox filter ABI v1.
 *
 *     #define SLUICEBOX_IMPLEMENTATION      // in exactly one .c file of the module
 *     #include "sluicebox.h"
 *
 *     static bool drop_debug(const sb_event *e) {
 *         return !sb_str_eq(sb_get(e, "level"), "DEBUG");   // true keeps the event
 *     }
 *     SLUICEBOX_FILTER(drop_debug, "level")                 // ask the host to index `level` only
 *
 * Build (freestanding, no libc, no imports):
 *
 *     clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry -Wl,--export-dynamic -Wl,--stack-first f.c -o f.wasm
 *
 * Concepts
 *
 * - One filter per module: SLUICEBOX_FILTER(fn, paths...) with `bool fn(const sb_event *)`
 *   (true keeps), SLUICEBOX_MAP(fn, paths...) with `void fn(const sb_event *, sb_edits *)`, or
 *   SLUICEBOX_FLAT_MAP(fn, paths...) with `void fn(const sb_event *, sb_emitter *)`; optionally
 *   SLUICEBOX_INIT(fn) with `const char *fn(const sb_params *)` (NULL accepts the parameters, a
 *   message rejects them). Each macro defines the module's exports.
 * - The paths after `fn` ask the host for a projected index: one node per path per event, much
 *   cheaper than a full index. With no paths every event is fully indexed and comes with its raw
 *   bytes. Put SB_RAW among the paths to get raw bytes along with them.
 * - Paths: keys separated by `.` (`http.method`); a `.` or `\` inside a key is written `\.` or
 *   `\\`. Keys compare after JSON unescaping; when an object repeats a key, the last one wins.
 *   In a projected module only the declared paths can be looked up, compared as text.
 * - sb_value: one JSON value, a view into the host's batch (no copy). sb_get() never fails: a
 *   missing path gives kind SB_MISSING, and every accessor checks the kind. Every pointer and
 *   length the host hands over is checked against the memory size before it is read.
 * - sb_edits / sb_emitter: append records to one buffer reused for every batch; the verdict
 *   follows from the calls (see sb_edits). Strings passed in are copied, so they may be
 *   temporaries.
 * - Memory: a bump allocator (sb_alloc, also exported as `sluicebox_alloc`) that never frees,
 *   except that the block allocated last can grow in place. The SDK's own buffers grow
 *   geometrically and are reused, so the steady state allocates nothing.
 *
 * Options (define before including): SLUICEBOX_NO_MEMFUNCS to not define memcpy, memmove,
 * memset and memcmp (when linking a libc).
 *
 * Everything the header defines has hidden visibility (clang's default on wasm), so the module
 * exports only `memory` and the `sluicebox_*` functions.
 */
#ifndef SLUICEBOX_H
#define SLUICEBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SB_API __attribute__((visibility("hidden")))

/* ---- ABI v1 constants (abi/src/lib.rs is the contract) ---------------------------------- */

#define SB_ABI_VERSION 1u

/* Status codes of sluicebox_init / sluicebox_filter. */
#define SB_STATUS_OK 0
#define SB_ERR_FAILED (-1)
#define SB_ERR_BAD_CONFIG (-2)
#define SB_ERR_OUT_OF_MEMORY (-3)
#define SB_ERR_BAD_INPUT (-4)
#define SB_ERR_UNSUPPORTED (-5)

/* The kind of a value; the numbers are the ABI's node kinds. */
typedef enum sb_kind {
    SB_MISSING = 0, /* the path is absent (or not declared, or malformed) */
    SB_NULL = 1,
    SB_FALSE = 2,
    SB_TRUE = 3,
    SB_NUMBER = 4, /* the bytes are the number's text as written */
    SB_STRING = 5, /* the bytes are the text between the quotes, escapes not decoded */
    SB_OBJECT = 6, /* the bytes are the whole text, brackets included */
    SB_ARRAY = 7
} sb_kind;

/* The verdict of one event. */
typedef enum sb_verdict {
    SB_KEEP = 0,
    SB_DROP = 1,
    SB_EDIT = 2,
    SB_REPLACE = 3,
    SB_FAIL = 4
} sb_verdict;

/* Levels of sb_log. */
typedef enum sb_log_level { SB_LOG_ERROR = 0, SB_LOG_WARN = 1, SB_LOG_INFO = 2, SB_LOG_DEBUG = 3 } sb_log_level;

/* A path in the field list that asks for raw bytes along with the projected index. */
#define SB_RAW ((const char *)0)

/* ---- Types --------------------------------------------------------------------------------- */

/* Bytes that are not NUL-terminated. */
typedef struct sb_bytes {
    const char *ptr;
    uint32_t len;
} sb_bytes;

struct sb__spec;

/* One event of the batch. Valid only during the callback. */
typedef struct sb_event {
    uint32_t index;        /* position in the batch */
    const uint8_t *nodes;  /* this event's nodes (24 bytes each) */
    uint32_t node_count;
    const uint8_t *data;   /* the batch's data region */
    uint32_t data_len;
    const char *raw;       /* the event's JSON text, or NULL when the batch has none */
    uint32_t raw_len;
    const struct sb__spec *spec; /* the declared paths when the batch is projected, else NULL */
} sb_event;

/* One JSON value of an event. A view: valid only during the callback. */
typedef struct sb_value {
    sb_kind kind;
    bool escaped;        /* a string with backslash escapes (sb_as_str decodes them) */
    uint16_t depth;
    const char *ptr;     /* the value's bytes as written (see sb_kind) */
    uint32_t len;
    const sb_event *event;
    uint32_t lo, hi;     /* descendants in a fully indexed batch (for sb_value_get), else empty */
} sb_value;

/* The changes a map filter makes to one event; see the functions below. */
typedef struct sb_edits {
    uint8_t *buf;     /* the record stream of the batch */
    uint32_t len, cap;
    uint32_t event;   /* the event the next records name */
    uint32_t start;   /* where its records start */
    sb_verdict verdict;
    bool oom;
} sb_edits;

/* The events a flat-map filter makes of one event. */
typedef struct sb_emitter {
    sb_edits edits;
    uint32_t count;
} sb_emitter;

/* The init parameters: a JSON object of strings, decoded. */
typedef struct sb_params {
    const sb_bytes *keys;
    const sb_bytes *values;
    uint32_t count;
} sb_params;

/* ---- Reading events ------------------------------------------------------------------------ */

/* The value at `path` (NUL-terminated), or one of kind SB_MISSING. */
SB_API sb_value sb_get(const sb_event *e, const char *path);
/* The value at `path` inside the object `v` (fully indexed batches only). */
SB_API sb_value sb_value_get(sb_value v, const char *path);
/* The event's JSON text as it arrived (ptr NULL when the batch carries no raw bytes). */
SB_API sb_bytes sb_raw(const sb_event *e);

/* Whether `v` is present (any kind but SB_MISSING). */
SB_API bool sb_has(sb_value v);
/* Whether `v` is `null`. */
SB_API bool sb_is_null(sb_value v);
/* Whether `v` is the string `s` (NUL-terminated), compared after decoding `v`'s escapes. */
SB_API bool sb_str_eq(sb_value v, const char *s);
SB_API bool sb_str_eq_n(sb_value v, const char *s, uint32_t len);
/* Decodes the string `v` into `buf` and NUL-terminates it: the decoded length, or -1 when `v`
 * is not a string, has an invalid escape, or does not fit (cap >= v.len + 1 always fits). */
SB_API int32_t sb_as_str(sb_value v, char *buf, uint32_t cap);
/* The boolean `v`: false when it is not one (check with sb_kind or use the out form). */
SB_API bool sb_as_bool(sb_value v, bool *out);
/* The integer `v` when it is a number written as an integer in range. */
SB_API bool sb_as_i64(sb_value v, int64_t *out);
/* The number `v` as a double. Exact for up to 15 significant digits and exponents of at most
 * 22; otherwise within a few units in the last place. */
SB_API bool sb_as_f64(sb_value v, double *out);

/* ---- Edits (map filters) --------------------------------------------------------------------
 * Each call appends one record. No call keeps the event as it is; set/remove/rename edit it;
 * sb_discard drops it and sb_fail dead-letters it: after those two, the event's other records are
 * withdrawn and later calls are ignored. sb_route sends the event to a named output. The host
 * applies the records in order. */

/* Sets `path` to `json`, the text of one JSON value (`"\"x\""`, `42`, `{"a":1}`). */
SB_API void sb_set(sb_edits *ed, const char *path, const char *json);
SB_API void sb_set_n(sb_edits *ed, const char *path, const char *json, uint32_t len);
/* Sets `path` to the string `s` (escaped here). */
SB_API void sb_set_str(sb_edits *ed, const char *path, const char *s);
SB_API void sb_set_str_n(sb_edits *ed, const char *path, const char *s, uint32_t len);
SB_API void sb_set_i64(sb_edits *ed, const char *path, int64_t value);
SB_API void sb_set_bool(sb_edits *ed, const char *path, bool value);
/* Sets `path` to a copy of `v` (a value of any event of the batch). */
SB_API void sb_set_value(sb_edits *ed, const char *path, sb_value v);
/* Removes `path` (an absent path is not an error). */
SB_API void sb_remove(sb_edits *ed, const char *path);
/* Moves the value at `from` to `to` (a missing `from` is not an error). */
SB_API void sb_rename(sb_edits *ed, const char *from, const char *to);
/* Sends the event to the output named `name`. */
SB_API void sb_route(sb_edits *ed, const char *name);
/* Drops the event. */
SB_API void sb_discard(sb_edits *ed);
/* Dead-letters the event with `reason`. */
SB_API void sb_fail(sb_edits *ed, const char *reason);
/* The verdict the calls so far give the event. */
SB_API sb_verdict sb_edits_verdict(const sb_edits *ed);

/* ---- Emitting (flat-map filters) -----------------------------------------------------------
 * The event is replaced by the events emitted for it: none filters it out, one replaces it,
 * more split it. sb_emit_fail dead-letters it and withdraws what it emitted. */

/* Emits `json`, the text of one JSON object. */
SB_API void sb_emit(sb_emitter *em, const char *json);
SB_API void sb_emit_n(sb_emitter *em, const char *json, uint32_t len);
SB_API void sb_emit_route(sb_emitter *em, const char *name);
SB_API void sb_emit_fail(sb_emitter *em, const char *reason);
SB_API uint32_t sb_emit_count(const sb_emitter *em);

/* ---- Parameters (init) ---------------------------------------------------------------------- */

/* The value of `key` (last occurrence wins). The value is NUL-terminated and lives as long as
 * the instance, so init may keep the pointer. */
SB_API bool sb_params_get(const sb_params *p, const char *key, sb_bytes *value);

/* ---- Memory and logging ------------------------------------------------------------------- */

/* `size` bytes aligned to `align` (a power of two), or NULL. Never freed. */
SB_API void *sb_alloc(uint32_t size, uint32_t align);
/* Logs through the host (rate-limited there). Using it adds the `sluicebox.log` import. */
SB_API void sb_log(sb_log_level level, const char *message);

/* ---- Declaring the filter ----------------------------------------------------------------- */

typedef bool (*sb__filter_fn)(const sb_event *);
typedef void (*sb__map_fn)(const sb_event *, sb_edits *);
typedef void (*sb__flat_map_fn)(const sb_event *, sb_emitter *);
typedef const char *(*sb__init_fn)(const sb_params *);

/* What a module declared; built by the macros. */
typedef struct sb__spec {
    const char *const *paths; /* paths[1..count]: paths[0] is a placeholder */
    uint32_t count;           /* entries after the placeholder, SB_RAW included */
} sb__spec;

SB_API int32_t sb__fields(const sb__spec *spec);
SB_API int32_t sb__run_filter(int32_t header, const sb__spec *spec, sb__filter_fn fn);
SB_API int32_t sb__run_map(int32_t header, const sb__spec *spec, sb__map_fn fn);
SB_API int32_t sb__run_flat_map(int32_t header, const sb__spec *spec, sb__flat_map_fn fn);
SB_API int32_t sb__run_init(int32_t block, sb__init_fn fn);

#define SB__EXPORT(name) __attribute__((export_name(#name), visibility("default")))

#ifndef __wasm__
/* Natively (for tests: see sluicebox_test.h) the macros register the callbacks here instead of
 * defining exports. */
typedef enum { SB__FILTER, SB__MAP, SB__FLAT_MAP } sb__mode;
typedef struct sb__registry {
    sb__mode mode;
    void (*fn)(void);
    const sb__spec *spec;
    sb__init_fn init;
} sb__registry;
extern sb__registry sb__registered;
#define SB__REGISTER(m, f)                                                                      \
    __attribute__((constructor)) static void sb__register(void) {                               \
        sb__registered.mode = (m);                                                              \
        sb__registered.fn = (void (*)(void))(f);                                                \
        sb__registered.spec = &sb__the_spec;                                                    \
    }
#define SB__SPEC(...)                                                                            \
    static const char *const sb__paths[] = {"" __VA_OPT__(, ) __VA_ARGS__};                      \
    static const sb__spec sb__the_spec = {sb__paths, sizeof(sb__paths) / sizeof(sb__paths[0]) - 1};
#endif

#ifdef __wasm__
/* The spec, and the `sluicebox_fields` export only when paths are given. */
#define SB__SPEC(...)                                                                            \
    static const char *const sb__paths[] = {"" __VA_OPT__(, ) __VA_ARGS__};                      \
    static const sb__spec sb__the_spec = {sb__paths, sizeof(sb__paths) / sizeof(sb__paths[0]) - 1}; \
    __VA_OPT__(SB__EXPORT(sluicebox_fields) int32_t sluicebox_fields(void) {                     \
        return sb__fields(&sb__the_spec);                                                        \
    })
#endif

/* A callback of the wrong type is a compile error (in C, not just clang's warning). */
#ifdef __cplusplus
#define SB__CHECKED(type, fn) (fn)
#else
#define SB__CHECKED(type, fn) __builtin_choose_expr(                                             \
    __builtin_types_compatible_p(__typeof__(&(fn)), type), (fn), (void)0)
#endif

#ifdef __wasm__
/* `bool fn(const sb_event *e)`: true keeps the event, false drops it. */
#define SLUICEBOX_FILTER(fn, ...)                                                               \
    SB__SPEC(__VA_ARGS__)                                                                       \
    SB__EXPORT(sluicebox_filter) int32_t sluicebox_filter(int32_t header) {                     \
        return sb__run_filter(header, &sb__the_spec, SB__CHECKED(sb__filter_fn, fn));           \
    }

/* `void fn(const sb_event *e, sb_edits *out)`: edits, drops or fails the event. */
#define SLUICEBOX_MAP(fn, ...)                                                                  \
    SB__SPEC(__VA_ARGS__)                                                                       \
    SB__EXPORT(sluicebox_filter) int32_t sluicebox_filter(int32_t header) {                     \
        return sb__run_map(header, &sb__the_spec, SB__CHECKED(sb__map_fn, fn));                 \
    }

/* `void fn(const sb_event *e, sb_emitter *out)`: replaces the event by what it emits. */
#define SLUICEBOX_FLAT_MAP(fn, ...)                                                             \
    SB__SPEC(__VA_ARGS__)                                                                       \
    SB__EXPORT(sluicebox_filter) int32_t sluicebox_filter(int32_t header) {                     \
        return sb__run_flat_map(header, &sb__the_spec, SB__CHECKED(sb__flat_map_fn, fn));       \
    }

/* `const char *fn(const sb_params *p)`: NULL accepts the parameters, a message rejects them
 * (the message must outlive the call: a literal, or static storage). */
#define SLUICEBOX_INIT(fn)                                                                      \
    SB__EXPORT(sluicebox_init) int32_t sluicebox_init(int32_t block) {                          \
        return sb__run_init(block, SB__CHECKED(sb__init_fn, fn));                               \
    }
#else
#define SLUICEBOX_FILTER(fn, ...)                                                               \
    SB__SPEC(__VA_ARGS__) SB__REGISTER(SB__FILTER, SB__CHECKED(sb__filter_fn, fn))
#define SLUICEBOX_MAP(fn, ...)                                                                  \
    SB__SPEC(__VA_ARGS__) SB__REGISTER(SB__MAP, SB__CHECKED(sb__map_fn, fn))
#define SLUICEBOX_FLAT_MAP(fn, ...)                                                             \
    SB__SPEC(__VA_ARGS__) SB__REGISTER(SB__FLAT_MAP, SB__CHECKED(sb__flat_map_fn, fn))
#define SLUICEBOX_INIT(fn)                                                                      \
    __attribute__((constructor)) static void sb__register_init(void) {                          \
        sb__registered.init = SB__CHECKED(sb__init_fn, fn);                                     \
    }
#endif

#ifdef __cplusplus
}
#endif

#endif /* SLUICEBOX_H */

/* ============================================================================================ */
/* Implementation                                                                               */
/* ============================================================================================ */

#ifdef SLUICEBOX_IMPLEMENTATION
#ifndef SLUICEBOX_IMPLEMENTED
#define SLUICEBOX_IMPLEMENTED

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Memory functions the compiler may call ----------------------------------------------- */

#if defined(__wasm__) && !defined(SLUICEBOX_NO_MEMFUNCS)
/* `no_builtin` keeps clang from turning these loops back into calls to themselves. */
__attribute__((weak, no_builtin)) void *memcpy(void *restrict dst, const void *restrict src, size_t n) {
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    while (n--) *d++ = *s++;
    return dst;
}
__attribute__((weak, no_builtin)) void *memmove(void *dst, const void *src, size_t n) {
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    if (d < s) {
        while (n--) *d++ = *s++;
    } else {
        while (n--) d[n] = s[n];
    }
    return dst;
}
__attribute__((weak, no_builtin)) void *memset(void *dst, int c, size_t n) {
    uint8_t *d = (uint8_t *)dst;
    while (n--) *d++ = (uint8_t)c;
    return dst;
}
__attribute__((weak, no_builtin)) int memcmp(const void *a, const void *b, size_t n) {
    const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
    for (size_t i = 0; i < n; i++) {
        if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
    }
    return 0;
}
#endif

/* ---- Bounds and little-endian reads ------------------------------------------------------- */

#define SB__PAGE 65536ull
#define SB__NODE_LEN 24u
#define SB__ENTRY_LEN 16u
#define SB__HEADER_LEN 64u
#define SB__HEADER_OUT 36u
#define SB__BATCH_PROJECTED 1u
#define SB__BATCH_RAW 2u
#define SB__FLAG_VALUE_ESCAPED 1u
#define SB__FLAG_KEY_ESCAPED 2u
#define SB__FLAG_NO_KEY 4u

#ifdef __wasm__
static uint64_t sb__mem_size(void) { return (uint64_t)__builtin_wasm_memory_size(0) * SB__PAGE; }

/* The `len` bytes at `ptr` when they are all inside linear memory (and ptr is not 0), else
 * NULL. A zero length is always fine. */
static const uint8_t *sb__slice(uint32_t ptr, uint64_t len) {
    static const uint8_t empty[1];
    if (len == 0) return empty;
    if (ptr == 0 || (uint64_t)ptr + len > sb__mem_size()) return NULL;
    return (const uint8_t *)(uintptr_t)ptr;
}
#endif

static uint32_t sb__rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void sb__wr32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

#ifdef __wasm__
static uint32_t sb__addr(const void *p) { return (uint32_t)(uintptr_t)p; }
#endif

static uint32_t sb__strlen(const char *s) {
    uint32_t n = 0;
    while (s[n]) n++;
    return n;
}

/* ---- Allocator ------------------------------------------------------------------------------ */

#ifndef __wasm__
/* Natively the C library's heap; like the wasm allocator, nothing is freed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
sb__registry sb__registered;
SB_API void *sb_alloc(uint32_t size, uint32_t align) {
    if (align == 0) align = 1;
    if (align & (align - 1)) return NULL;
    if (align < sizeof(void *)) align = sizeof(void *);
    size_t n = ((size_t)(size ? size : 1) + align - 1) / align * align;
    return aligned_alloc(align, n);
}
static void *sb__grow(void *p, uint32_t old, uint32_t size, uint32_t align) {
    void *q = sb_alloc(size, align);
    if (q && p) memcpy(q, p, old);
    return q;
}
SB_API void sb_log(sb_log_level level, const char *message) {
    static const char *const names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    fprintf(stderr, "[%s] %s\n", (unsigned)level < 4 ? names[level] : "?", message);
}
#else
extern uint8_t __heap_base;
static uintptr_t sb__heap_top;

SB_API void *sb_alloc(uint32_t size, uint32_t align) {
    if (align == 0) align = 1;
    if (align & (align - 1)) return NULL;
    if (sb__heap_top == 0) sb__heap_top = (uintptr_t)&__heap_base;
    uint64_t p = ((uint64_t)sb__heap_top + align - 1) & ~(uint64_t)(align - 1);
    uint64_t end = p + (size ? size : 1);
    uint64_t have = sb__mem_size();
    if (end > have) {
        uint64_t pages = (end - have + SB__PAGE - 1) / SB__PAGE;
        if (end > 0xFFFFFFFFull || __builtin_wasm_memory_grow(0, (size_t)pages) == (size_t)-1) return NULL;
    }
    sb__heap_top = (uintptr_t)end;
    return (void *)(uintptr_t)p;
}

/* Grows the block `p` of `old` bytes to `size`: in place when it was allocated last, else
 * moved. NULL when out of memory (the old block stays valid). */
static void *sb__grow(void *p, uint32_t old, uint32_t size, uint32_t align) {
    if (p && (uintptr_t)p + old == sb__heap_top) {
        uint64_t end = (uint64_t)(uintptr_t)p + size;
        uint64_t have = sb__mem_size();
        if (end > have) {
            uint64_t pages = (end - have + SB__PAGE - 1) / SB__PAGE;
            if (end > 0xFFFFFFFFull || __builtin_wasm_memory_grow(0, (size_t)pages) == (size_t)-1) return NULL;
        }
        sb__heap_top = (uintptr_t)end;
        return p;
    }
    void *q = sb_alloc(size, align);
    if (q && p) __builtin_memcpy(q, p, old);
    return q;
}

SB__EXPORT(sluicebox_alloc) int32_t sluicebox_alloc(int32_t size, int32_t align) {
    if (size < 0 || align <= 0) return 0;
    return (int32_t)sb__addr(sb_alloc((uint32_t)size, (uint32_t)align));
}

SB__EXPORT(sluicebox_abi_version) int32_t sluicebox_abi_version(void) { return (int32_t)SB_ABI_VERSION; }

__attribute__((import_module("sluicebox"), import_name("log"))) void sb__host_log(int32_t, int32_t, int32_t);

SB_API void sb_log(sb_log_level level, const char *message) {
    sb__host_log((int32_t)level, (int32_t)sb__addr(message), (int32_t)sb__strlen(message));
}
#endif

/* ---- JSON strings ---------------------------------------------------------------------------- */

static int sb__hex(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int32_t sb__hex4(const uint8_t *s, uint32_t len) {
    if (len < 4) return -1;
    int32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = sb__hex(s[i]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

static uint32_t sb__utf8(uint32_t cp, uint8_t out[4]) {
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes the escape at s[0] == '\\' into UTF-8 in `out`: the bytes it used, or 0 when it is
 * invalid. A surrogate pair combines; a lone surrogate decodes to U+FFFD. */
static uint32_t sb__escape(const uint8_t *s, uint32_t len, uint8_t out[4], uint32_t *out_len) {
    if (len < 2) return 0;
    uint32_t ch;
    switch (s[1]) {
    case '"': ch = '"'; break;
    case '\\': ch = '\\'; break;
    case '/': ch = '/'; break;
    case 'b': ch = 8; break;
    case 'f': ch = 12; break;
    case 'n': ch = '\n'; break;
    case 'r': ch = '\r'; break;
    case 't': ch = '\t'; break;
    case 'u': {
        int32_t hi = sb__hex4(s + 2, len - 2);
        if (hi < 0) return 0;
        uint32_t used = 6;
        if (hi >= 0xD800 && hi <= 0xDBFF) {
            int32_t lo = (len >= 12 && s[6] == '\\' && s[7] == 'u') ? sb__hex4(s + 8, len - 8) : -1;
            if (lo >= 0xDC00 && lo <= 0xDFFF) {
                ch = 0x10000 + (((uint32_t)hi - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
                used = 12;
            } else {
                ch = 0xFFFD;
            }
        } else if (hi >= 0xDC00 && hi <= 0xDFFF) {
            ch = 0xFFFD;
        } else {
            ch = (uint32_t)hi;
        }
        *out_len = sb__utf8(ch, out);
        return used;
    }
    default: return 0;
    }
    *out_len = sb__utf8(ch, out);
    return 2;
}

/* Whether the string body `s` (escapes decoded when `escaped`) equals the bytes `want`. The
 * path form (`path_escapes`) reads `\.` and `\\` in `want` as `.` and `\`. */
static bool sb__body_eq(const uint8_t *s, uint32_t len, bool escaped, const uint8_t *want, uint32_t want_len,
                        bool path_escapes) {
    uint32_t i = 0, j = 0;
    while (i < len) {
        uint8_t buf[4];
        uint32_t n = 1;
        const uint8_t *got = s + i;
        if (escaped && s[i] == '\\') {
            uint32_t used = sb__escape(s + i, len - i, buf, &n);
            if (used == 0) return false;
            got = buf;
            i += used;
        } else {
            i += 1;
        }
        for (uint32_t k = 0; k < n; k++) {
            if (j >= want_len) return false;
            uint8_t w = want[j++];
            if (path_escapes && w == '\\' && j < want_len) w = want[j++];
            if (got[k] != w) return false;
        }
    }
    return j == want_len;
}

/* Appends the body of a JSON string for `s` to `out` (needs 6 * len bytes at most). */
static uint32_t sb__escape_into(const uint8_t *s, uint32_t len, uint8_t *out) {
    static const char hex[] = "0123456789abcdef";
    uint32_t o = 0;
    for (uint32_t i = 0; i < len; i++) {
        uint8_t b = s[i];
        char short_form = 0;
        switch (b) {
        case '"': short_form = '"'; break;
        case '\\': short_form = '\\'; break;
        case '\n': short_form = 'n'; break;
        case '\r': short_form = 'r'; break;
        case '\t': short_form = 't'; break;
        case 8: short_form = 'b'; break;
        case 12: short_form = 'f'; break;
        default: break;
        }
        if (short_form) {
            out[o++] = '\\';
            out[o++] = (uint8_t)short_form;
        } else if (b < 0x20) {
            out[o++] = '\\';
            out[o++] = 'u';
            out[o++] = '0';
            out[o++] = '0';
            out[o++] = (uint8_t)hex[b >> 4];
            out[o++] = (uint8_t)hex[b & 15];
        } else {
            out[o++] = b;
        }
    }
    return o;
}

/* ---- Nodes and lookups ------------------------------------------------------------------- */

typedef struct sb__node {
    uint32_t key_start, key_len, value_start, value_len, end;
    uint8_t kind, flags;
    uint16_t depth;
} sb__node;

static sb__node sb__read_node(const uint8_t *nodes, uint32_t i) {
    const uint8_t *b = nodes + (uint64_t)i * SB__NODE_LEN;
    sb__node n;
    n.key_start = sb__rd32(b);
    n.key_len = sb__rd32(b + 4);
    n.value_start = sb__rd32(b + 8);
    n.value_len = sb__rd32(b + 12);
    n.kind = b[16];
    n.flags = b[17];
    n.depth = (uint16_t)(b[18] | b[19] << 8);
    n.end = sb__rd32(b + 20);
    return n;
}

/* data[start .. start+len] when inside the data region, else NULL. */
static const uint8_t *sb__region(const sb_event *e, uint32_t start, uint32_t len) {
    if ((uint64_t)start + len > e->data_len) return NULL;
    return e->data + start;
}

static sb_value sb__missing(const sb_event *e) {
    sb_value v = {SB_MISSING, false, 0, "", 0, e, 0, 0};
    return v;
}

static sb_value sb__value(const sb_event *e, sb__node n, uint32_t lo, uint32_t hi) {
    if (n.kind < SB_NULL || n.kind > SB_ARRAY) return sb__missing(e);
    const uint8_t *bytes = sb__region(e, n.value_start, n.value_len);
    if (!bytes) return sb__missing(e);
    /* A literal whose text is not the literal is a host bug: sb_as_bool must agree with it. */
    if (n.kind == SB_TRUE && !(n.value_len == 4 && __builtin_memcmp(bytes, "true", 4) == 0)) return sb__missing(e);
    if (n.kind == SB_FALSE && !(n.value_len == 5 && __builtin_memcmp(bytes, "false", 5) == 0)) return sb__missing(e);
    sb_value v;
    v.kind = (sb_kind)n.kind;
    v.escaped = (n.flags & SB__FLAG_VALUE_ESCAPED) != 0;
    v.depth = n.depth;
    v.ptr = (const char *)bytes;
    v.len = n.value_len;
    v.event = e;
    v.lo = lo;
    v.hi = hi > lo ? hi : lo;
    return v;
}

/* The last node among lo..hi at `depth` whose key is `key` (path form, `key_len` bytes);
 * -1 when there is none or the range is malformed (an `end` out of order, a wrong depth). */
static int64_t sb__find_key(const sb_event *e, uint32_t lo, uint32_t hi, uint16_t depth, const uint8_t *key,
                            uint32_t key_len) {
    int64_t found = -1;
    uint32_t i = lo;
    while (i < hi) {
        sb__node n = sb__read_node(e->nodes, i);
        if (n.end <= i || n.end > hi || n.depth != depth) return -1;
        if (!(n.flags & SB__FLAG_NO_KEY)) {
            const uint8_t *k = sb__region(e, n.key_start, n.key_len);
            if (!k) return -1;
            if (sb__body_eq(k, n.key_len, (n.flags & SB__FLAG_KEY_ESCAPED) != 0, key, key_len, true)) found = i;
        }
        i = n.end;
    }
    return found;
}

/* Finds `path` among the nodes lo..hi at `depth` of a fully indexed event. */
static sb_value sb__find_path(const sb_event *e, uint32_t lo, uint32_t hi, uint16_t depth, const char *path) {
    const uint8_t *p = (const uint8_t *)path;
    uint32_t len = sb__strlen(path), at = 0;
    for (;;) {
        /* One segment: up to an unescaped `.`. `\x` stands for `x` (so `\.` is a dot in a key
           and `\\` a backslash); a `\` that ends the path stands for itself (docs/abi.md 10). */
        uint32_t end = at;
        while (end < len && p[end] != '.') {
            if (p[end] == '\\' && end + 1 < len) end++;
            end++;
        }
        int64_t i = sb__find_key(e, lo, hi, depth, p + at, end - at);
        if (i < 0) return sb__missing(e);
        sb__node n = sb__read_node(e->nodes, (uint32_t)i);
        if (end >= len) return sb__value(e, n, (uint32_t)i + 1, n.end);
        if (n.kind != SB_OBJECT || depth == 0xFFFF) return sb__missing(e);
        lo = (uint32_t)i + 1;
        hi = n.end;
        depth++;
        at = end + 1;
    }
}

static bool sb__streq(const char *a, const char *b) {
    while (*a && *a == *b) a++, b++;
    return *a == *b;
}

SB_API sb_value sb_get(const sb_event *e, const char *path) {
    if (e->spec) {
        /* Projected: node i belongs to declared path i (SB_RAW entries have no node). */
        uint32_t node = 0;
        for (uint32_t i = 1; i <= e->spec->count; i++) {
            const char *declared = e->spec->paths[i];
            if (!declared) continue;
            if (sb__streq(declared, path)) {
                if (node >= e->node_count) return sb__missing(e);
                return sb__value(e, sb__read_node(e->nodes, node), 0, 0);
            }
            node++;
        }
        return sb__missing(e);
    }
    return sb__find_path(e, 0, e->node_count, 0, path);
}

SB_API sb_value sb_value_get(sb_value v, const char *path) {
    if (v.kind != SB_OBJECT || v.lo >= v.hi || v.depth == 0xFFFF) return sb__missing(v.event);
    return sb__find_path(v.event, v.lo, v.hi, (uint16_t)(v.depth + 1), path);
}

SB_API sb_bytes sb_raw(const sb_event *e) {
    sb_bytes b = {e->raw, e->raw_len};
    return b;
}

SB_API bool sb_has(sb_value v) { return v.kind != SB_MISSING; }
SB_API bool sb_is_null(sb_value v) { return v.kind == SB_NULL; }

SB_API bool sb_str_eq_n(sb_value v, const char *s, uint32_t len) {
    return v.kind == SB_STRING && sb__body_eq((const uint8_t *)v.ptr, v.len, v.escaped, (const uint8_t *)s, len, false);
}

SB_API bool sb_str_eq(sb_value v, const char *s) { return sb_str_eq_n(v, s, sb__strlen(s)); }

SB_API int32_t sb_as_str(sb_value v, char *buf, uint32_t cap) {
    if (v.kind != SB_STRING || v.len > 0x7FFFFFFF) return -1;
    const uint8_t *s = (const uint8_t *)v.ptr;
    uint32_t o = 0, i = 0;
    while (i < v.len) {
        uint8_t tmp[4];
        uint32_t n = 1;
        const uint8_t *src = s + i;
        if (v.escaped && s[i] == '\\') {
            uint32_t used = sb__escape(s + i, v.len - i, tmp, &n);
            if (used == 0) return -1;
            src = tmp;
            i += used;
        } else {
            i++;
        }
        if ((uint64_t)o + n + 1 > cap) return -1;
        for (uint32_t k = 0; k < n; k++) buf[o++] = (char)src[k];
    }
    if (o + 1 > cap) return -1;
    buf[o] = 0;
    return (int32_t)o;
}

SB_API bool sb_as_bool(sb_value v, bool *out) {
    if (v.kind != SB_TRUE && v.kind != SB_FALSE) return false;
    *out = v.kind == SB_TRUE;
    return true;
}

SB_API bool sb_as_i64(sb_value v, int64_t *out) {
    if (v.kind != SB_NUMBER || v.len == 0) return false;
    const uint8_t *s = (const uint8_t *)v.ptr;
    uint32_t i = 0;
    bool neg = false;
    if (s[0] == '-' || s[0] == '+') {
        neg = s[0] == '-';
        i = 1;
        if (v.len == 1) return false;
    }
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, n = 0;
    for (; i < v.len; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        uint64_t d = s[i] - '0';
        if (n > (limit - d) / 10) return false;
        n = n * 10 + d;
    }
    *out = neg ? (int64_t)(0 - n) : (int64_t)n;
    return true;
}

SB_API bool sb_as_f64(sb_value v, double *out) {
    static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                   1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    if (v.kind != SB_NUMBER || v.len == 0) return false;
    const uint8_t *s = (const uint8_t *)v.ptr;
    uint32_t i = 0, len = v.len;
    bool neg = s[0] == '-';
    if (neg || s[0] == '+') i++;
    uint64_t mant = 0;
    int32_t exp10 = 0, digits = 0;
    bool any = false;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++, any = true) {
        if (digits < 19) {
            mant = mant * 10 + (s[i] - '0');
            if (mant) digits++;
        } else {
            exp10++;
        }
    }
    if (i < len && s[i] == '.') {
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++, any = true) {
            if (digits < 19) {
                mant = mant * 10 + (s[i] - '0');
                if (mant) digits++;
                exp10--;
            }
        }
    }
    if (!any) return false;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        bool eneg = false;
        if (i < len && (s[i] == '-' || s[i] == '+')) eneg = s[i++] == '-';
        if (i >= len) return false;
        int32_t e = 0;
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            if (e < 100000) e = e * 10 + (s[i] - '0');
        }
        exp10 += eneg ? -e : e;
    }
    if (i != len) return false;
    double d = (double)mant;
    if (mant != 0) {
        while (exp10 > 22) {
            d *= 1e22;
            exp10 -= 22;
            if (d > 1.7976931348623157e308) break;
        }
        while (exp10 < -22) {
            d /= 1e22;
            exp10 += 22;
            if (d == 0) break;
        }
        d = exp10 >= 0 ? d * pow10[exp10 > 22 ? 22 : exp10] : d / pow10[-exp10 > 22 ? 22 : -exp10];
    }
    *out = neg ? -d : d;
    return true;
}

/* ---- Records ----------------------------------------------------------------------------- */

#define SB__OP_SET 1
#define SB__OP_REMOVE 2
#define SB__OP_RENAME 3
#define SB__OP_EMIT 4
#define SB__OP_FAIL 5
#define SB__OP_ROUTE 6

/* Room for `extra` more bytes; false (and `oom` set) when memory ran out. */
static bool sb__reserve(sb_edits *ed, uint64_t extra) {
    if ((uint64_t)ed->len + extra <= ed->cap) return true;
    uint64_t want = (uint64_t)ed->len + extra, cap = ed->cap ? ed->cap : 1024;
    while (cap < want) cap *= 2;
    void *p = cap <= 0x7FFFFFFF ? sb__grow(ed->buf, ed->cap, (uint32_t)cap, 8) : NULL;
    if (!p) {
        ed->oom = true;
        return false;
    }
    ed->buf = (uint8_t *)p;
    ed->cap = (uint32_t)cap;
    return true;
}

static void sb__put(sb_edits *ed, const void *src, uint32_t n) {
    __builtin_memcpy(ed->buf + ed->len, src, n);
    ed->len += n;
}

typedef enum { SB__B_BYTES, SB__B_STRING, SB__B_VALUE } sb__bkind;

/* Appends a record; operand B is `b` as is, escaped as a JSON string, or a value's JSON text. */
static void sb__push(sb_edits *ed, uint8_t op, const char *a, uint32_t a_len, const char *b, uint32_t b_len,
                     sb__bkind how) {
    uint64_t b_max = how == SB__B_STRING ? (uint64_t)b_len * 6 + 2 : (uint64_t)b_len + 2;
    if (!sb__reserve(ed, 16 + (uint64_t)a_len + b_max + 3)) return;
    uint8_t *h = ed->buf + ed->len;
    sb__wr32(h, ed->event);
    h[4] = op;
    h[5] = h[6] = h[7] = 0;
    sb__wr32(h + 8, a_len);
    ed->len += 16;
    sb__put(ed, a, a_len);
    uint32_t b_start = ed->len;
    if (how == SB__B_STRING) {
        ed->buf[ed->len++] = '"';
        ed->len += sb__escape_into((const uint8_t *)b, b_len, ed->buf + ed->len);
        ed->buf[ed->len++] = '"';
    } else if (how == SB__B_VALUE) {
        ed->buf[ed->len++] = '"';
        sb__put(ed, b, b_len);
        ed->buf[ed->len++] = '"';
    } else {
        sb__put(ed, b, b_len);
    }
    sb__wr32(h + 12, ed->len - b_start);
    while (ed->len & 3) ed->buf[ed->len++] = 0;
}

static bool sb__live(const sb_edits *ed) { return ed->verdict != SB_DROP && ed->verdict != SB_FAIL; }

static void sb__edit(sb_edits *ed, uint8_t op, const char *a, const char *b, uint32_t b_len, sb__bkind how) {
    if (!sb__live(ed)) return;
    sb__push(ed, op, a, sb__strlen(a), b, b_len, how);
    if (ed->verdict == SB_KEEP) ed->verdict = SB_EDIT;
}

SB_API void sb_set_n(sb_edits *ed, const char *path, const char *json, uint32_t len) {
    sb__edit(ed, SB__OP_SET, path, json, len, SB__B_BYTES);
}
SB_API void sb_set(sb_edits *ed, const char *path, const char *json) { sb_set_n(ed, path, json, sb__strlen(json)); }
SB_API void sb_set_str_n(sb_edits *ed, const char *path, const char *s, uint32_t len) {
    sb__edit(ed, SB__OP_SET, path, s, len, SB__B_STRING);
}
SB_API void sb_set_str(sb_edits *ed, const char *path, const char *s) { sb_set_str_n(ed, path, s, sb__strlen(s)); }
SB_API void sb_set_i64(sb_edits *ed, const char *path, int64_t value) {
    char digits[20];
    uint32_t at = sizeof digits;
    uint64_t n = value < 0 ? 0 - (uint64_t)value : (uint64_t)value;
    do {
        digits[--at] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    if (value < 0) digits[--at] = '-';
    sb_set_n(ed, path, digits + at, (uint32_t)sizeof digits - at);
}
SB_API void sb_set_bool(sb_edits *ed, const char *path, bool value) { sb_set(ed, path, value ? "true" : "false"); }
SB_API void sb_set_value(sb_edits *ed, const char *path, sb_value v) {
    if (v.kind == SB_MISSING) return;
    sb__edit(ed, SB__OP_SET, path, v.ptr, v.len, v.kind == SB_STRING ? SB__B_VALUE : SB__B_BYTES);
}
SB_API void sb_remove(sb_edits *ed, const char *path) { sb__edit(ed, SB__OP_REMOVE, path, "", 0, SB__B_BYTES); }
SB_API void sb_rename(sb_edits *ed, const char *from, const char *to) {
    sb__edit(ed, SB__OP_RENAME, from, to, sb__strlen(to), SB__B_BYTES);
}
SB_API void sb_route(sb_edits *ed, const char *name) {
    if (sb__live(ed)) sb__push(ed, SB__OP_ROUTE, name, sb__strlen(name), "", 0, SB__B_BYTES);
}
SB_API void sb_discard(sb_edits *ed) {
    if (!sb__live(ed)) return;
    ed->len = ed->start;
    ed->verdict = SB_DROP;
}
SB_API void sb_fail(sb_edits *ed, const char *reason) {
    if (ed->verdict == SB_FAIL) return;
    ed->len = ed->start;
    sb__push(ed, SB__OP_FAIL, "", 0, reason, sb__strlen(reason), SB__B_BYTES);
    ed->verdict = SB_FAIL;
}
SB_API sb_verdict sb_edits_verdict(const sb_edits *ed) { return ed->verdict; }

SB_API void sb_emit_n(sb_emitter *em, const char *json, uint32_t len) {
    if (!sb__live(&em->edits)) return;
    sb__push(&em->edits, SB__OP_EMIT, "", 0, json, len, SB__B_BYTES);
    em->count++;
}
SB_API void sb_emit(sb_emitter *em, const char *json) { sb_emit_n(em, json, sb__strlen(json)); }
SB_API void sb_emit_route(sb_emitter *em, const char *name) { sb_route(&em->edits, name); }
SB_API void sb_emit_fail(sb_emitter *em, const char *reason) { sb_fail(&em->edits, reason); }
SB_API uint32_t sb_emit_count(const sb_emitter *em) { return em->count; }

/* ---- The batch call ------------------------------------------------------------------------ */
#ifdef __wasm__

static struct {
    sb_emitter out;       /* the record stream; `out.edits` for filters and maps */
    uint8_t *verdicts;
    uint32_t verdicts_cap;
    const char *message;
    uint32_t fields_decl[3];
} sb__state;

typedef enum { SB__FILTER, SB__MAP, SB__FLAT_MAP } sb__mode;

/* Reports `status` with `message` in the header's output fields (when the header is in bounds). */
static int32_t sb__finish(uint32_t header, int32_t status, uint32_t verdicts, const char *message) {
    const uint8_t *h = sb__slice(header, SB__HEADER_LEN);
    if (h) {
        uint8_t *out = (uint8_t *)(uintptr_t)(h + SB__HEADER_OUT);
        bool ok = status == SB_STATUS_OK;
        uint32_t records_len = ok ? sb__state.out.edits.len : 0;
        sb__wr32(out, ok ? verdicts : 0);
        sb__wr32(out + 4, records_len ? sb__addr(sb__state.out.edits.buf) : 0);
        sb__wr32(out + 8, records_len);
        sb__wr32(out + 12, message ? sb__addr(message) : 0);
        sb__wr32(out + 16, message ? sb__strlen(message) : 0);
    }
    return status;
}

static int32_t sb__run(int32_t header_arg, const sb__spec *spec, sb__mode mode, void (*fn)(void)) {
    uint32_t header = (uint32_t)header_arg;
    sb_edits *ed = &sb__state.out.edits;
    ed->len = 0;
    ed->oom = false;
    const uint8_t *h = sb__slice(header, SB__HEADER_LEN);
    if (!h) return SB_ERR_BAD_INPUT; /* nowhere to put a message */
    if (sb__rd32(h) != SB_ABI_VERSION)
        return sb__finish(header, SB_ERR_UNSUPPORTED, 0, "unsupported ABI version in batch header");
    uint32_t n = sb__rd32(h + 4), node_total = sb__rd32(h + 16), data_len = sb__rd32(h + 24);
    uint32_t flags = sb__rd32(h + 28), field_count = sb__rd32(h + 32);
    const uint8_t *entries = sb__slice(sb__rd32(h + 8), (uint64_t)n * SB__ENTRY_LEN);
    const uint8_t *nodes = sb__slice(sb__rd32(h + 12), (uint64_t)node_total * SB__NODE_LEN);
    const uint8_t *data = sb__slice(sb__rd32(h + 20), data_len);
    if (!entries || !nodes || !data) return sb__finish(header, SB_ERR_BAD_INPUT, 0, "batch table out of bounds");
    bool projected = (flags & SB__BATCH_PROJECTED) != 0, has_raw = (flags & SB__BATCH_RAW) != 0;
    uint32_t declared = 0;
    for (uint32_t i = 1; i <= spec->count; i++) declared += spec->paths[i] != SB_RAW;
    if (projected && (spec->count == 0 || declared != field_count))
        return sb__finish(header, SB_ERR_BAD_INPUT, 0, "projected batch does not match the declared fields");
    if (n > sb__state.verdicts_cap) {
        uint8_t *v = (uint8_t *)sb_alloc(n, 1);
        if (!v) return sb__finish(header, SB_ERR_OUT_OF_MEMORY, 0, "out of memory");
        sb__state.verdicts = v;
        sb__state.verdicts_cap = n;
    }
    bool any = false;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *entry = entries + (uint64_t)i * SB__ENTRY_LEN;
        uint32_t raw_start = sb__rd32(entry), raw_len = sb__rd32(entry + 4);
        uint32_t first = sb__rd32(entry + 8), count = sb__rd32(entry + 12);
        if ((uint64_t)first + count > node_total)
            return sb__finish(header, SB_ERR_BAD_INPUT, 0, "event nodes out of bounds");
        if (projected && count != field_count)
            return sb__finish(header, SB_ERR_BAD_INPUT, 0, "projected event does not have one node per declared field");
        if (has_raw && (uint64_t)raw_start + raw_len > data_len)
            return sb__finish(header, SB_ERR_BAD_INPUT, 0, "event bytes out of bounds");
        sb_event e = {i, nodes + (uint64_t)first * SB__NODE_LEN, count, data, data_len,
                      has_raw ? (const char *)data + raw_start : NULL, has_raw ? raw_len : 0,
                      projected ? spec : NULL};
        ed->event = i;
        ed->start = ed->len;
        switch (mode) {
        case SB__FILTER:
            ed->verdict = SB_KEEP;
            if (!((sb__filter_fn)fn)(&e)) sb_discard(ed);
            break;
        case SB__MAP:
            ed->verdict = SB_KEEP;
            ((sb__map_fn)fn)(&e, ed);
            break;
        case SB__FLAT_MAP:
            ed->verdict = SB_REPLACE;
            sb__state.out.count = 0;
            ((sb__flat_map_fn)fn)(&e, &sb__state.out);
            break;
        }
        if (ed->oom) return sb__finish(header, SB_ERR_OUT_OF_MEMORY, 0, "out of memory for records");
        sb__state.verdicts[i] = (uint8_t)ed->verdict;
        any |= ed->verdict != SB_KEEP;
    }
    return sb__finish(header, SB_STATUS_OK, any ? sb__addr(sb__state.verdicts) : 0, NULL);
}

SB_API int32_t sb__run_filter(int32_t header, const sb__spec *spec, sb__filter_fn fn) {
    return sb__run(header, spec, SB__FILTER, (void (*)(void))fn);
}
SB_API int32_t sb__run_map(int32_t header, const sb__spec *spec, sb__map_fn fn) {
    return sb__run(header, spec, SB__MAP, (void (*)(void))fn);
}
SB_API int32_t sb__run_flat_map(int32_t header, const sb__spec *spec, sb__flat_map_fn fn) {
    return sb__run(header, spec, SB__FLAT_MAP, (void (*)(void))fn);
}

SB_API int32_t sb__fields(const sb__spec *spec) {
    uint32_t *decl = sb__state.fields_decl;
    if (decl[0] == 0 && decl[1] == 0) {
        uint32_t total = 0, flags = 0;
        for (uint32_t i = 1; i <= spec->count; i++) {
            if (spec->paths[i]) total += sb__strlen(spec->paths[i]) + 1;
            else flags = 1; /* FIELDS_RAW */
        }
        char *joined = (char *)sb_alloc(total ? total : 1, 1);
        if (!joined) return 0;
        uint32_t o = 0;
        for (uint32_t i = 1; i <= spec->count; i++) {
            const char *p = spec->paths[i];
            if (!p) continue;
            if (o) joined[o++] = '\n';
            for (uint32_t k = 0; p[k]; k++) joined[o++] = p[k];
        }
        decl[0] = o ? sb__addr(joined) : 0;
        decl[1] = o;
        decl[2] = flags;
    }
    return (int32_t)sb__addr(decl);
}

#endif /* __wasm__: the batch call */

/* ---- Init and parameters ----------------------------------------------------------------- */

typedef struct {
    const uint8_t *s;
    uint32_t len, at;
} sb__parser;

static void sb__ws(sb__parser *p) {
    while (p->at < p->len && (p->s[p->at] == ' ' || p->s[p->at] == '\t' || p->s[p->at] == '\n' || p->s[p->at] == '\r'))
        p->at++;
}

static bool sb__eat(sb__parser *p, uint8_t c) {
    sb__ws(p);
    if (p->at < p->len && p->s[p->at] == c) {
        p->at++;
        return true;
    }
    return false;
}

/* The string at the cursor (after its opening quote), decoded into new memory. */
static const char *sb__pstring(sb__parser *p, sb_bytes *out) {
    uint32_t start = p->at, i = start;
    for (;;) {
        if (i >= p->len) return "invalid parameters: unterminated string";
        uint8_t c = p->s[i];
        if (c == '"') break;
        if (c < 0x20) return "invalid parameters: control character in a string";
        i += c == '\\' ? 2 : 1;
    }
    p->at = i + 1;
    sb_value v = {SB_STRING, true, 0, (const char *)p->s + start, i - start, NULL, 0, 0};
    char *buf = (char *)sb_alloc(v.len + 1, 1);
    if (!buf) return "out of memory";
    int32_t n = sb_as_str(v, buf, v.len + 1);
    if (n < 0) return "invalid parameters: invalid escape";
    out->ptr = buf;
    out->len = (uint32_t)n;
    return NULL;
}

static const char *sb__parse_params(const uint8_t *s, uint32_t len, sb_params *params) {
    sb__parser p = {s, len, 0};
    /* At most one entry per 6 bytes (`"":"",`) and one more. */
    uint32_t max = len / 6 + 1;
    sb_bytes *keys = (sb_bytes *)sb_alloc(max * sizeof(sb_bytes), 4);
    sb_bytes *values = (sb_bytes *)sb_alloc(max * sizeof(sb_bytes), 4);
    if (!keys || !values) return "out of memory";
    params->keys = keys;
    params->values = values;
    params->count = 0;
    sb__ws(&p);
    if (p.at == p.len) return NULL;
    if (!sb__eat(&p, '{')) return "invalid parameters: expected a JSON object";
    if (!sb__eat(&p, '}')) {
        for (;;) {
            if (params->count >= max) return "invalid parameters: too many entries";
            if (!sb__eat(&p, '"')) return "invalid parameters: expected a key";
            const char *err = sb__pstring(&p, &keys[params->count]);
            if (err) return err;
            if (!sb__eat(&p, ':')) return "invalid parameters: expected `:`";
            if (!sb__eat(&p, '"')) return "invalid parameters: every value must be a string";
            err = sb__pstring(&p, &values[params->count]);
            if (err) return err;
            params->count++;
            if (sb__eat(&p, ',')) continue;
            if (sb__eat(&p, '}')) break;
            return "invalid parameters: expected `,` or `}`";
        }
    }
    sb__ws(&p);
    if (p.at != p.len) return "invalid parameters: text after the object";
    return NULL;
}

SB_API bool sb_params_get(const sb_params *p, const char *key, sb_bytes *value) {
    uint32_t key_len = sb__strlen(key);
    for (uint32_t i = p->count; i-- > 0;) {
        if (p->keys[i].len == key_len && __builtin_memcmp(p->keys[i].ptr, key, key_len) == 0) {
            if (value) *value = p->values[i];
            return true;
        }
    }
    return false;
}

#ifndef __wasm__
/* Natively: parses `params` (a JSON object of strings) and runs the registered init; NULL when
 * it accepts (or there is none), else the message. Used by sluicebox_test.h. */
SB_API const char *sb__native_init(const char *params) {
    sb_params p;
    const char *message = sb__parse_params((const uint8_t *)params, sb__strlen(params), &p);
    if (message) return message;
    return sb__registered.init ? sb__registered.init(&p) : NULL;
}
#else
SB_API int32_t sb__run_init(int32_t block_arg, sb__init_fn fn) {
    uint32_t block = (uint32_t)block_arg;
    const uint8_t *b = sb__slice(block, 20);
    if (!b) return SB_ERR_BAD_INPUT;
    uint8_t *out = (uint8_t *)(uintptr_t)(b + 12);
    int32_t status = SB_STATUS_OK;
    const char *message = NULL;
    const uint8_t *text = sb__slice(sb__rd32(b + 4), sb__rd32(b + 8));
    sb_params params;
    if (sb__rd32(b) != SB_ABI_VERSION) {
        status = SB_ERR_UNSUPPORTED;
        message = "unsupported ABI version in init block";
    } else if (!text) {
        status = SB_ERR_BAD_INPUT;
        message = "init parameters out of bounds";
    } else if ((message = sb__parse_params(text, sb__rd32(b + 8), &params)) != NULL) {
        status = SB_ERR_BAD_CONFIG;
    } else if ((message = fn(&params)) != NULL) {
        status = SB_ERR_BAD_CONFIG;
    }
    sb__wr32(out, message ? sb__addr(message) : 0);
    sb__wr32(out + 4, message ? sb__strlen(message) : 0);
    return status;
}
#endif

#ifdef __cplusplus
}
#endif

#endif /* SLUICEBOX_IMPLEMENTED */
#endif /* SLUICEBOX_IMPLEMENTATION */
