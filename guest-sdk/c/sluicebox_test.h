/*
 * sluicebox_test.h: run a C filter natively, in a plain C test program, with no wasm runtime.
 *
 * The filter file compiles natively as it is (sluicebox.h sees no __wasm__: the SLUICEBOX_*
 * macros then register the callbacks instead of defining exports). A test file includes this
 * header and is linked with the filter:
 *
 *     #include "sluicebox_test.h"
 *     int main(void) {
 *         SB_EXPECT_VERDICT("{\"level\":\"DEBUG\"}", SB_DROP);
 *         SB_EXPECT_RECORDS("{\"msg\":\"hi\"}", "set env \"prod\"\nrename msg message");
 *         return sb_test_report();
 *     }
 *
 *     cc -std=c11 -Wall -Wextra -I guest-sdk/c guest-sdk/c/tests/drop_debug_test.c \
 *         guest-sdk/c/examples/drop_debug.c -o /tmp/drop_debug_test && /tmp/drop_debug_test
 *
 * sb_test_run() indexes the event the way the host does: a projected index (one node per
 * declared path, the last duplicate key winning) when the filter declares paths, else the full
 * index with the raw text. It runs the registered filter, map or flat map on it and returns
 * the verdict and the records, one line each: `set PATH JSON`, `remove PATH`,
 * `rename FROM TO`, `route NAME`, `emit JSON`, `fail REASON`.
 */
#ifndef SLUICEBOX_TEST_H
#define SLUICEBOX_TEST_H

#ifdef __wasm__
#error "sluicebox_test.h is for native test programs; build the filter itself for wasm32"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluicebox.h"

/* What the filter did with one event. */
typedef struct sb_test_outcome {
    sb_verdict verdict;
    uint32_t records;   /* how many records */
    char text[8192];    /* the records, one per line (truncated past the buffer) */
    const char *error;  /* the event is not a JSON object (nothing ran), else NULL */
} sb_test_outcome;

/* Provided by the filter's SLUICEBOX_IMPLEMENTATION. */
extern sb__registry sb__registered;
const char *sb__native_init(const char *params);

static int sb_test_failures;
static int sb_test_checks;

/* ---- A full index of one JSON object, as the host builds it (docs/abi.md) ------------------ */

typedef struct {
    const char *s;
    uint32_t len, at;
    uint8_t *nodes;
    uint32_t count, cap;
    const char *error;
} sb__tp;

static void sb__tp_ws(sb__tp *p) {
    while (p->at < p->len && strchr(" \t\r\n", p->s[p->at]) && p->s[p->at]) p->at++;
}

static void sb__tp_put32(uint8_t *b, uint32_t v) {
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
    b[2] = (uint8_t)(v >> 16);
    b[3] = (uint8_t)(v >> 24);
}

static uint32_t sb__tp_node(sb__tp *p) {
    if (p->count == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->nodes = (uint8_t *)realloc(p->nodes, (size_t)p->cap * 24);
        if (!p->nodes) {
            fprintf(stderr, "sluicebox_test: out of memory\n");
            exit(2);
        }
    }
    memset(p->nodes + (size_t)p->count * 24, 0, 24);
    return p->count++;
}

/* A string whose quote is at the cursor: its body's start and length; sets *escaped. */
static bool sb__tp_string(sb__tp *p, uint32_t *start, uint32_t *len, bool *escaped) {
    *escaped = false;
    uint32_t i = ++p->at;
    while (i < p->len && p->s[i] != '"') {
        if ((unsigned char)p->s[i] < 0x20) return false;
        if (p->s[i] == '\\') {
            *escaped = true;
            i++;
        }
        i++;
    }
    if (i >= p->len) return false;
    *start = p->at;
    *len = i - p->at;
    p->at = i + 1;
    return true;
}

static bool sb__tp_value(sb__tp *p, uint16_t depth, uint32_t key_start, uint32_t key_len, uint8_t flags);

static bool sb__tp_container(sb__tp *p, uint16_t depth, bool object) {
    char close = object ? '}' : ']';
    sb__tp_ws(p);
    if (p->at < p->len && p->s[p->at] == close) {
        p->at++;
        return true;
    }
    for (;;) {
        sb__tp_ws(p);
        uint32_t ks = 0, kl = 0;
        uint8_t flags = 4; /* no key */
        if (object) {
            bool esc;
            if (p->at >= p->len || p->s[p->at] != '"' || !sb__tp_string(p, &ks, &kl, &esc)) return false;
            flags = esc ? 2 : 0;
            sb__tp_ws(p);
            if (p->at >= p->len || p->s[p->at] != ':') return false;
            p->at++;
        }
        if (!sb__tp_value(p, depth, ks, kl, flags)) return false;
        sb__tp_ws(p);
        if (p->at < p->len && p->s[p->at] == ',') {
            p->at++;
            continue;
        }
        if (p->at < p->len && p->s[p->at] == close) {
            p->at++;
            return true;
        }
        return false;
    }
}

