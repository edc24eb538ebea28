/* Route pattern compiler and MQTT topic/filter validation. */
#include "topic_pattern.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Level text quoted in messages is capped so one absurd level cannot hide the reason. */
#define QUOTE_MAX 48

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Copy s into buf for quoting, cut at a character boundary so the message stays valid UTF-8. */
static const char *quote(const char *s, size_t n, char *buf)
{
    if (n <= QUOTE_MAX) {
        memcpy(buf, s, n);
        buf[n] = '\0';
        return buf;
    }
    size_t cut = QUOTE_MAX;
    while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
        cut--;
    memcpy(buf, s, cut);
    memcpy(buf + cut, "...", 4);
    return buf;
}

size_t topic_utf8_char(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    if (len == 0)
        return 0;
    unsigned c = *p;
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned cp, min;
    if ((c & 0xE0) == 0xC0) {
        n = 2; cp = c & 0x1F; min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3; cp = c & 0x0F; min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4; cp = c & 0x07; min = 0x10000;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

int topic_utf8_valid(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if ((unsigned char)s[i] < 0x80) {  /* the common case: no call per byte */
            i++;
            continue;
        }
        size_t n = topic_utf8_char(s + i, len - i);
        if (n == 0)
            return 0;
        i += n;
    }
    return 1;
}

/* Checks shared by patterns, filters and topics; `what` names the thing in the message. */
static int check_text(const char *s, size_t len, const char *what, char *err, size_t errlen)
{
    if (len == 0) {
        set_err(err, errlen, "empty %s", what);
        return -1;
    }
    if (len > TOPIC_MAX_LEN) {
        set_err(err, errlen, "%s longer than %d bytes", what, TOPIC_MAX_LEN);
        return -1;
    }
    if (memchr(s, '\0', len) != NULL) {
        set_err(err, errlen, "%s contains a NUL byte", what);
        return -1;
    }
    if (!topic_utf8_valid(s, len)) {
        set_err(err, errlen, "%s is not valid UTF-8", what);
        return -1;
    }
    return 0;
}

static size_t level_end(const char *s, size_t start, size_t len)
{
    const char *slash = memchr(s + start, '/', len - start);
    return slash ? (size_t)(slash - s) : len;
}

/* Raw wildcard rules shared by filters and patterns: 0 ok, -1 with reason. */
static int check_wild_level(const char *lvl, size_t n, int last, char *err, size_t errlen)
{
    char q[QUOTE_MAX + 4];
    if (n == 1 && lvl[0] == '+')
        return 0;
    if (n == 1 && lvl[0] == '#') {
        if (last)
            return 0;
        set_err(err, errlen, "'#' must be the last level");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (lvl[i] == '+' || lvl[i] == '#') {
            set_err(err, errlen, "'%c' must be a whole level: '%s'", lvl[i], quote(lvl, n, q));
            return -1;
        }
    }
    return 0;
}

int topic_validate_publish(const char *topic, size_t len, char *err, size_t errlen)
{
    if (check_text(topic, len, "topic", err, errlen) != 0)
        return -1;
    if (memchr(topic, '+', len) || memchr(topic, '#', len)) {
        set_err(err, errlen, "topic must not contain wildcards ('+' or '#')");
        return -1;
    }
    return 0;
}

int topic_validate_filter(const char *filter, size_t len, char *err, size_t errlen)
{
    if (check_text(filter, len, "filter", err, errlen) != 0)
        return -1;
    for (size_t start = 0;;) {
        size_t end = level_end(filter, start, len);
        if (check_wild_level(filter + start, end - start, end == len, err, errlen) != 0)
            return -1;
        if (end == len)
            return 0;
        start = end + 1;
    }
}

void topic_pattern_free(topic_pattern *p)
{
    if (p == NULL)
        return;
    free(p->filter);
    for (int i = 0; i < p->nwild && i < TOPIC_MAX_WILDCARDS; i++)
        free(p->names[i]);
    memset(p, 0, sizeof *p);
}

static int name_valid(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
        int digit = c >= '0' && c <= '9';
        if (!(alpha || (digit && i > 0)))
            return 0;
    }
    return n > 0;
}

