/* Pass one of ctx:json(): the strict JSON checker that also counts elements (json_scan.h).
 * Iterative, with an explicit stack, so hostile nesting cannot exhaust the C stack. The
 * '\0' after the text ends every loop without a bounds check; a '\0' before the end is
 * refused where it stands (a control character in a string, no value elsewhere). */
#include "json_scan.h"
#include "topic_pattern.h"

#include <stdio.h>

typedef struct {
    const char *s, *end;
    char *err;
    size_t errlen;
} scanner;

/* Bytes a string holds as they are: not a quote, backslash, control character or the
 * start of a multi-byte UTF-8 sequence (those take the slow path). */
static const unsigned char plain[256] = {
    [0x20] = 1, [0x21] = 1, [0x23 ... 0x5B] = 1, [0x5D ... 0x7F] = 1,
};

static int fail(scanner *sc, const char *at, const char *what)
{
    if (sc->errlen > 0) snprintf(sc->err, sc->errlen, "%s at character %zu", what, (size_t)(at - sc->s) + 1);
    return -1;
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

long json_hex4(const char *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i], l = (char)(c | 0x20);
        int d = is_digit(c) ? c - '0' : l >= 'a' && l <= 'f' ? l - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

size_t json_utf8_put(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The \u escape at p (its backslash): its length (6, or 12 for a surrogate pair), or 0
 * with the reason in *why. */
static size_t unicode_escape(const char *p, const char **why)
{
    long cp = json_hex4(p + 2);
    *why = "invalid \\u escape in string";
    if (cp < 0) return 0;
    if (cp < 0xD800 || cp > 0xDFFF) return 6;
    *why = "unpaired surrogate in string";
    if (cp > 0xDBFF || p[6] != '\\' || p[7] != 'u') return 0;
    long lo = json_hex4(p + 8);
    return lo >= 0xDC00 && lo <= 0xDFFF ? 12 : 0;
}

/* The string at *pp (its opening quote); *pp is left after its closing quote. */
static int scan_string(scanner *sc, const char **pp)
{
    const char *start = *pp, *p = start + 1;
    for (;;) {
        while (plain[(unsigned char)*p]) p++;
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            *pp = p + 1;
            return 0;
        }
        if (c >= 0x80) {
            size_t n = topic_utf8_char(p, (size_t)(sc->end - p));
            if (n == 0) return fail(sc, p, "invalid UTF-8 in string");
            p += n;
        } else if (c == '\\') {
            char e = p[1];
            if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
                p += 2;
                continue;
            }
            if (e != 'u') return fail(sc, p, p + 1 == sc->end ? "unterminated string" : "invalid escape in string");
            const char *why;
            size_t n = unicode_escape(p, &why);
            if (n == 0) return fail(sc, p, why);
            p += n;
        } else {
            return fail(sc, p == sc->end ? start : p, p == sc->end ? "unterminated string" : "control character in string");
        }
    }
}

/* JSON's number grammar only: what strtod would also take (hex, inf, nan, a leading '+'
 * or zero) is refused here. */
static int scan_number(scanner *sc, const char **pp)
{
    const char *start = *pp, *p = start;
    p += *p == '-';
    if (!is_digit(*p)) return fail(sc, start, "invalid number");
    if (*p == '0') {
        p++;
        if (is_digit(*p)) return fail(sc, start, "invalid number (leading zero)");
    } else {
        while (is_digit(*p)) p++;
    }
    if (*p == '.') {
        p++;
        if (!is_digit(*p)) return fail(sc, start, "invalid number");
        while (is_digit(*p)) p++;
    }
    if ((*p | 0x20) == 'e') {
        p++;
        p += *p == '+' || *p == '-';
        if (!is_digit(*p)) return fail(sc, start, "invalid number");
        while (is_digit(*p)) p++;
    }
    *pp = p;
    return 0;
}

/* 1 if p starts with word; compares byte by byte, so it stops at the '\0'. */
static int has_word(const char *p, const char *word)
{
    for (; *word; p++, word++)
        if (*p != *word) return 0;
    return 1;
}

/* A string, number or literal at *pp (after whitespace). */
static int scan_scalar(scanner *sc, const char **pp)
{
    const char *p = *pp;
    switch (*p) {
    case '"': return scan_string(sc, pp);
    case 't': if (!has_word(p, "true")) break; *pp = p + 4; return 0;
    case 'f': if (!has_word(p, "false")) break; *pp = p + 5; return 0;
    case 'n': if (!has_word(p, "null")) break; *pp = p + 4; return 0;
    default:
        if (*p == '-' || is_digit(*p)) return scan_number(sc, pp);
        break;
    }
    return fail(sc, p, "expected a value");
}

/* An object member's key and colon, *pp left at its value. */
static int scan_key(scanner *sc, const char **pp)
{
    const char *p = skip_ws(*pp);
    if (*p != '"') return fail(sc, p, "expected a string key");
    if (scan_string(sc, &p) != 0) return -1;
    p = skip_ws(p);
    if (*p != ':') return fail(sc, p, "expected ':'");
    *pp = p + 1;
    return 0;
}

int json_scan(const char *buf, size_t len, uint32_t *counts, size_t cap, size_t *ncont,
              char *err, size_t errlen)
{
    scanner sc = { buf, buf + len, err, errlen };
    struct {
        size_t index;
        uint32_t count;
        char close;
    } stack[JSON_MAX_DEPTH];
    int depth = 0;
    size_t n = 0;
    const char *p = buf;

    *ncont = 0;
    for (;;) {
        /* A value is expected here. */
        p = skip_ws(p);
        if (*p == '{' || *p == '[') {
            if (depth == JSON_MAX_DEPTH) return fail(&sc, p, "nested too deeply (more than 1000 levels)");
            char close = *p == '{' ? '}' : ']';
            p = skip_ws(p + 1);
            if (*p == close) {
                if (n < cap) counts[n] = 0;
                n++;
                p++;
            } else {
                stack[depth].index = n++;
                stack[depth].count = 1;
                stack[depth].close = close;
                depth++;
                if (close == '}' && scan_key(&sc, &p) != 0) return -1;
                continue;
            }
        } else if (scan_scalar(&sc, &p) != 0) {
            return -1;
        }
        /* A value is complete: a comma or the close of its container follows. */
        for (;;) {
            p = skip_ws(p);
            if (depth == 0) {
                if (p != sc.end) return fail(&sc, p, "unexpected data after the value");
                *ncont = n;
                return 0;
            }
            char close = stack[depth - 1].close;
            if (*p == close) {
                p++;
                depth--;
                if (stack[depth].index < cap) counts[stack[depth].index] = stack[depth].count;
                continue;
            }
            if (*p != ',') return fail(&sc, p, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
            p++;
            stack[depth - 1].count++;
            if (close == '}' && scan_key(&sc, &p) != 0) return -1;
            break;
        }
    }
}