static bool sb__tp_value(sb__tp *p, uint16_t depth, uint32_t key_start, uint32_t key_len, uint8_t flags) {
    sb__tp_ws(p);
    if (p->at >= p->len) return false;
    uint32_t me = sb__tp_node(p), start = p->at, len = 0;
    uint8_t kind;
    char c = p->s[p->at];
    if (c == '"') {
        bool esc;
        if (!sb__tp_string(p, &start, &len, &esc)) return false;
        kind = SB_STRING;
        if (esc) flags |= 1;
    } else if (c == '{' || c == '[') {
        p->at++;
        if (depth == 0xFFFF || !sb__tp_container(p, (uint16_t)(depth + 1), c == '{')) return false;
        kind = c == '{' ? SB_OBJECT : SB_ARRAY;
        len = p->at - start;
    } else {
        while (p->at < p->len && !strchr(" \t\r\n,]}", p->s[p->at])) p->at++;
        len = p->at - start;
        if (len == 4 && !memcmp(p->s + start, "null", 4)) kind = SB_NULL;
        else if (len == 4 && !memcmp(p->s + start, "true", 4)) kind = SB_TRUE;
        else if (len == 5 && !memcmp(p->s + start, "false", 5)) kind = SB_FALSE;
        else if (len && (c == '-' || (c >= '0' && c <= '9'))) kind = SB_NUMBER;
        else return false;
    }
    uint8_t *n = p->nodes + (size_t)me * 24;
    sb__tp_put32(n, key_start);
    sb__tp_put32(n + 4, key_len);
    sb__tp_put32(n + 8, start);
    sb__tp_put32(n + 12, len);
    n[16] = kind;
    n[17] = flags;
    n[18] = (uint8_t)depth;
    n[19] = (uint8_t)(depth >> 8);
    sb__tp_put32(n + 20, p->count);
    return true;
}

/* ---- Running the registered filter --------------------------------------------------------- */

static const char *const sb__test_ops[] = {"?", "set", "remove", "rename", "emit", "fail", "route"};

