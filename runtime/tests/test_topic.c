/* Unit tests for topic_pattern and topic_trie. */
#include "test_util.h"
#include "topic_pattern.h"
#include "topic_trie.h"

#include <stdlib.h>
#include <string.h>

#define ERRLEN 256

/* ---- pattern compilation ------------------------------------------------------------- */

typedef struct {
    const char *pattern;
    size_t len;          /* 0 = strlen(pattern); set for embedded NULs */
    const char *filter;  /* expected filter, NULL when the pattern is invalid */
    const char *names;   /* expected names joined by ',', '-' for a raw wildcard */
    const char *error;   /* expected reason when invalid */
} pattern_case;

static const pattern_case pattern_cases[] = {
    { "a/{x}", 0, "a/+", "x", NULL },
    { "sensors/{device_id}/data", 0, "sensors/+/data", "device_id", NULL },
    { "{a}/b", 0, "+/b", "a", NULL },
    { "files/{bucket}/{path...}", 0, "files/+/#", "bucket,path", NULL },
    { "{rest...}", 0, "#", "rest", NULL },
    { "logs/#", 0, "logs/#", "-", NULL },
    { "+/+/#", 0, "+/+/#", "-,-,-", NULL },
    { "a/+/{id}/#", 0, "a/+/+/#", "-,id,-", NULL },
    { "{_a1}/{B_2}", 0, "+/+", "_a1,B_2", NULL },
    { "plain/topic", 0, "plain/topic", "", NULL },
    { "a//b", 0, "a//b", "", NULL },
    { "/a", 0, "/a", "", NULL },
    { "a/", 0, "a/", "", NULL },
    { "/", 0, "/", "", NULL },
    { "a/{x}/", 0, "a/+/", "x", NULL },
    { "ü/{x}", 0, "ü/+", "x", NULL },
    { "温度/{x}/{rest...}", 0, "温度/+/#", "x,rest", NULL },
    { "$SYS/#", 0, "$SYS/#", "-", NULL },
    { "$shared/x", 0, "$shared/x", "", NULL },
    { "", 0, NULL, NULL, "empty pattern" },
    { "a/#/b", 0, NULL, NULL, "'#' must be the last level" },
    { "#/a", 0, NULL, NULL, "'#' must be the last level" },
    { "a/{p...}/b", 0, NULL, NULL, "'{p...}' must be the last level" },
    { "a+/b", 0, NULL, NULL, "'+' must be a whole level: 'a+'" },
    { "a/b#", 0, NULL, NULL, "'#' must be a whole level: 'b#'" },
    { "a/+x", 0, NULL, NULL, "'+' must be a whole level: '+x'" },
    { "a/{}", 0, NULL, NULL, "empty parameter name: '{}'" },
    { "a/{...}", 0, NULL, NULL, "empty parameter name: '{...}'" },
    { "{a}{b}", 0, NULL, NULL, "a parameter must be a whole level: '{a}{b}'" },
    { "x{a}", 0, NULL, NULL, "a parameter must be a whole level: 'x{a}'" },
    { "a/{a}x", 0, NULL, NULL, "a parameter must be a whole level: '{a}x'" },
    { "a/{x", 0, NULL, NULL, "unbalanced braces: '{x'" },
    { "a/x}", 0, NULL, NULL, "unbalanced braces: 'x}'" },
    { "{{x}}", 0, NULL, NULL, "unbalanced braces: '{{x}}'" },
    { "{1x}", 0, NULL, NULL, "invalid parameter name: '1x'" },
    { "{a-b}", 0, NULL, NULL, "invalid parameter name: 'a-b'" },
    { "{ü}", 0, NULL, NULL, "invalid parameter name: 'ü'" },
    { "{a...b}", 0, NULL, NULL, "invalid parameter name: 'a...b'" },
    { "{x}/{x}", 0, NULL, NULL, "duplicate parameter name: 'x'" },
    { "{x}/y/{x...}", 0, NULL, NULL, "duplicate parameter name: 'x'" },
    { "$share/g/a", 0, NULL, NULL, "'$share/' is reserved for shared subscriptions: use shared = true" },
    { "$queue/a", 0, NULL, NULL, "'$queue/' is reserved for shared subscriptions: use shared = true" },
    { "a\0b", 3, NULL, NULL, "pattern contains a NUL byte" },
    { "a/\xff", 0, NULL, NULL, "pattern is not valid UTF-8" },
    { "\xc0\x80", 0, NULL, NULL, "pattern is not valid UTF-8" },       /* overlong NUL */
    { "\xed\xa0\x80", 0, NULL, NULL, "pattern is not valid UTF-8" },   /* surrogate */
    { "\xf4\x90\x80\x80", 0, NULL, NULL, "pattern is not valid UTF-8" }, /* > U+10FFFF */
    { "a/\xe6\xb8", 0, NULL, NULL, "pattern is not valid UTF-8" },     /* truncated */
};

