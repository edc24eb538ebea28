/* The presence record parser. Records come from the broker, where anyone
 * allowed to publish under routemq/presence/ can write them: every byte is
 * checked here, once, before the master looks at a field. A record is a
 * flat JSON object; unknown members are allowed (newer versions add some)
 * but must be valid JSON themselves. */
#include "presence_record.h"
#include "json_scan.h"
#include "strbuf.h"
#include "topic_pattern.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SKIP_DEPTH_MAX 16  /* nesting of an unknown member's value */

typedef struct parser {
    const char *s;
    size_t len, pos;
    char *err;
    size_t errlen;
} parser;

static int fail(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(parser *p, const char *fmt, ...)
{
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (p->err && p->errlen) snprintf(p->err, p->errlen, "%s at byte %zu", what, p->pos);
    return -1;
}

static void ws(parser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
                               p->s[p->pos] == '\r'))
        p->pos++;
}

static int peek(parser *p)
{
    return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}

static int expect(parser *p, char c)
{
    ws(p);
    if (peek(p) != (unsigned char)c) return fail(p, "expected '%c'", c);
    p->pos++;
    return 0;
}

static int hex4(parser *p, uint32_t *out)
{
    if (p->len - p->pos < 4) return fail(p, "short \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos++];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return fail(p, "bad \\u escape");
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return 0;
}

/* A string literal, unescaped into a new NUL-terminated string (out may be
 * NULL to only check it). No NUL bytes (C strings), UTF-8, at most
 * PRESENCE_STR_MAX bytes once decoded. */
static int string(parser *p, char **out)
{
    if (out) *out = NULL;
    ws(p);
    if (peek(p) != '"') return fail(p, "expected a string");
    p->pos++;
    char buf[PRESENCE_STR_MAX + 4];
    size_t n = 0;
    for (;;) {
        if (p->pos >= p->len) return fail(p, "unterminated string");
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') { p->pos++; break; }
        if (c < 0x20) return fail(p, "control character in a string");
        if (n > PRESENCE_STR_MAX) return fail(p, "string longer than %d bytes", PRESENCE_STR_MAX);
        if (c == '\\') {
            p->pos++;
            if (p->pos >= p->len) return fail(p, "unterminated string");
            char e = p->s[p->pos++];
            const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
            const char *k = e ? strchr(from, e) : NULL;
            if (k) { buf[n++] = to[k - from]; continue; }
            if (e != 'u') return fail(p, "bad escape \\%c", e);
            uint32_t cp;
            if (hex4(p, &cp)) return -1;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(p, "lone low surrogate");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (p->len - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
                    return fail(p, "lone high surrogate");
                p->pos += 2;
                if (hex4(p, &lo)) return -1;
                if (lo < 0xDC00 || lo > 0xDFFF) return fail(p, "bad surrogate pair");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0) return fail(p, "\\u0000 in a string");
            n += json_utf8_put(buf + n, cp);
            continue;
        }
        size_t k = c < 0x80 ? 1 : topic_utf8_char(p->s + p->pos, p->len - p->pos);
        if (k == 0) return fail(p, "invalid UTF-8 in a string");
        memcpy(buf + n, p->s + p->pos, k);
        n += k;
        p->pos += k;
    }
    if (n > PRESENCE_STR_MAX) return fail(p, "string longer than %d bytes", PRESENCE_STR_MAX);
    if (!out) return 0;
    if (!(*out = malloc(n + 1))) return fail(p, "out of memory");
    memcpy(*out, buf, n);
    (*out)[n] = 0;
    return 0;
}

/* A JSON number (RFC 8259 grammar); with out, it must be a whole number that fits. */
static int number(parser *p, long long *out)
{
    ws(p);
    size_t start = p->pos;
    if (peek(p) == '-') p->pos++;
    if (peek(p) == '0') p->pos++;
    else if (peek(p) >= '1' && peek(p) <= '9') while (peek(p) >= '0' && peek(p) <= '9') p->pos++;
    else return fail(p, "expected a number");
    int whole = 1;
    if (peek(p) == '.') {
        whole = 0;
        p->pos++;
        if (!(peek(p) >= '0' && peek(p) <= '9')) return fail(p, "bad number");
        while (peek(p) >= '0' && peek(p) <= '9') p->pos++;
    }
    if (peek(p) == 'e' || peek(p) == 'E') {
        whole = 0;
        p->pos++;
        if (peek(p) == '+' || peek(p) == '-') p->pos++;
        if (!(peek(p) >= '0' && peek(p) <= '9')) return fail(p, "bad number");
        while (peek(p) >= '0' && peek(p) <= '9') p->pos++;
    }
    if (!out) return 0;
    char digits[32];
    size_t n = p->pos - start;
    if (!whole || n >= sizeof digits) return fail(p, "expected a whole number");
    memcpy(digits, p->s + start, n);
    digits[n] = 0;
    errno = 0;
    *out = strtoll(digits, NULL, 10);
    if (errno) return fail(p, "number out of range");
    return 0;
}

static int literal(parser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n)) return fail(p, "unexpected character");
    p->pos += n;
    return 0;
}