static uint32_t sb__test_rd32(const uint8_t *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* Renders the record stream as one line per record. */
static void sb__test_render(const sb_edits *ed, sb_test_outcome *out) {
    size_t o = 0, cap = sizeof out->text;
    out->text[0] = 0;
    for (uint32_t at = 0; at + 16 <= ed->len;) {
        const uint8_t *h = ed->buf + at;
        uint8_t op = h[4];
        uint32_t a_len = sb__test_rd32(h + 8), b_len = sb__test_rd32(h + 12);
        const char *a = (const char *)h + 16, *b = a + a_len;
        const char *name = op <= 6 ? sb__test_ops[op] : "?";
        int n;
        if (op == 4 || op == 5) n = snprintf(out->text + o, cap - o, "%s%s %.*s", o ? "\n" : "", name, (int)b_len, b);
        else if (op == 2 || op == 6) n = snprintf(out->text + o, cap - o, "%s%s %.*s", o ? "\n" : "", name, (int)a_len, a);
        else n = snprintf(out->text + o, cap - o, "%s%s %.*s %.*s", o ? "\n" : "", name, (int)a_len, a, (int)b_len, b);
        if (n > 0) o = o + (size_t)n < cap ? o + (size_t)n : cap - 1;
        out->records++;
        at += (16 + a_len + b_len + 3) & ~3u;
    }
}

/* Runs the registered filter on the event `json` (one JSON object). */
static inline sb_test_outcome sb_test_run(const char *json) {
    sb_test_outcome out;
    memset(&out, 0, sizeof out);
    if (!sb__registered.fn) {
        out.error = "no filter registered: link the filter's .c file (with SLUICEBOX_IMPLEMENTATION)";
        return out;
    }
    sb__tp p = {json, (uint32_t)strlen(json), 0, NULL, 0, 0, NULL};
    sb__tp_ws(&p);
    bool ok = p.at < p.len && json[p.at] == '{';
    if (ok) {
        p.at++;
        ok = sb__tp_container(&p, 0, true);
        sb__tp_ws(&p);
        ok = ok && p.at == p.len;
    }
    if (!ok) {
        free(p.nodes);
        out.error = "not a JSON object";
        return out;
    }
    const sb__spec *spec = sb__registered.spec;
    uint32_t declared = 0;
    bool raw = spec->count == 0;
    for (uint32_t i = 1; i <= spec->count; i++) {
        if (spec->paths[i]) declared++;
        else raw = true;
    }
    sb_event full = {0, p.nodes, p.count, (const uint8_t *)json, p.len, json, p.len, NULL};
    sb_event e = full;
    uint8_t *projected = NULL;
    if (declared) {
        /* One node per declared path, resolved over the full index as the host resolves it. */
        projected = (uint8_t *)calloc(declared, 24);
        uint32_t k = 0;
        for (uint32_t i = 1; i <= spec->count; i++) {
            if (!spec->paths[i]) continue;
            sb_value v = sb_get(&full, spec->paths[i]);
            uint8_t *n = projected + (size_t)k * 24;
            if (v.kind != SB_MISSING) {
                sb__tp_put32(n + 8, (uint32_t)(v.ptr - json));
                sb__tp_put32(n + 12, v.len);
                n[16] = (uint8_t)v.kind;
                n[17] = v.escaped ? 1 : 0;
            }
            sb__tp_put32(n + 20, k + 1);
            k++;
        }
        e.nodes = projected;
        e.node_count = declared;
        e.spec = spec;
        if (!raw) {
            e.raw = NULL;
            e.raw_len = 0;
        }
    }
    sb_emitter em;
    memset(&em, 0, sizeof em);
    switch (sb__registered.mode) {
    case SB__FILTER:
        em.edits.verdict = SB_KEEP;
        if (!((sb__filter_fn)sb__registered.fn)(&e)) sb_discard(&em.edits);
        break;
    case SB__MAP:
        em.edits.verdict = SB_KEEP;
        ((sb__map_fn)sb__registered.fn)(&e, &em.edits);
        break;
    case SB__FLAT_MAP:
        em.edits.verdict = SB_REPLACE;
        ((sb__flat_map_fn)sb__registered.fn)(&e, &em);
        break;
    }
    out.verdict = em.edits.verdict;
    if (em.edits.oom) out.error = "out of memory for records";
    sb__test_render(&em.edits, &out);
    free(projected);
    free(p.nodes);
    return out;
}

/* Runs the registered init (if any) with `params`, a JSON object of strings: NULL when it
 * accepts them, else its message. */
static inline const char *sb_test_init(const char *params) { return sb__native_init(params); }

static inline const char *sb_test_verdict_name(sb_verdict v) {
    static const char *const names[] = {"SB_KEEP", "SB_DROP", "SB_EDIT", "SB_REPLACE", "SB_FAIL"};
    return (unsigned)v < 5 ? names[v] : "?";
}

/* ---- Checks ------------------------------------------------------------------------------- */

/* Counts a check; prints where it failed. */
#define SB_EXPECT(cond)                                                                          \
    do {                                                                                         \
        sb_test_checks++;                                                                        \
        if (!(cond)) {                                                                           \
            sb_test_failures++;                                                                  \
            fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond);                   \
        }                                                                                        \
    } while (0)

/* The event `json` gets verdict `want`. */
#define SB_EXPECT_VERDICT(json, want)                                                            \
    do {                                                                                         \
        sb_test_outcome o_ = sb_test_run(json);                                                  \
        sb_test_checks++;                                                                        \
        if (o_.error || o_.verdict != (want)) {                                                  \
            sb_test_failures++;                                                                  \
            fprintf(stderr, "%s:%d: FAILED: %s\n  expected %s, got %s%s%s\n", __FILE__, __LINE__, \
                    json, sb_test_verdict_name(want), sb_test_verdict_name(o_.verdict),          \
                    o_.error ? ": " : "", o_.error ? o_.error : "");                             \
        }                                                                                        \
    } while (0)

/* The event `json` gives exactly the records `want` (one per line, as sb_test_run renders). */
#define SB_EXPECT_RECORDS(json, want)                                                            \
    do {                                                                                         \
        sb_test_outcome o_ = sb_test_run(json);                                                  \
        sb_test_checks++;                                                                        \
        if (o_.error || strcmp(o_.text, (want)) != 0) {                                          \
            sb_test_failures++;                                                                  \
            fprintf(stderr, "%s:%d: FAILED: %s\n  expected records:\n%s\n  got:\n%s%s\n",        \
                    __FILE__, __LINE__, json, want, o_.text, o_.error ? o_.error : "");          \
        }                                                                                        \
    } while (0)

/* Prints the summary; the exit status for main: 0 when every check passed. */
static inline int sb_test_report(void) {
    fprintf(stderr, "%d checks, %d failed\n", sb_test_checks, sb_test_failures);
    return sb_test_failures ? 1 : 0;
}

#endif /* SLUICEBOX_TEST_H */