static void join_names(const topic_pattern *p, char *buf, size_t size)
{
    buf[0] = '\0';
    for (int i = 0; i < p->nwild; i++) {
        if (i > 0)
            strncat(buf, ",", size - strlen(buf) - 1);
        strncat(buf, p->names[i] ? p->names[i] : "-", size - strlen(buf) - 1);
    }
}

static void test_patterns(void)
{
    for (size_t i = 0; i < sizeof pattern_cases / sizeof pattern_cases[0]; i++) {
        const pattern_case *c = &pattern_cases[i];
        size_t len = c->len ? c->len : strlen(c->pattern);
        topic_pattern p;
        char err[ERRLEN] = "";
        int rc = topic_pattern_compile(c->pattern, len, &p, err, sizeof err);
        if (c->filter != NULL) {
            char names[ERRLEN];
            if (rc != 0) {
                CHECK(0, "compile '%s': unexpected error '%s'", c->pattern, err);
                continue;
            }
            join_names(&p, names, sizeof names);
            CHECK(strcmp(p.filter, c->filter) == 0 && p.filter_len == strlen(c->filter) &&
                      strcmp(names, c->names) == 0,
                  "compile '%s': got filter '%s' names '%s', want '%s' '%s'", c->pattern, p.filter, names,
                  c->filter, c->names);
            topic_pattern_free(&p);
        } else {
            CHECK(rc == -1 && strcmp(err, c->error) == 0 && p.filter == NULL,
                  "compile '%s': got rc %d reason '%s', want '%s'", c->pattern, rc, err, c->error);
        }
    }
}

/* Limits that need generated input: length and wildcard count. */
static void test_pattern_limits(void)
{
    char err[ERRLEN];
    topic_pattern p;
    char *big = malloc(TOPIC_MAX_LEN + 2);
    memset(big, 'a', TOPIC_MAX_LEN + 1);
    big[TOPIC_MAX_LEN + 1] = '\0';
    int rc = topic_pattern_compile(big, TOPIC_MAX_LEN, &p, err, sizeof err);
    CHECK(rc == 0 && p.filter_len == TOPIC_MAX_LEN, "65535-byte pattern accepted (rc %d)", rc);
    topic_pattern_free(&p);
    rc = topic_pattern_compile(big, TOPIC_MAX_LEN + 1, &p, err, sizeof err);
    CHECK(rc == -1 && strcmp(err, "pattern longer than 65535 bytes") == 0, "65536-byte pattern: '%s'", err);
    free(big);

    char many[TOPIC_MAX_WILDCARDS * 2 + 8] = "";
    for (int i = 0; i < TOPIC_MAX_WILDCARDS; i++)
        strcat(many, i ? "/+" : "+");
    rc = topic_pattern_compile(many, strlen(many), &p, err, sizeof err);
    CHECK(rc == 0 && p.nwild == TOPIC_MAX_WILDCARDS, "64 wildcards accepted (rc %d)", rc);
    topic_pattern_free(&p);
    strcat(many, "/#");
    rc = topic_pattern_compile(many, strlen(many), &p, err, sizeof err);
    CHECK(rc == -1 && strcmp(err, "more than 64 wildcards") == 0, "65 wildcards: '%s'", err);

    /* A tiny error buffer must truncate, not overflow. */
    char small[8];
    rc = topic_pattern_compile("a/#/b", 5, &p, small, sizeof small);
    CHECK(rc == -1 && strcmp(small, "'#' mus") == 0, "truncated reason '%s'", small);
    rc = topic_pattern_compile("a/#/b", 5, &p, NULL, 0);
    CHECK(rc == -1, "NULL error buffer");
}

/* ---- publish topics and raw filters --------------------------------------------------- */

typedef struct {
    const char *topic;
    size_t len;
    const char *error; /* NULL = valid */
} text_case;

