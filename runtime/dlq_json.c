/* Dead-letter records as JSON (dlq_json.h). */
#include "dlq_json.h"
#include "topic_pattern.h"
#include "worker_props.h"

#include <mqtt_protocol.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int dlq_is_text(const void *p, size_t n, int strict)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == 0) return 0;
        if (strict && (s[i] < 0x20 || s[i] == 0x7f) && s[i] != '\n' && s[i] != '\r' && s[i] != '\t') return 0;
    }
    return topic_utf8_valid(p, n);
}

void dlq_base64(strbuf *b, const void *p, size_t n)
{
    static const char T[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *s = p;
    char out[4];
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0) | (i + 2 < n ? s[i + 2] : 0);
        out[0] = T[v >> 18 & 63];
        out[1] = T[v >> 12 & 63];
        out[2] = i + 1 < n ? T[v >> 6 & 63] : '=';
        out[3] = i + 2 < n ? T[v & 63] : '=';
        sb_put(b, out, 4);
    }
}

const char *dlq_state_name(int state)
{
    switch (state) {
    case DLQ_STORED: return "stored";
    case DLQ_REPLAY_ASKED: return "replay_asked";
    case DLQ_REPLAYING: return "replaying";
    default: return "unknown";
    }
}

void dlq_time_iso(int64_t ms, char *out, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char day[32];
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, n, "%s.%03dZ", day, (int)(ms % 1000));
}

/* "name":"text" or "name":"base64", with "name_encoding". */
static void bytes_field(strbuf *b, const char *name, const void *p, size_t n)
{
    int text = dlq_is_text(p, n, 0);
    sb_printf(b, "\"%s\":", name);
    if (text) {
        sb_json_strn(b, p, n);
    } else {
        sb_put(b, "\"", 1);
        dlq_base64(b, p, n);
        sb_put(b, "\"", 1);
    }
    sb_printf(b, ",\"%s_encoding\":\"%s\"", name, text ? "utf8" : "base64");
}

void dlq_json_props(strbuf *b, const void *props, size_t len)
{
    const char *at = props, *end = at + (props ? len : 0);
    int id, users = 0, first = 1;
    const char *a, *v;
    size_t alen, vlen;
    sb_put(b, "{", 1);
    while (props && worker_props_next(&at, end, &id, &a, &alen, &v, &vlen)) {
        if (id == MQTT_PROP_USER_PROPERTY) continue;  /* below, as one list in their order */
        if (!first) sb_put(b, ",", 1);
        first = 0;
        if (id == MQTT_PROP_CONTENT_TYPE) {
            sb_puts(b, "\"content_type\":");
            sb_json_strn(b, a, alen);
        } else if (id == MQTT_PROP_RESPONSE_TOPIC) {
            sb_puts(b, "\"response_topic\":");
            sb_json_strn(b, a, alen);
        } else if (id == MQTT_PROP_CORRELATION_DATA) {
            bytes_field(b, "correlation_data", a, alen);
        } else if (id == MQTT_PROP_MESSAGE_EXPIRY_INTERVAL && alen == 4) {
            uint32_t u;
            memcpy(&u, a, 4);
            sb_printf(b, "\"message_expiry_interval\":%u", u);
        } else {
            sb_printf(b, "\"property_%d\":", id);
            sb_json_strn(b, a, alen);
        }
    }
    at = props;
    while (props && worker_props_next(&at, end, &id, &a, &alen, &v, &vlen)) {
        if (id != MQTT_PROP_USER_PROPERTY) continue;
        if (!users) sb_puts(b, first ? "\"user_properties\":[" : ",\"user_properties\":[");
        else sb_put(b, ",", 1);
        users = 1;
        sb_put(b, "[", 1);
        sb_json_strn(b, a, alen);
        sb_put(b, ",", 1);
        sb_json_strn(b, v, vlen);
        sb_put(b, "]", 1);
    }
    if (users) sb_put(b, "]", 1);
    sb_put(b, "}", 1);
}

static void str_or_null(strbuf *b, const char *s)
{
    if (s) sb_json_str(b, s);
    else sb_puts(b, "null");
}

void dlq_json_entry(strbuf *b, const dlq_entry *e, int full)
{
    char when[40];
    dlq_time_iso(e->time_ms, when, sizeof when);
    sb_printf(b, "{\"id\":%lld,\"time\":\"%s\",\"time_ms\":%lld,\"topic\":", (long long)e->id, when,
              (long long)e->time_ms);
    sb_json_strn(b, e->topic, e->topic_len);
    sb_puts(b, ",\"route\":");
    sb_json_str(b, e->route);
    sb_printf(b, ",\"qos\":%d,\"retain\":%s,\"attempts\":%d,\"reason\":", e->qos, e->retain ? "true" : "false",
              e->attempts);
    sb_json_str(b, e->reason);
    sb_puts(b, ",\"error\":");
    str_or_null(b, e->error);
    sb_printf(b, ",\"replays\":%d,\"state\":\"%s\",\"owner\":", e->replays, dlq_state_name(e->state));
    str_or_null(b, e->owner);
    sb_printf(b, ",\"payload_size\":%zu,", e->payload_len);
    size_t n = e->payload_len;
    int cut = 0;
    if (!full && n > DLQ_JSON_SUMMARY) {
        n = DLQ_JSON_SUMMARY;
        /* Not in the middle of a character: back to the start of the last one. */
        const unsigned char *p = e->payload;
        while (n > 0 && (p[n] & 0xC0) == 0x80) n--;
        if (n == 0) n = DLQ_JSON_SUMMARY;
        cut = 1;
    }
    bytes_field(b, "payload", e->payload, n);
    if (cut) sb_puts(b, ",\"payload_truncated\":true");
    if (full) {
        sb_puts(b, ",\"traceback\":");
        str_or_null(b, e->traceback);
        sb_puts(b, ",\"properties\":");
        dlq_json_props(b, e->props, e->props_len);
    }
    sb_put(b, "}", 1);
}
