/* Fuzz target: the JSON string writer behind `status --json` and /status.
 * Its output must be exactly one valid JSON string (RFC 8259, UTF-8) that
 * decodes back to the input whenever the input is UTF-8 itself. */
#include "strbuf.h"
#include "topic_pattern.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void put_utf8(char *out, size_t *n, uint32_t cp)
{
    if (cp < 0x80) out[(*n)++] = (char)cp;
    else if (cp < 0x800) { out[(*n)++] = (char)(0xC0 | cp >> 6); out[(*n)++] = (char)(0x80 | (cp & 0x3F)); }
    else if (cp < 0x10000) {
        out[(*n)++] = (char)(0xE0 | cp >> 12);
        out[(*n)++] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        out[(*n)++] = (char)(0xF0 | cp >> 18);
        out[(*n)++] = (char)(0x80 | (cp >> 12 & 0x3F));
        out[(*n)++] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
}

/* A strict validator and decoder of one JSON string literal filling all of
 * s[0..len); the decoded bytes go to out (room for len). -1 if invalid. */
static long json_string(const char *s, size_t len, char *out)
{
    if (len < 2 || s[0] != '"' || s[len - 1] != '"') return -1;
    if (!topic_utf8_valid(s, len)) return -1;
    size_t n = 0;
    for (size_t i = 1; i < len - 1; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20) return -1;
        if (c == '"') return -1;  /* the literal ended early */
        if (c != '\\') { out[n++] = (char)c; continue; }
        if (++i >= len - 1) return -1;
        switch (s[i]) {
        case '"': case '\\': case '/': out[n++] = s[i]; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            if (i + 4 >= len - 1) return -1;
            uint32_t cp = 0;
            for (int k = 1; k <= 4; k++) {
                int h = hexval(s[i + k]);
                if (h < 0) return -1;
                cp = cp << 4 | (uint32_t)h;
            }
            i += 4;
            if (cp >= 0xD800 && cp <= 0xDFFF) return -1;  /* the writer never needs surrogates */
            put_utf8(out, &n, cp);
            break;
        }
        default: return -1;
        }
    }
    return (long)n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size + 1);
    if (!in) return 0;
    memcpy(in, data, size);
    in[size] = 0;
    size_t inlen = strlen(in);
    strbuf b;
    sb_init(&b);
    sb_put(&b, "x", 1);  /* the writer appends: what was there stays */
    sb_json_str(&b, in);
    if (b.oom) { sb_free(&b); free(in); return 0; }
    if (b.len < 1 || b.p[0] != 'x' || strlen(b.p) != b.len) abort();
    char *dec = malloc(b.len + 1);
    if (!dec) abort();
    long n = json_string(b.p + 1, b.len - 1, dec);
    if (n < 0) abort();
    if (topic_utf8_valid(in, inlen) && ((size_t)n != inlen || memcmp(dec, in, inlen))) abort();
    free(dec);
    sb_free(&b);
    free(in);
    return 0;
}
