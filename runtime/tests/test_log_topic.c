/* Unit tests for log_topic: topics shown safely in logs and errors. */
#include "test_util.h"
#include "../log.c"

#include <stdlib.h>

static void expect(const char *topic, size_t len, size_t size, const char *want)
{
    char buf[LOG_TOPIC_BUF];
    log_topic(buf, size, topic, len);
    CHECK(!strcmp(buf, want), "got '%s', want '%s'", buf, want);
}

int main(void)
{
    expect("sensors/1/temp", 14, LOG_TOPIC_BUF, "sensors/1/temp");
    expect("a\0b", 3, LOG_TOPIC_BUF, "a\\0b");
    expect("a\nb\tc\\d\x01\x7f", 9, LOG_TOPIC_BUF, "a\\nb\\tc\\\\d\\x01\\x7f");
    expect("caf\xc3\xa9", 5, LOG_TOPIC_BUF, "caf\xc3\xa9");
    expect("", 0, LOG_TOPIC_BUF, "");

    /* 70,000 bytes: the first LOG_TOPIC_MAX, then the length. */
    char *big = malloc(70000);
    memset(big, 'x', 70000);
    char want[LOG_TOPIC_BUF];
    memset(want, 'x', LOG_TOPIC_MAX);
    strcpy(want + LOG_TOPIC_MAX, "... (70000 bytes)");
    expect(big, 70000, LOG_TOPIC_BUF, want);
    /* Every byte escaped still fits LOG_TOPIC_BUF whole. */
    memset(big, 1, 70000);
    char *p = want;
    for (int i = 0; i < LOG_TOPIC_MAX; i++) p += sprintf(p, "\\x01");
    strcpy(p, "... (70000 bytes)");
    expect(big, 70000, LOG_TOPIC_BUF, want);
    free(big);
    /* A small buffer: never a cut escape, always terminated. */
    expect("ab\0cd", 5, 4, "ab");
    expect("abcdef", 6, 4, "abc");

    /* A log line with a raw 70,000-byte topic field keeps its error. */
    char *raw = malloc(70001);
    memset(raw, 't', 70000);
    raw[70000] = 0;
    int fds[2];
    if (pipe(fds)) return 1;
    int saved = dup(2);
    dup2(fds[1], 2);
    log_with(LOGL_ERROR, &(log_fields){ .route = "r/{x}", .topic = raw, .error = "the reason" }, "handler failed");
    dup2(saved, 2);
    close(fds[1]);
    char line[4096] = "";
    ssize_t n = read(fds[0], line, sizeof line - 1);
    line[n > 0 ? n : 0] = 0;
    CHECK(strstr(line, "tttt... (70000 bytes): the reason\n") != NULL, "line: %s", line);
    free(raw);
    return TEST_SUMMARY("log_topic");
}