static const text_case publish_cases[] = {
    { "a/b", 0, NULL },
    { "/", 0, NULL },
    { "$SYS/x", 0, NULL },
    { "温度/ü", 0, NULL },
    { "", 0, "empty topic" },
    { "a/+", 0, "topic must not contain wildcards ('+' or '#')" },
    { "a#", 0, "topic must not contain wildcards ('+' or '#')" },
    { "a\0", 2, "topic contains a NUL byte" },
    { "\xff", 0, "topic is not valid UTF-8" },
};

static const text_case filter_cases[] = {
    { "a/+/#", 0, NULL },
    { "#", 0, NULL },
    { "a/#/b", 0, "'#' must be the last level" },
    { "a+", 0, "'+' must be a whole level: 'a+'" },
    { "", 0, "empty filter" },
};

static void test_text_validation(void)
{
    char err[ERRLEN];
    for (size_t i = 0; i < sizeof publish_cases / sizeof publish_cases[0]; i++) {
        const text_case *c = &publish_cases[i];
        size_t len = c->len ? c->len : strlen(c->topic);
        err[0] = '\0';
        int rc = topic_validate_publish(c->topic, len, err, sizeof err);
        CHECK(c->error ? rc == -1 && strcmp(err, c->error) == 0 : rc == 0,
              "publish '%s': got rc %d '%s', want '%s'", c->topic, rc, err, c->error ? c->error : "ok");
    }
    for (size_t i = 0; i < sizeof filter_cases / sizeof filter_cases[0]; i++) {
        const text_case *c = &filter_cases[i];
        err[0] = '\0';
        int rc = topic_validate_filter(c->topic, strlen(c->topic), err, sizeof err);
        CHECK(c->error ? rc == -1 && strcmp(err, c->error) == 0 : rc == 0,
              "filter '%s': got rc %d '%s', want '%s'", c->topic, rc, err, c->error ? c->error : "ok");
    }
}

/* ---- matching ------------------------------------------------------------------------- */

#define MAX_CASE_ROUTES 6

typedef struct {
    const char *routes[MAX_CASE_ROUTES]; /* patterns; route id = index */
    const char *topic;
    size_t len;                          /* 0 = strlen(topic) */
    int expect;                          /* route index or -1 */
    const char *caps;                    /* captures joined by '|', "~" = absent; NULL = skip */
} match_case;

