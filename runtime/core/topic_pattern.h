/* Route patterns ("sensors/{device_id}/data") and MQTT topic/filter validation. */
#ifndef ROUTEMQ_TOPIC_PATTERN_H
#define ROUTEMQ_TOPIC_PATTERN_H

#include <stddef.h>

#define TOPIC_MAX_LEN 65535     /* MQTT's limit for topic names and filters */
#define TOPIC_MAX_WILDCARDS 64

typedef struct topic_pattern {
    char *filter;                     /* MQTT filter, NUL-terminated, malloc'd */
    size_t filter_len;
    int nwild;                        /* number of wildcard levels (+ and #), in order */
    char *names[TOPIC_MAX_WILDCARDS]; /* param name per wildcard, NULL for raw + / # */
} topic_pattern;

/* Compile a route pattern into *out; 0 ok (free with topic_pattern_free), -1 with the reason in err
 * (out is then left empty and needs no freeing). */
int topic_pattern_compile(const char *pattern, size_t len, topic_pattern *out, char *err, size_t errlen);

/* Release what topic_pattern_compile allocated; safe on a zeroed or already freed pattern. */
void topic_pattern_free(topic_pattern *p);

/* 0 if one may PUBLISH to topic (non-empty, <= 65535 bytes, no + or #, valid UTF-8, no NUL); else -1 with reason. */
int topic_validate_publish(const char *topic, size_t len, char *err, size_t errlen);

/* 0 if filter is a valid MQTT subscription filter (wildcards whole levels, '#' last); else -1 with reason. */
int topic_validate_filter(const char *filter, size_t len, char *err, size_t errlen);

/* Bytes (1-4) of the well-formed UTF-8 character that s[0..len) starts with; 0 if it does not. */
size_t topic_utf8_char(const char *s, size_t len);

/* 1 if s[0..len) is well-formed UTF-8 (no overlongs, surrogates or code points above U+10FFFF), else 0. */
int topic_utf8_valid(const char *s, size_t len);

#endif