/* Any JSON value, checked and skipped (an unknown member). */
static int skip_value(parser *p, int depth)
{
    if (depth > SKIP_DEPTH_MAX) return fail(p, "nested deeper than %d", SKIP_DEPTH_MAX);
    ws(p);
    int c = peek(p);
    if (c == '"') return string(p, NULL);
    if (c == 't') return literal(p, "true");
    if (c == 'f') return literal(p, "false");
    if (c == 'n') return literal(p, "null");
    if (c == '[' || c == '{') {
        char close = c == '[' ? ']' : '}';
        p->pos++;
        ws(p);
        if (peek(p) == close) { p->pos++; return 0; }
        for (;;) {
            if (close == '}') {
                if (string(p, NULL) || expect(p, ':')) return -1;
            }
            if (skip_value(p, depth + 1)) return -1;
            ws(p);
            if (peek(p) == close) { p->pos++; return 0; }
            if (expect(p, ',')) return -1;
        }
    }
    return number(p, NULL);
}

static void free_list(char **l, int n)
{
    for (int i = 0; i < n; i++) free(l[i]);
    free(l);
}

/* An array of strings, at most PRESENCE_LIST_MAX. */
static int string_list(parser *p, char ***out, int *count)
{
    if (expect(p, '[')) return -1;
    char **l = NULL;
    int n = 0;
    ws(p);
    if (peek(p) == ']') { p->pos++; *out = NULL; *count = 0; return 0; }
    for (;;) {
        if (n == PRESENCE_LIST_MAX) { free_list(l, n); return fail(p, "more than %d entries", PRESENCE_LIST_MAX); }
        char **nl = realloc(l, (size_t)(n + 1) * sizeof *nl);
        if (!nl) { free_list(l, n); return fail(p, "out of memory"); }
        l = nl;
        if (string(p, &l[n])) { free_list(l, n); return -1; }
        n++;
        ws(p);
        if (peek(p) == ']') { p->pos++; break; }
        if (expect(p, ',')) { free_list(l, n); return -1; }
    }
    *out = l;
    *count = n;
    return 0;
}

static int is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return s[n] == 0;
}

/* "<kid>:<mac>[,<kid>:<mac>]", lower-case hex of the right lengths. */
static int parse_mac(parser *p, const char *v, presence_record *r)
{
    const size_t one = PRESENCE_KID_LEN + 1 + PRESENCE_MAC_LEN;
    for (;;) {
        if (r->nmacs == PRESENCE_MACS_MAX) return fail(p, "mac: more than %d MACs", PRESENCE_MACS_MAX);
        if (strlen(v) < one || v[PRESENCE_KID_LEN] != ':' || (v[one] && v[one] != ','))
            return fail(p, "mac is not <%d hex digits>:<%d hex digits>", PRESENCE_KID_LEN, PRESENCE_MAC_LEN);
        char *kid = r->kid[r->nmacs], *mac = r->mac[r->nmacs];
        memcpy(kid, v, PRESENCE_KID_LEN);
        kid[PRESENCE_KID_LEN] = 0;
        memcpy(mac, v + PRESENCE_KID_LEN + 1, PRESENCE_MAC_LEN);
        mac[PRESENCE_MAC_LEN] = 0;
        if (!is_hex(kid, PRESENCE_KID_LEN) || !is_hex(mac, PRESENCE_MAC_LEN))
            return fail(p, "mac is not <%d hex digits>:<%d hex digits>", PRESENCE_KID_LEN, PRESENCE_MAC_LEN);
        r->nmacs++;
        if (!v[one]) return 0;
        v += one + 1;
    }
}