static const match_case match_cases[] = {
    /* literals */
    { { "a/b/c" }, "a/b/c", 0, 0, "" },
    { { "a/b/c" }, "a/b", 0, -1, NULL },
    { { "a/b" }, "a/b/c", 0, -1, NULL },
    { { "a/b" }, "A/b", 0, -1, NULL },
    { { "a/b" }, "a/b/", 0, -1, NULL },
    { { "averyveryverylonglevelname/x" }, "averyveryverylonglevelname/x", 0, 0, "" },
    { { "averyveryverylonglevelname/x" }, "averyveryverylonglevelnamf/x", 0, -1, NULL },
    /* wildcards at each position, named and raw */
    { { "{x}/b/c" }, "zz/b/c", 0, 0, "zz" },
    { { "a/{x}/c" }, "a/mid/c", 0, 0, "mid" },
    { { "a/b/{x}" }, "a/b/end", 0, 0, "end" },
    { { "+/b" }, "q/b", 0, 0, "q" },
    { { "a/+/c" }, "a/q/c", 0, 0, "q" },
    { { "+" }, "a/b", 0, -1, NULL },
    { { "#" }, "a/b/c", 0, 0, "a/b/c" },
    { { "#" }, "a", 0, 0, "a" },
    { { "a/#" }, "a/b/c", 0, 0, "b/c" },
    { { "a/{rest...}" }, "a/b/c", 0, 0, "b/c" },
    { { "+/#" }, "a/b/c", 0, 0, "a|b/c" },
    { { "{a}/x/{b}/{c...}" }, "1/x/2/3/4", 0, 0, "1|2|3/4" },
    { { "+/+/+/+/+" }, "1/2/3/4/5", 0, 0, "1|2|3|4|5" },
    { { "sensors/{device_id}/data" }, "sensors/42/data", 0, 0, "42" },
    { { "sensors/{id}/data" }, "sensors/42/data/x", 0, -1, NULL },
    /* '#' matches the parent level, with an absent capture */
    { { "a/#" }, "a", 0, 0, "~" },
    { { "a/{rest...}" }, "a", 0, 0, "~" },
    { { "a/+/#" }, "a/b", 0, 0, "b|~" },
    { { "a/+/#" }, "a", 0, -1, NULL },
    { { "a/#" }, "a/", 0, 0, "" },
    { { "a/+/#" }, "a/b/", 0, 0, "b|" },
    /* $-topics */
    { { "#" }, "$SYS/broker/load", 0, -1, NULL },
    { { "+/broker/load" }, "$SYS/broker/load", 0, -1, NULL },
    { { "$SYS/#" }, "$SYS/broker/load", 0, 0, "broker/load" },
    { { "$SYS/+/load" }, "$SYS/broker/load", 0, 0, "broker" },
    { { "#", "$SYS/#" }, "$SYS/x", 0, 1, "x" },
    { { "$SYS/#" }, "$SYS", 0, 0, "~" },
    { { "+/#" }, "$x", 0, -1, NULL },
    { { "#" }, "$", 0, -1, NULL },
    { { "#" }, "a$/b", 0, 0, "a$/b" },
    { { "a/+/#" }, "a/$x/y", 0, 0, "$x|y" },
    /* empty levels */
    { { "a/+/b" }, "a//b", 0, 0, "" },
    { { "a//b" }, "a//b", 0, 0, "" },
    { { "a//b" }, "a/b", 0, -1, NULL },
    { { "+/a" }, "/a", 0, 0, "" },
    { { "/a" }, "/a", 0, 0, "" },
    { { "a/+" }, "a/", 0, 0, "" },
    { { "a/" }, "a/", 0, 0, "" },
    { { "a/" }, "a", 0, -1, NULL },
    { { "+/+" }, "/", 0, 0, "|" },
    { { "#" }, "/", 0, 0, "/" },
    { { "/#" }, "/", 0, 0, "" },
    { { "+" }, "/", 0, -1, NULL },
    /* specificity: the first differing level decides, literal > '+' > '#' */
    { { "a/+/c", "a/b/#" }, "a/b/c", 0, 1, "c" },
    { { "a/#", "a/+/c" }, "a/b/c", 0, 1, "b" },
    { { "+/b/c", "a/+/c", "a/b/+" }, "a/b/c", 0, 2, "c" },
    { { "+/b/c", "a/+/c" }, "a/b/c", 0, 1, "b" },
    { { "#", "+/+/+" }, "a/b/c", 0, 1, "a|b|c" },
    { { "#", "+/+/+", "a/+/c", "a/b/c" }, "a/b/c", 0, 3, "" },
    { { "+/+/c", "a/#" }, "a/b/c", 0, 1, "b/c" },
    { { "a", "a/#" }, "a", 0, 0, "" },
    { { "a/#", "+" }, "a", 0, 0, "~" },
    { { "a/b/#", "a/+" }, "a/b", 0, 0, "~" },
    { { "a/#", "a/b/#" }, "a/b", 0, 1, "~" },
    /* backtracking out of a more specific dead end */
    { { "a/b/x", "a/+/c" }, "a/b/c", 0, 1, "b" },
    { { "a/b/x/#", "a/+/c" }, "a/b/c", 0, 1, "b" },
    { { "a/+/c/d", "+/b/c/e" }, "a/b/c/e", 0, 1, "a" },
    { { "a/b/c/d", "a/b/+/e", "a/+/c/e", "#" }, "a/b/c/e", 0, 1, "c" },
    { { "a/{x}", "a/{y}/z" }, "a/q", 0, 0, "q" },
    { { "a/{x}", "a/{y}/z" }, "a/q/z", 0, 1, "q" },
    /* UTF-8 */
    { { "ü/{x}" }, "ü/温度", 0, 0, "温度" },
    { { "温度/{x}" }, "温度/ok", 0, 0, "ok" },
    { { "{x}" }, "温度", 0, 0, "温度" },
    { { "ü/{x}" }, "u/x", 0, -1, NULL },
    /* topics that never match */
    { { "#" }, "a\0b", 3, -1, NULL },
    { { "#" }, "\xff/a", 0, -1, NULL },
    { { "#" }, "a/\xc0\x80", 0, -1, NULL },
    { { "#" }, "", 0, -1, NULL },
};

