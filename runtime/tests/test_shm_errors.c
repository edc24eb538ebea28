/* Unit tests for the slot's ring of recent handler errors (shm_errors.c):
 * the latest SHM_ERRORS are readable, older ones say so, long texts are
 * cut at a UTF-8 character boundary. */
#include "test_util.h"
#include "../shm_errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    /* A slot is large but mostly untouched: calloc maps it lazily. */
    shm_slot *sh = calloc(1, sizeof *sh);
    if (!sh) return 1;
    shm_error e;
    CHECK(shm_errors_read(sh, 0, &e) == -1, "nothing recorded yet");
    for (int i = 0; i < SHM_ERRORS + 3; i++) {
        char topic[32], msg[64];
        snprintf(topic, sizeof topic, "fail/%d", i);
        snprintf(msg, sizeof msg, "boom %d", i);
        shm_errors_record(sh, "fail/{n}", topic, msg, "stack traceback:\n\t[C]: in ?");
    }
    CHECK(atomic_load(&sh->recent_errors.count) == SHM_ERRORS + 3, "counted every error");
    CHECK(shm_errors_read(sh, 2, &e) == -1, "an overwritten error is not read");
    CHECK(shm_errors_read(sh, SHM_ERRORS + 3, &e) == -1, "one past the latest is not read");
    CHECK(shm_errors_read(sh, SHM_ERRORS + 2, &e) == 0 && !strcmp(e.topic, "fail/10") && !strcmp(e.message, "boom 10"),
          "the latest: %s %s", e.topic, e.message);
    CHECK(shm_errors_read(sh, 3, &e) == 0 && !strcmp(e.topic, "fail/3"), "the oldest kept: %s", e.topic);
    CHECK(!strcmp(e.route, "fail/{n}") && e.time_ms > 0 && e.pid > 0, "route, time and pid");

    /* "é" is two bytes: a cut must not leave half of one. */
    char big[SHM_ERROR_MESSAGE * 2];
    size_t n = 0;
    while (n + 2 < sizeof big) { big[n++] = (char)0xC3; big[n++] = (char)0xA9; }
    big[n] = 0;
    shm_errors_record(sh, NULL, big, big, NULL);
    CHECK(shm_errors_read(sh, SHM_ERRORS + 3, &e) == 0, "read the long one");
    CHECK(strlen(e.message) == SHM_ERROR_MESSAGE - 2 && (unsigned char)e.message[strlen(e.message) - 1] == 0xA9,
          "cut after a whole character (%zu bytes)", strlen(e.message));
    CHECK(strlen(e.topic) == SHM_ERROR_TOPIC - 2, "topic cut too");
    CHECK(e.route[0] == 0 && e.traceback[0] == 0, "NULL texts are empty");
    free(sh);
    return TEST_SUMMARY("test_shm_errors");
}