static int member(parser *p, const char *key, presence_record *r, int *mac_seen)
{
    struct { const char *name; char **dst; } strs[] = {
        { "instance", &r->instance }, { "host", &r->host }, { "version", &r->version }, { "group", &r->group },
        { "state", &r->state }, { "sessions", &r->sessions }, { "adopted_by", &r->adopted_by },
    };
    struct { const char *name; long long *dst; } nums[] = {
        { "pid", &r->pid }, { "workers", &r->workers }, { "session_expiry", &r->session_expiry },
        { "since", &r->since }, { "seq", &r->seq },
    };
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++)
        if (!strcmp(key, strs[i].name)) return string(p, strs[i].dst);
    for (size_t i = 0; i < sizeof nums / sizeof *nums; i++)
        if (!strcmp(key, nums[i].name)) return number(p, nums[i].dst);
    if (!strcmp(key, "clients")) return string_list(p, &r->clients, &r->nclients);
    if (!strcmp(key, "shared_routes")) return string_list(p, &r->shared_routes, &r->nshared);
    if (!strcmp(key, "routes")) return string_list(p, &r->routes, &r->nroutes);
    if (!strcmp(key, "mac")) {
        char *v;
        if (string(p, &v)) return -1;
        int rc = parse_mac(p, v, r);
        free(v);
        *mac_seen = 1;
        return rc;
    }
    return skip_value(p, 1);
}

static int object(parser *p, presence_record *r)
{
    char *keys[PRESENCE_MEMBERS_MAX];
    int nkeys = 0, rc = -1, mac_seen = 0;
    if (expect(p, '{')) return -1;
    ws(p);
    if (peek(p) == '}') { p->pos++; return 0; }
    for (;;) {
        size_t before = p->pos;  /* the comma before this member, or just after '{' */
        ws(p);
        if (mac_seen) { fail(p, "mac must be the last member"); goto out; }
        if (nkeys == PRESENCE_MEMBERS_MAX) { fail(p, "more than %d members", PRESENCE_MEMBERS_MAX); goto out; }
        char *key;
        if (string(p, &key)) goto out;
        for (int i = 0; i < nkeys; i++)
            if (!strcmp(keys[i], key)) { free(key); fail(p, "duplicate member"); goto out; }
        keys[nkeys++] = key;
        if (expect(p, ':') || member(p, key, r, &mac_seen)) goto out;
        if (mac_seen && !r->signed_len) {
            if (nkeys == 1) { fail(p, "mac must follow the record"); goto out; }
            r->signed_len = before - 1;  /* the comma */
        }
        ws(p);
        if (peek(p) == '}') { p->pos++; break; }
        if (expect(p, ',')) goto out;
    }
    rc = 0;
out:
    for (int i = 0; i < nkeys; i++) free(keys[i]);
    return rc;
}

int presence_record_parse(const char *buf, size_t len, presence_record *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    parser p = { .s = buf, .len = len, .err = err, .errlen = errlen };
    if (len > PRESENCE_RECORD_MAX) { fail(&p, "record longer than %d bytes", PRESENCE_RECORD_MAX); return -1; }
    if (object(&p, r)) goto bad;
    ws(&p);
    if (p.pos != len) { fail(&p, "trailing bytes after the record"); goto bad; }
    if (!r->instance || !*r->instance) { fail(&p, "no instance"); goto bad; }
    if (!r->state) { fail(&p, "no state"); goto bad; }
    const char *states[] = { "running", "stopped", "lost", "adopted" };
    int known = 0;
    for (size_t i = 0; i < sizeof states / sizeof *states; i++) known |= !strcmp(r->state, states[i]);
    if (!known) { fail(&p, "unknown state"); goto bad; }
    return 0;
bad:
    presence_record_free(r);
    return -1;
}

void presence_record_free(presence_record *r)
{
    char **strs[] = { &r->instance, &r->host, &r->version, &r->group, &r->state, &r->sessions, &r->adopted_by };
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) free(*strs[i]);
    free_list(r->clients, r->nclients);
    free_list(r->shared_routes, r->nshared);
    free_list(r->routes, r->nroutes);
    memset(r, 0, sizeof *r);
}

int presence_record_roundtrip(const char *s, char *err, size_t errlen)
{
    strbuf b;
    sb_init(&b);
    sb_puts(&b, "{\"instance\":");
    sb_json_str(&b, s);
    sb_puts(&b, ",\"state\":\"running\"}");
    presence_record r;
    char why[256] = "out of memory";
    int parsed = !b.oom && presence_record_parse(b.p, b.len, &r, why, sizeof why) == 0;
    int ok = parsed && !strcmp(r.instance, s);
    if (parsed && !ok) snprintf(why, sizeof why, "it reads back as '%s' (not UTF-8, or control characters)", r.instance);
    if (parsed) presence_record_free(&r);
    sb_free(&b);
    if (!ok) snprintf(err, errlen, "%s", why);
    return ok;
}
