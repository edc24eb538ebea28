/* Minimal checks for the C unit tests: count results, print one line per failure. */
#ifndef ROUTEMQ_TEST_UTIL_H
#define ROUTEMQ_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>

static int test_passed, test_failed;

/* Record one check; on failure print the case (printf-style) with the source line. */
#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (cond) {                                                       \
            test_passed++;                                                \
        } else {                                                          \
            test_failed++;                                                \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                   \
            printf(__VA_ARGS__);                                          \
            printf("\n");                                                 \
        }                                                                 \
    } while (0)

/* Print the summary line and yield the process exit code (0 iff everything passed). */
#define TEST_SUMMARY(name)                                                         \
    (printf("%s: %d passed, %d failed\n", (name), test_passed, test_failed),       \
     test_failed == 0 ? 0 : 1)

/* Writes text to root/rel (the directory exists); a test that cannot set up stops (exit 2). */
static inline void test_put_file(const char *root, const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    FILE *f = fopen(path, "w");
    if (!f) { perror(path); exit(2); }
    fputs(text, f);
    fclose(f);
}

#endif