/* A level containing a brace must be exactly "{name}" or "{name...}". */
static int parse_param(const char *lvl, size_t n, const char **name, size_t *namelen, int *rest,
                       char *err, size_t errlen)
{
    char q[QUOTE_MAX + 4];
    int open = 0, pairs = 0;
    for (size_t i = 0; i < n; i++) {
        if (lvl[i] == '{') {
            if (open)
                goto unbalanced;
            open = 1;
            pairs++;
        } else if (lvl[i] == '}') {
            if (!open)
                goto unbalanced;
            open = 0;
        }
    }
    if (open)
        goto unbalanced;
    if (pairs != 1 || lvl[0] != '{' || lvl[n - 1] != '}') {
        set_err(err, errlen, "a parameter must be a whole level: '%s'", quote(lvl, n, q));
        return -1;
    }
    const char *in = lvl + 1;
    size_t inlen = n - 2;
    *rest = inlen >= 3 && memcmp(in + inlen - 3, "...", 3) == 0;
    if (*rest)
        inlen -= 3;
    if (inlen == 0) {
        set_err(err, errlen, "empty parameter name: '%s'", quote(lvl, n, q));
        return -1;
    }
    if (!name_valid(in, inlen)) {
        set_err(err, errlen, "invalid parameter name: '%s'", quote(in, inlen, q));
        return -1;
    }
    *name = in;
    *namelen = inlen;
    return 0;
unbalanced:
    set_err(err, errlen, "unbalanced braces: '%s'", quote(lvl, n, q));
    return -1;
}

static int has_prefix(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(s, prefix, n) == 0;
}

/* Append one wildcard to out; name may be NULL (raw wildcard). */
static int add_wild(topic_pattern *out, const char *name, size_t namelen, char *err, size_t errlen)
{
    char q[QUOTE_MAX + 4];
    if (out->nwild == TOPIC_MAX_WILDCARDS) {
        set_err(err, errlen, "more than %d wildcards", TOPIC_MAX_WILDCARDS);
        return -1;
    }
    char *copy = NULL;
    if (name != NULL) {
        for (int i = 0; i < out->nwild; i++) {
            const char *other = out->names[i];
            if (other && strlen(other) == namelen && memcmp(other, name, namelen) == 0) {
                set_err(err, errlen, "duplicate parameter name: '%s'", quote(name, namelen, q));
                return -1;
            }
        }
        copy = malloc(namelen + 1);
        if (copy == NULL) {
            set_err(err, errlen, "out of memory");
            return -1;
        }
        memcpy(copy, name, namelen);
        copy[namelen] = '\0';
    }
    out->names[out->nwild++] = copy;
    return 0;
}

/* Translate one level of a pattern, appending its filter form to out->filter. */
static int compile_level(const char *lvl, size_t n, int last, topic_pattern *out, char *err, size_t errlen)
{
    char *f = out->filter;
    if (memchr(lvl, '{', n) || memchr(lvl, '}', n)) {
        const char *name;
        size_t namelen;
        int rest;
        if (parse_param(lvl, n, &name, &namelen, &rest, err, errlen) != 0)
            return -1;
        if (rest && !last) {
            char q[QUOTE_MAX + 4];
            set_err(err, errlen, "'{%s...}' must be the last level", quote(name, namelen, q));
            return -1;
        }
        if (add_wild(out, name, namelen, err, errlen) != 0)
            return -1;
        f[out->filter_len++] = rest ? '#' : '+';
        return 0;
    }
    if (check_wild_level(lvl, n, last, err, errlen) != 0)
        return -1;
    if (n == 1 && (lvl[0] == '+' || lvl[0] == '#')) {
        if (add_wild(out, NULL, 0, err, errlen) != 0)
            return -1;
    }
    memcpy(f + out->filter_len, lvl, n);
    out->filter_len += n;
    return 0;
}

int topic_pattern_compile(const char *pattern, size_t len, topic_pattern *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (check_text(pattern, len, "pattern", err, errlen) != 0)
        return -1;
    /* Shared subscriptions are the runtime's business (shared = true); a hand-typed prefix
     * would double them up and break matching of the real topic. */
    if (has_prefix(pattern, len, "$share/") || has_prefix(pattern, len, "$queue/")) {
        set_err(err, errlen, "'%.7s' is reserved for shared subscriptions: use shared = true", pattern);
        return -1;
    }
    /* Each level's filter form is never longer than the pattern level it comes from. */
    out->filter = malloc(len + 1);
    if (out->filter == NULL) {
        set_err(err, errlen, "out of memory");
        return -1;
    }
    for (size_t start = 0;;) {
        size_t end = level_end(pattern, start, len);
        int last = end == len;
        if (compile_level(pattern + start, end - start, last, out, err, errlen) != 0) {
            topic_pattern_free(out);
            return -1;
        }
        if (last)
            break;
        out->filter[out->filter_len++] = '/';
        start = end + 1;
    }
    out->filter[out->filter_len] = '\0';
    return 0;
}