static void join_caps(const topic_span *caps, int n, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < n; i++) {
        const char *s = caps[i].ptr ? caps[i].ptr : "~";
        size_t len = caps[i].ptr ? caps[i].len : 1;
        int w = snprintf(buf + used, size - used, "%s%.*s", i ? "|" : "", (int)len, s);
        if (w < 0 || (size_t)w >= size - used)
            return;
        used += (size_t)w;
    }
}

static void test_matches(void)
{
    for (size_t i = 0; i < sizeof match_cases / sizeof match_cases[0]; i++) {
        const match_case *c = &match_cases[i];
        topic_trie *t = topic_trie_new();
        char err[ERRLEN];
        int ok = t != NULL;
        for (int r = 0; ok && r < MAX_CASE_ROUTES && c->routes[r]; r++) {
            topic_pattern p;
            ok = topic_pattern_compile(c->routes[r], strlen(c->routes[r]), &p, err, sizeof err) == 0 &&
                 topic_trie_add(t, p.filter, p.filter_len, r, err, sizeof err) == 0;
            if (!ok)
                CHECK(0, "case %zu: adding '%s': %s", i, c->routes[r], err);
            topic_pattern_free(&p);
        }
        if (ok) {
            topic_span caps[TOPIC_MAX_WILDCARDS];
            int ncaps = -1;
            size_t len = c->len ? c->len : strlen(c->topic);
            int got = topic_trie_match(t, c->topic, len, caps, TOPIC_MAX_WILDCARDS, &ncaps);
            char joined[ERRLEN] = "";
            if (got >= 0)
                join_caps(caps, ncaps, joined, sizeof joined);
            CHECK(got == c->expect && (c->caps == NULL || strcmp(joined, c->caps) == 0),
                  "case %zu: topic '%s' with '%s'...: got route %d caps '%s', want %d '%s'", i, c->topic,
                  c->routes[0], got, joined, c->expect, c->caps ? c->caps : "");
        }
        topic_trie_free(t);
    }
}

static void test_duplicates(void)
{
    topic_trie *t = topic_trie_new();
    char err[ERRLEN] = "";
    CHECK(topic_trie_add(t, "a/+", 3, 7, err, sizeof err) == 0, "add a/+");
    CHECK(topic_trie_add(t, "a/#", 3, 8, err, sizeof err) == 0, "add a/#");
    CHECK(topic_trie_add(t, "a", 1, 9, err, sizeof err) == 0, "add a");
    CHECK(topic_trie_add(t, "a/+", 3, 10, err, sizeof err) == -1 && strcmp(err, "duplicate of route 7") == 0,
          "duplicate a/+: '%s'", err);
    CHECK(topic_trie_add(t, "a/#", 3, 11, err, sizeof err) == -1 && strcmp(err, "duplicate of route 8") == 0,
          "duplicate a/#: '%s'", err);
    CHECK(topic_trie_add(t, "a", 1, 12, err, sizeof err) == -1 && strcmp(err, "duplicate of route 9") == 0,
          "duplicate a: '%s'", err);
    CHECK(topic_trie_add(t, "a/#/b", 5, 13, err, sizeof err) == -1 && strcmp(err, "'#' must be the last level") == 0,
          "invalid filter: '%s'", err);
    CHECK(topic_trie_add(t, "b", 1, -1, err, sizeof err) == -1 && strcmp(err, "route id must be >= 0") == 0,
          "negative id: '%s'", err);
    CHECK(topic_trie_find(t, "a/+", 3) == 7 && topic_trie_find(t, "a/#", 3) == 8 && topic_trie_find(t, "a/b", 3) == -1,
          "find");
    CHECK(topic_trie_count(t) == 3, "count %zu", topic_trie_count(t));
    topic_trie_free(t);

    /* Two patterns differing only in param names compile to the same filter. */
    topic_pattern p1, p2;
    topic_pattern_compile("x/{a}", 5, &p1, err, sizeof err);
    topic_pattern_compile("x/{b}", 5, &p2, err, sizeof err);
    t = topic_trie_new();
    topic_trie_add(t, p1.filter, p1.filter_len, 1, err, sizeof err);
    CHECK(topic_trie_add(t, p2.filter, p2.filter_len, 2, err, sizeof err) == -1 &&
              strcmp(err, "duplicate of route 1") == 0,
          "x/{a} vs x/{b}: '%s'", err);
    topic_pattern_free(&p1);
    topic_pattern_free(&p2);
    topic_trie_free(t);
}

