/* The web console's files, embedded in the binary from share/console/ (no
 * install path to find, nothing to go missing), and the actions it and
 * scripts run: POST /reload and POST /scale, each answered with its result. */
#include "master_console.h"
#include "log.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef ROUTEMQ_CONSOLE_DIR
#error "ROUTEMQ_CONSOLE_DIR (share/console) must be defined by the build"
#endif

/* The bytes of file as name[] .. name_end[]. */
#define CONSOLE_INCBIN(name, file)                                                              \
    __asm__(".section .rodata\n.balign 16\n.type " #name ", @object\n" #name ":\n.incbin \""    \
            ROUTEMQ_CONSOLE_DIR "/" file "\"\n" #name "_end:\n.byte 0\n.previous\n");           \
    extern const char name[], name##_end[]

CONSOLE_INCBIN(console_html, "index.html");
CONSOLE_INCBIN(console_js, "console.js");
CONSOLE_INCBIN(console_css, "console.css");

const console_file *master_console_file(const char *path)
{
    static console_file files[3];
    if (!files[0].path) {
        files[0] = (console_file){ "/", "text/html; charset=utf-8", console_html, (size_t)(console_html_end - console_html) };
        files[1] = (console_file){ "/console.js", "text/javascript; charset=utf-8", console_js,
                                   (size_t)(console_js_end - console_js) };
        files[2] = (console_file){ "/console.css", "text/css; charset=utf-8", console_css,
                                   (size_t)(console_css_end - console_css) };
    }
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        if (!strcmp(path, files[i].path)) return &files[i];
    return NULL;
}

/* A flat JSON object's members: only what the actions take (string and
 * number values). 0 ok, -1 not such an object. */
#define JSON_MEMBERS 8
typedef struct json_member {
    char key[32];
    char value[64];
    int is_string;
} json_member;

static const char *ws(const char *p, const char *end)
{
    while (p < end && isspace((unsigned char)*p)) p++;
    return p;
}

/* A JSON string without escapes (the keys and values here need none). */
static const char *json_string(const char *p, const char *end, char *out, size_t n)
{
    if (p >= end || *p != '"') return NULL;
    size_t k = 0;
    for (p++; p < end && *p != '"'; p++) {
        if (*p == '\\' || (unsigned char)*p < 0x20 || k + 1 >= n) return NULL;
        out[k++] = *p;
    }
    out[k] = 0;
    return p < end ? p + 1 : NULL;
}

static int parse_object(const char *body, size_t len, json_member *mem, int *count)
{
    const char *p = body, *end = body + len;
    *count = 0;
    p = ws(p, end);
    if (p == end) return 0;  /* an empty body is {} */
    if (*p++ != '{') return -1;
    p = ws(p, end);
    if (p < end && *p == '}') return ws(p + 1, end) == end ? 0 : -1;
    for (;;) {
        if (*count == JSON_MEMBERS) return -1;
        json_member *m = &mem[(*count)++];
        memset(m, 0, sizeof *m);
        if (!(p = json_string(ws(p, end), end, m->key, sizeof m->key))) return -1;
        p = ws(p, end);
        if (p >= end || *p++ != ':') return -1;
        p = ws(p, end);
        if (p < end && *p == '"') {
            m->is_string = 1;
            if (!(p = json_string(p, end, m->value, sizeof m->value))) return -1;
        } else {
            size_t k = 0;
            while (p < end && (isalnum((unsigned char)*p) || *p == '-' || *p == '+' || *p == '.') && k + 1 < sizeof m->value)
                m->value[k++] = *p++;
            m->value[k] = 0;
            if (!k) return -1;
        }
        p = ws(p, end);
        if (p < end && *p == ',') { p++; continue; }
        if (p < end && *p == '}') return ws(p + 1, end) == end ? 0 : -1;
        return -1;
    }
}

static const json_member *member(const json_member *mem, int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(mem[i].key, key)) return &mem[i];
    return NULL;
}

