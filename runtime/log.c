/* Logging to stderr. Each line is written with one write() so lines from
 * the master and the workers sharing one stderr pipe do not interleave. */
#include "log.h"
#include "topic_pattern.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static log_level log_min = LOGL_INFO;
static int log_json;
static int log_slot = -1;
static char log_label[128];  /* replaces "worker N" when set (adoption workers) */

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_setup(log_level min, int json) { log_min = min; log_json = json; }
void log_set_process(int slot) { log_slot = slot; }
void log_set_label(const char *label) { snprintf(log_label, sizeof log_label, "%s", label); }
int log_enabled(log_level lvl) { return lvl >= log_min; }

int log_level_parse(const char *s)
{
    if (!strcasecmp(s, "debug")) return LOGL_DEBUG;
    if (!strcasecmp(s, "info")) return LOGL_INFO;
    if (!strcasecmp(s, "warn") || !strcasecmp(s, "warning")) return LOGL_WARN;
    if (!strcasecmp(s, "error")) return LOGL_ERROR;
    return -1;
}

/* A line being built. Text stops TAIL_ROOM bytes short of the end, so the
 * closing quote, brace and newline always fit: a cut line is still one line
 * and, in JSON, still one object. */
#define TAIL_ROOM 8

typedef struct { char *p; size_t len, cap; } buf;

static int buf_fits(const buf *b, size_t n) { return b->len + n + TAIL_ROOM <= b->cap; }

static void buf_put(buf *b, const char *s, size_t n)
{
    if (!buf_fits(b, n)) n = b->len + TAIL_ROOM < b->cap ? b->cap - TAIL_ROOM - b->len : 0;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}
static void buf_puts(buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* The closing bytes, into the room kept for them. */
static void buf_tail(buf *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len + n > b->cap) n = b->cap - b->len;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* A JSON string: escapes as strbuf's sb_json_str, bytes that are not UTF-8
 * as \ufffd; cut whole (never inside an escape or a character) when full. */
static void buf_json_str(buf *b, const char *s)
{
    buf_put(b, "\"", 1);
    size_t left = strlen(s);
    while (*s) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        const char *out = esc;
        size_t n = 1, k;
        if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; k = 2; }
        else if (c == '\n') { out = "\\n"; k = 2; }
        else if (c == '\t') { out = "\\t"; k = 2; }
        else if (c < 0x20 || c == 0x7f) { snprintf(esc, sizeof esc, "\\u%04x", c); k = 6; }
        else if (c < 0x80) { out = s; k = 1; }
        else if ((n = topic_utf8_char(s, left)) > 0) { out = s; k = n; }
        else { out = "\\ufffd"; k = 6; n = 1; }
        if (!buf_fits(b, k + 1)) break;
        buf_put(b, out, k);
        s += n;
        left -= n;
    }
    buf_tail(b, "\"");
}
/* ,"key":"value" - or nothing when not even the key and "" fit any more. */
static void json_field(buf *b, const char *key, const char *value)
{
    char head[32];
    int k = snprintf(head, sizeof head, ",\"%s\":", key);
    if (!buf_fits(b, (size_t)k + 2)) return;
    buf_put(b, head, (size_t)k);
    buf_json_str(b, value);
}

static void timestamp(char *out, size_t n)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, n - k, ".%03ldZ", ts.tv_nsec / 1000000);
}

size_t log_render(char *line, size_t cap, log_level lvl, const log_fields *f, const char *msg, int json)
{
    char ts[40], proc[160];
    buf b = { line, 0, cap };
    if (cap < LOG_RENDER_MIN) return 0;
    timestamp(ts, sizeof ts);
    /* A topic field longer than log_topic ever writes was not shortened by
     * the caller: shorten it, or it could crowd the error out of the line. */
    char short_topic[LOG_TOPIC_BUF];
    const char *topic = f ? f->topic : NULL;
    if (topic && strlen(topic) >= LOG_TOPIC_BUF)
        topic = log_topic(short_topic, sizeof short_topic, topic, strlen(topic));
    if (log_label[0]) snprintf(proc, sizeof proc, "%s", log_label);
    else if (log_slot < 0) snprintf(proc, sizeof proc, "master");
    else snprintf(proc, sizeof proc, "worker %d", log_slot);

    if (json) {
        buf_puts(&b, "{\"ts\":\""); buf_puts(&b, ts);
        buf_puts(&b, "\",\"level\":\""); buf_puts(&b, level_names[lvl]);
        buf_puts(&b, "\",\"process\":"); buf_json_str(&b, proc);
        if (log_slot >= 0) { char n[32]; snprintf(n, sizeof n, ",\"worker\":%d", log_slot); buf_puts(&b, n); }
        json_field(&b, "msg", msg);
        if (f && f->route) json_field(&b, "route", f->route);
        if (topic) json_field(&b, "topic", topic);
        if (f && f->error) json_field(&b, "error", f->error);
        if (f && f->traceback) json_field(&b, "traceback", f->traceback);
        /* A field cut short leaves the object without the rest: still one object. */
        buf_tail(&b, "}\n");
    } else {
        char head[256];
        snprintf(head, sizeof head, "%s %-5s [%s] ", ts, level_names[lvl], proc);
        buf_puts(&b, head);
        buf_puts(&b, msg);
        if (f && f->route) { buf_puts(&b, " route="); buf_puts(&b, f->route); }
        if (topic) { buf_puts(&b, " topic="); buf_puts(&b, topic); }
        if (f && f->error) { buf_puts(&b, ": "); buf_puts(&b, f->error); }
        if (f && f->traceback) { buf_puts(&b, "\n"); buf_puts(&b, f->traceback); }
        buf_tail(&b, "\n");
    }
    return b.len;
}

static void log_write(log_level lvl, const log_fields *f, const char *fmt, va_list ap)
{
    char msg[4096], line[16384];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = log_render(line, sizeof line, lvl, f, msg, log_json);
    /* A short write to stderr has nowhere better to be reported. */
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

void log_msg(log_level lvl, const char *fmt, ...)
{
    if (lvl < log_min) return;
    va_list ap;
    va_start(ap, fmt);
    log_write(lvl, NULL, fmt, ap);
    va_end(ap);
}

void log_with(log_level lvl, const log_fields *f, const char *fmt, ...)
{
    if (lvl < log_min) return;
    va_list ap;
    va_start(ap, fmt);
    log_write(lvl, f, fmt, ap);
    va_end(ap);
}

const char *log_topic(char *buf, size_t size, const char *topic, size_t len)
{
    if (!size) return buf;
    size_t o = 0, shown = len > LOG_TOPIC_MAX ? LOG_TOPIC_MAX : len;
    char suffix[48] = "";
    if (shown < len) snprintf(suffix, sizeof suffix, "... (%zu bytes)", len);
    size_t room = size - 1 - (strlen(suffix) < size - 1 ? strlen(suffix) : size - 1);
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)topic[i];
        char e[8];
        if (c == '\\') strcpy(e, "\\\\");
        else if (c == 0) strcpy(e, "\\0");
        else if (c == '\n') strcpy(e, "\\n");
        else if (c == '\t') strcpy(e, "\\t");
        else if (c < 0x20 || c == 0x7f) snprintf(e, sizeof e, "\\x%02x", c);
        else { e[0] = (char)c; e[1] = 0; }
        size_t n = strlen(e);
        if (o + n > room) break;
        memcpy(buf + o, e, n);
        o += n;
    }
    snprintf(buf + o, size - o, "%s", suffix);
    return buf;
}
