/* Unit tests for dead-letter records as JSON (dlq_json.c): payloads as text
 * or base64, a summary cut on a character boundary, MQTT 5 properties in
 * their order, NUL bytes escaped. */
#include "test_util.h"
#include "../dlq_json.h"

#include <mqtt_protocol.h>
#include <stdio.h>
#include <string.h>

/* Appends one packed property (worker_props.c's format). */
static size_t pack(char *out, size_t at, int id, const char *a, size_t alen, const char *b, size_t blen)
{
    out[at++] = (char)id;
    out[at++] = (char)(alen >> 8);
    out[at++] = (char)(alen & 0xff);
    memcpy(out + at, a, alen);
    at += alen;
    if (id == MQTT_PROP_USER_PROPERTY) {
        out[at++] = (char)(blen >> 8);
        out[at++] = (char)(blen & 0xff);
        memcpy(out + at, b, blen);
        at += blen;
    }
    return at;
}

int main(void)
{
    strbuf b;
    sb_init(&b);
    dlq_base64(&b, "\0\xff\x1b[31", 6);
    CHECK(!strcmp(b.p, "AP8bWzMx"), "base64: %s", b.p);
    sb_free(&b);
    sb_init(&b);
    dlq_base64(&b, "ab", 2);
    CHECK(!strcmp(b.p, "YWI="), "padding: %s", b.p);
    sb_free(&b);

    CHECK(dlq_is_text("héllo\n", 7, 1), "UTF-8 with a newline is text");
    CHECK(!dlq_is_text("a\0b", 3, 0), "a NUL is not text");
    CHECK(!dlq_is_text("\xc3", 1, 0), "half a character is not text");
    CHECK(dlq_is_text("\x1b[31m", 5, 0) && !dlq_is_text("\x1b[31m", 5, 1), "ESC: JSON text, not terminal text");

    char props[256];
    size_t n = 0;
    n = pack(props, n, MQTT_PROP_USER_PROPERTY, "b", 1, "2", 1);
    n = pack(props, n, MQTT_PROP_CONTENT_TYPE, "text/plain", 10, NULL, 0);
    n = pack(props, n, MQTT_PROP_USER_PROPERTY, "a", 1, "1\"", 2);
    n = pack(props, n, MQTT_PROP_CORRELATION_DATA, "\0\1", 2, NULL, 0);
    n = pack(props, n, MQTT_PROP_RESPONSE_TOPIC, "resp/1", 6, NULL, 0);
    sb_init(&b);
    dlq_json_props(&b, props, n);
    CHECK(!strcmp(b.p, "{\"content_type\":\"text/plain\",\"correlation_data\":\"AAE=\",\"correlation_data_encoding\":"
                       "\"base64\",\"response_topic\":\"resp/1\",\"user_properties\":[[\"b\",\"2\"],[\"a\",\"1\\\"\"]]}"),
          "properties: %s", b.p);
    sb_free(&b);
    sb_init(&b);
    dlq_json_props(&b, NULL, 0);
    CHECK(!strcmp(b.p, "{}"), "no properties: %s", b.p);
    sb_free(&b);

    /* 199 ASCII bytes then "é": the summary stops before the character it would cut. */
    char payload[300];
    memset(payload, 'x', 199);
    memcpy(payload + 199, "\xc3\xa9", 2);
    memset(payload + 201, 'y', 99);
    dlq_entry e = { .id = 7, .time_ms = 1000, .topic = "t/1", .topic_len = 3, .route = "t/+", .payload = payload,
                    .payload_len = sizeof payload, .qos = 1, .attempts = 2, .reason = "error", .error = "boom" };
    sb_init(&b);
    dlq_json_entry(&b, &e, 0);
    CHECK(strstr(b.p, "\"payload_size\":300,\"payload\":\"") != NULL, "size: %s", b.p);
    CHECK(strstr(b.p, "xxx\",\"payload_encoding\":\"utf8\",\"payload_truncated\":true}") != NULL, "cut: %s", b.p);
    CHECK(strstr(b.p, "\"time\":\"1970-01-01T00:00:01.000Z\"") != NULL, "time: %s", b.p);
    CHECK(!strstr(b.p, "traceback"), "no traceback in a summary");
    sb_free(&b);

    e.payload = "a\0b";
    e.payload_len = 3;
    sb_init(&b);
    dlq_json_entry(&b, &e, 1);
    CHECK(strstr(b.p, "\"payload\":\"YQBi\",\"payload_encoding\":\"base64\",\"traceback\":null,\"properties\":{}") != NULL,
          "binary in full: %s", b.p);
    sb_free(&b);

    sb_init(&b);
    sb_json_strn(&b, "a\0b", 3);
    CHECK(!strcmp(b.p, "\"a\\u0000b\""), "NUL escaped: %s", b.p);
    sb_free(&b);
    return TEST_SUMMARY("test_dlq_json");
}
