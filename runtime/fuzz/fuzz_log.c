/* Fuzz target: a log line in JSON (LOG_FORMAT=json) and text. The input is
 * split at NUL bytes into the message, route, topic, error and traceback;
 * the line size comes from its first two bytes. A JSON line must be exactly
 * one valid JSON object with string or number values, then '\n'; a text
 * line must end in its one final '\n' or in lines the traceback brought. */
#include "log.h"
#include "topic_pattern.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A strict JSON string at s[*i] (RFC 8259); advances *i past it. */
static int json_string(const char *s, size_t len, size_t *i)
{
    if (*i >= len || s[*i] != '"') return 0;
    size_t start = ++*i;
    while (*i < len && s[*i] != '"') {
        unsigned char c = (unsigned char)s[*i];
        if (c < 0x20) return 0;
        if (c == '\\') {
            if (++*i >= len) return 0;
            char e = s[*i];
            if (e == 'u') {
                for (int k = 1; k <= 4; k++)
                    if (*i + k >= len || !strchr("0123456789abcdefABCDEF", s[*i + k]) || !s[*i + k]) return 0;
                *i += 4;
            } else if (!strchr("\"\\/bfnrt", e) || !e) {
                return 0;
            }
        }
        ++*i;
    }
    if (*i >= len) return 0;
    if (!topic_utf8_valid(s + start, *i - start)) return 0;
    ++*i;
    return 1;
}

/* {"k":"v"|digits, ...} filling s[0..len) exactly. */
static int json_flat_object(const char *s, size_t len)
{
    size_t i = 0;
    if (len < 2 || s[i++] != '{') return 0;
    for (int first = 1;; first = 0) {
        if (i < len && s[i] == '}') return !first && i + 1 == len;
        if (!first && (i >= len || s[i++] != ',')) return 0;
        if (!json_string(s, len, &i)) return 0;
        if (i >= len || s[i++] != ':') return 0;
        if (i < len && s[i] == '"') {
            if (!json_string(s, len, &i)) return 0;
        } else {
            size_t d = i;
            while (i < len && s[i] >= '0' && s[i] <= '9') i++;
            if (i == d) return 0;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    size_t cap = LOG_RENDER_MIN + (((size_t)data[0] << 8 | data[1]) % 8192);
    char *in = malloc(size + 1);
    if (!in) return 0;
    memcpy(in, data + 2, size - 2);
    in[size - 2] = 0;
    const char *part[5] = { NULL };
    const char *p = in, *end = in + size - 2;
    for (int k = 0; k < 5 && p <= end; k++) {
        part[k] = p;
        p += strlen(p) + 1;
    }
    log_fields f = { part[1], part[2], part[3], part[4] };
    char *line = malloc(cap);
    if (!line) abort();
    log_set_process(data[0] & 1 ? -1 : data[1] % 100);
    for (int json = 0; json <= 1; json++) {
        size_t n = log_render(line, cap, (log_level)(data[1] & 3), &f, part[0] ? part[0] : "", json);
        if (n == 0 || n > cap || line[n - 1] != '\n') abort();
        if (json) {
            if (memchr(line, '\n', n - 1)) abort();  /* one event, one line */
            if (!json_flat_object(line, n - 1)) abort();
        }
    }
    free(line);
    free(in);
    return 0;
}