static unsigned answer_error(strbuf *out, unsigned status, const char *msg)
{
    sb_puts(out, "{\"ok\":false,\"error\":");
    sb_json_str(out, msg);
    sb_puts(out, "}\n");
    return status;
}

void master_console_reload_done(master *m, uint64_t seq, int ok, const char *msg)
{
    m->console.reload_seq = seq;
    m->console.reload_ok = ok;
    snprintf(m->console.reload_msg, sizeof m->console.reload_msg, "%s", msg ? msg : "");
}

/* Loading happens at once; replacing the workers slot by slot follows
 * (watch /status: generation, and every slot's generation). */
static unsigned do_reload(master *m, strbuf *out)
{
    if (m->stopping) return answer_error(out, 409, "the master is stopping");
    int queued = master_reloading(m);
    uint64_t seq = m->reload_seq;
    log_info("reload requested (admin HTTP)");
    master_reload_request(m);
    if (queued) {
        sb_puts(out, "{\"ok\":true,\"queued\":true,\"message\":\"reload queued after the reload in progress\"}\n");
        return 202;
    }
    if (m->reload_seq != seq + 1) return answer_error(out, 500, "the reload did not start");
    if (m->console.reload_seq == m->reload_seq && !m->console.reload_ok) {
        char msg[1100];
        snprintf(msg, sizeof msg, "reload failed: %s; the workers keep running the previous application",
                 m->console.reload_msg);
        return answer_error(out, 422, msg);
    }
    int workers = m->reload.phase != RELOAD_IDLE ? m->reload.new_p : m->P;
    sb_printf(out, "{\"ok\":true,\"generation\":%u,\"workers\":%d,\"message\":\"generation %u loaded; "
              "replacing the workers one by one\"}\n", m->app ? m->app->generation : 0, workers,
              m->app ? m->app->generation : 0);
    return 200;
}

static unsigned do_scale(master *m, const json_member *mem, int n, strbuf *out)
{
    if (m->stopping) return answer_error(out, 409, "the master is stopping");
    const json_member *w = member(mem, n, "workers"), *step = member(mem, n, "step");
    int want;
    if (w && !w->is_string && !step) {
        char *end;
        long v = strtol(w->value, &end, 10);
        if (*end || v < 1 || v > 1024) return answer_error(out, 400, "workers: a whole number from 1 to 1024");
        want = (int)v;
    } else if (step && step->is_string && !w && (!strcmp(step->value, "up") || !strcmp(step->value, "down"))) {
        want = m->P + (!strcmp(step->value, "up") ? 1 : -1);
        if (want < 1) return answer_error(out, 400, "already at 1 worker");
    } else {
        return answer_error(out, 400, "expected {\"workers\": N} or {\"step\": \"up\" | \"down\"}");
    }
    if (master_reloading(m)) {
        m->scale_to_pending = want;
        sb_printf(out, "{\"ok\":true,\"queued\":true,\"workers\":%d,\"message\":\"%d worker%s after the reload in "
                  "progress\"}\n", want, want, want == 1 ? "" : "s");
        return 202;
    }
    int old = m->P;
    log_info("scale to %d requested (admin HTTP)", want);
    master_scale_to(m, want, "admin HTTP");
    sb_printf(out, "{\"ok\":true,\"workers\":%d,\"was\":%d,\"message\":\"%d worker%s (was %d%s)\"}\n", m->P, old, m->P,
              m->P == 1 ? "" : "s", old, m->P != want ? "; that is the most slots" : "");
    return 200;
}

unsigned master_console_action(master *m, const char *path, const char *body, size_t len, strbuf *out)
{
    json_member mem[JSON_MEMBERS];
    int n;
    int is_reload = !strcmp(path, "/reload"), is_scale = !strcmp(path, "/scale");
    if (!is_reload && !is_scale) return answer_error(out, 404, "no such action; POST /reload or /scale");
    if (parse_object(body, len, mem, &n)) return answer_error(out, 400, "the body is not a JSON object");
    if (is_reload) return do_reload(m, out);
    return do_scale(m, mem, n, out);
}
