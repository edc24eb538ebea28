/* Fuzz target: the topic trie, checked against a naive matcher written from
 * the rules in docs/guide.md ("Patterns"). Input: a first byte giving the
 * number of filters, then '\n'-separated lines: that many filters, then
 * topics. Every add must succeed exactly when the filter is valid and new;
 * every match must pick the same route and the same captures as the
 * reference. */
#include "topic_pattern.h"
#include "topic_trie.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAXF 32
#define MAXCAPS 64
#define MAXIN 4000   /* bounds the levels of any line, so the reference needs no allocation */

typedef struct { const char *p; size_t len; } span;

static size_t next_level(const char *s, size_t pos, size_t len)
{
    const char *slash = memchr(s + pos, '/', len - pos);
    return slash ? (size_t)(slash - s) : len;
}

/* Does filter f match topic t? Fills kinds (0 literal, 1 '+', 2 '#') and captures. */
static int ref_match(span f, span t, int *kinds, int *nkinds, topic_span *caps, int *ncaps)
{
    size_t fp = 0, tp = 0;
    int tdone = 0;  /* every level of the topic has been consumed */
    *nkinds = 0;
    *ncaps = 0;
    for (int level = 0;; level++) {
        size_t fe = next_level(f.p, fp, f.len);
        size_t flen = fe - fp;
        const char *fl = f.p + fp;
        int wild = (flen == 1 && (fl[0] == '+' || fl[0] == '#'));
        if (wild && level == 0 && t.p[0] == '$') return 0;
        if (flen == 1 && fl[0] == '#') {
            kinds[(*nkinds)++] = 2;
            caps[(*ncaps)++] = tdone ? (topic_span){ NULL, 0 } : (topic_span){ t.p + tp, t.len - tp };
            return 1;
        }
        if (tdone) return 0;
        size_t te = next_level(t.p, tp, t.len);
        if (flen == 1 && fl[0] == '+') {
            kinds[(*nkinds)++] = 1;
            caps[(*ncaps)++] = (topic_span){ t.p + tp, te - tp };
        } else {
            if (flen != te - tp || memcmp(fl, t.p + tp, flen)) return 0;
            kinds[(*nkinds)++] = 0;
        }
        int flast = fe == f.len, tlast = te == t.len;
        if (flast) return tlast;
        fp = fe + 1;
        if (tlast) tdone = 1;
        else tp = te + 1;
    }
}

/* <0 if kind sequence a is more specific than b: literal < '+' < '#', an end beats '#'. */
static int more_specific(const int *a, int na, const int *b, int nb)
{
    for (int i = 0; i < na && i < nb; i++)
        if (a[i] != b[i]) return a[i] - b[i];
    return na - nb;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int kinds[MAXIN + 1], bestk[MAXIN + 1];
    static topic_span c[MAXIN + 1], bestc[MAXIN + 1];
    if (size < 1 || size > MAXIN) return 0;
    int want_filters = data[0] % MAXF;
    const char *s = (const char *)data + 1, *end = (const char *)data + size;
    span lines[256];
    int nlines = 0;
    while (s <= end && nlines < 256) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *e = nl ? nl : end;
        lines[nlines++] = (span){ s, (size_t)(e - s) };
        if (!nl) break;
        s = nl + 1;
    }
    topic_trie *t = topic_trie_new();
    if (!t) return 0;
    span filters[MAXF];
    int ids[MAXF];
    int nf = 0, li = 0;
    char err[128];
    for (; li < nlines && li < want_filters; li++) {
        span f = lines[li];
        int valid = topic_validate_filter(f.p, f.len, err, sizeof err) == 0;
        int dup = -1;
        for (int k = 0; k < nf; k++)
            if (filters[k].len == f.len && !memcmp(filters[k].p, f.p, f.len)) dup = ids[k];
        int rc = topic_trie_add(t, f.p, f.len, li, err, sizeof err);
        if (rc == 0 && (!valid || dup >= 0)) abort();
        if (rc != 0 && valid && dup < 0) abort();
        if (rc == 0) {
            filters[nf] = f;
            ids[nf++] = li;
            if (topic_trie_find(t, f.p, f.len) != li) abort();
        }
    }
    if (topic_trie_count(t) != (size_t)nf) abort();
    for (; li < nlines; li++) {
        span tp = lines[li];
        topic_span caps[MAXCAPS];
        int ncaps = 0;
        int got = topic_trie_match(t, tp.p, tp.len, caps, MAXCAPS, &ncaps);
        if (got == TOPIC_NOMEM) continue;
        int best = -1, nbestk = 0, nbestc = 0;
        int valid = tp.len > 0 && tp.len <= TOPIC_MAX_LEN && !memchr(tp.p, 0, tp.len) &&
                    topic_utf8_valid(tp.p, tp.len);
        for (int k = 0; valid && k < nf; k++) {
            int nk, nc;
            if (!ref_match(filters[k], tp, kinds, &nk, c, &nc)) continue;
            if (best >= 0 && more_specific(kinds, nk, bestk, nbestk) >= 0) continue;
            best = ids[k];
            memcpy(bestk, kinds, (size_t)nk * sizeof *kinds);
            nbestk = nk;
            memcpy(bestc, c, (size_t)nc * sizeof *c);
            nbestc = nc;
        }
        if (best < 0) {
            if (got != TOPIC_NO_MATCH) abort();
            continue;
        }
        if (got != best || ncaps != nbestc) abort();
        for (int k = 0; k < ncaps && k < MAXCAPS; k++)
            if (caps[k].ptr != bestc[k].ptr || caps[k].len != bestc[k].len) abort();
    }
    topic_trie_free(t);
    return 0;
}