/* Captures beyond maxcaps are counted but not written; deep tries use the heap stack. */
static void test_caps_and_depth(void)
{
    topic_trie *t = topic_trie_new();
    char err[ERRLEN];
    topic_trie_add(t, "+/+/+", 5, 0, err, sizeof err);
    topic_span caps[2] = { { NULL, 0 }, { NULL, 0 } };
    int n;
    int r = topic_trie_match(t, "a/b/c", 5, caps, 1, &n);
    CHECK(r == 0 && n == 3 && caps[0].len == 1 && caps[0].ptr[0] == 'a' && caps[1].ptr == NULL,
          "maxcaps 1: r %d n %d", r, n);
    r = topic_trie_match(t, "a/b/c", 5, NULL, 0, NULL);
    CHECK(r == 0, "NULL caps: r %d", r);
    topic_trie_free(t);

    /* 60 levels: more frames than the on-stack buffer. */
    char filter[256] = "", topic[256] = "";
    for (int i = 0; i < 60; i++) {
        strcat(filter, i ? "/+" : "+");
        strcat(topic, i ? "/x" : "x");
    }
    strcat(filter, "/end");
    strcat(topic, "/end");
    t = topic_trie_new();
    CHECK(topic_trie_add(t, filter, strlen(filter), 5, err, sizeof err) == 0, "add deep filter: %s", err);
    topic_span deep[64];
    r = topic_trie_match(t, topic, strlen(topic), deep, 64, &n);
    CHECK(r == 5 && n == 60 && deep[59].len == 1, "deep match: r %d n %d", r, n);
    topic[strlen(topic) - 1] = 'X';
    CHECK(topic_trie_match(t, topic, strlen(topic), deep, 64, &n) == -1, "deep miss");
    topic_trie_free(t);
}

static void test_many_routes(void)
{
    enum { N = 100000 };
    topic_trie *t = topic_trie_new();
    char err[ERRLEN], buf[128];
    int failures = 0;
    for (int i = 0; i < N; i++) {
        switch (i % 4) {
        case 0: snprintf(buf, sizeof buf, "sensors/%d/data", i); break;
        case 1: snprintf(buf, sizeof buf, "devices/+/%d/status", i); break;
        case 2: snprintf(buf, sizeof buf, "logs/%d/#", i); break;
        default: snprintf(buf, sizeof buf, "app/+/%d/+/events/with/a/rather/long/level/name", i); break;
        }
        if (topic_trie_add(t, buf, strlen(buf), i, err, sizeof err) != 0 && failures++ == 0)
            CHECK(0, "adding route %d '%s': %s", i, buf, err);
    }
    CHECK(failures == 0 && topic_trie_count(t) == N, "100000 routes added (%d failures)", failures);

    static const struct {
        const char *topic;
        int expect;
        const char *caps;
    } probes[] = {
        { "sensors/0/data", 0, "" },
        { "sensors/99996/data", 99996, "" },
        { "devices/d1/99997/status", 99997, "d1" },
        { "logs/99998/x/y", 99998, "x/y" },
        { "logs/50002", 50002, "~" },
        { "app/t/99999/k/events/with/a/rather/long/level/name", 99999, "t|k" },
        { "sensors/1/data", -1, NULL },
        { "sensors/100000/data", -1, NULL },
        { "devices/d1/99996/status", -1, NULL },
    };
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        topic_span caps[8];
        int n;
        int r = topic_trie_match(t, probes[i].topic, strlen(probes[i].topic), caps, 8, &n);
        char joined[ERRLEN] = "";
        if (r >= 0)
            join_caps(caps, n, joined, sizeof joined);
        CHECK(r == probes[i].expect && (probes[i].caps == NULL || strcmp(joined, probes[i].caps) == 0),
              "100k: '%s' got %d '%s', want %d", probes[i].topic, r, joined, probes[i].expect);
    }
    CHECK(topic_trie_add(t, "logs/6/#", 8, N, err, sizeof err) == -1 && strcmp(err, "duplicate of route 6") == 0,
          "100k duplicate: '%s'", err);
    topic_trie_free(t);
}

int main(void)
{
    test_patterns();
    test_pattern_limits();
    test_text_validation();
    test_matches();
    test_duplicates();
    test_caps_and_depth();
    test_many_routes();
    return TEST_SUMMARY("test_topic");
}
