/* Unit tests for the slot filters file (rundir.c): filters with their
 * subscription identifiers round-trip; a file of an earlier version (bare
 * filters) reads with identifiers unknown (0). */
#include "test_util.h"
#include "rundir.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
    char dir[] = "/tmp/routemq-test-filters.XXXXXX";
    if (!mkdtemp(dir)) { printf("mkdtemp failed\n"); return 1; }
    const char *filters[] = { "in/+", "$share/g/a b/#", "x" };
    uint32_t ids[] = { 65536, 268435455, 123456 };
    rundir_write_filters(dir, 3, filters, ids, 3);
    char **got = NULL;
    uint32_t *gids = NULL;
    int n = rundir_read_filters(dir, 3, &got, &gids);
    CHECK(n == 3, "%d filters read back", n);
    for (int i = 0; i < n && i < 3; i++)
        CHECK(!strcmp(got[i], filters[i]) && gids[i] == ids[i], "%d: '%s' %u", i, got[i], gids[i]);
    rundir_free_filters(got, gids, n);

    /* An earlier version's file: one filter a line, no identifiers. */
    char path[300];
    snprintf(path, sizeof path, "%s/slot-4.filters", dir);
    FILE *f = fopen(path, "w");
    fputs("in/+\n70000 x\n", f);
    fclose(f);
    n = rundir_read_filters(dir, 4, &got, &gids);
    CHECK(n == 2 && !strcmp(got[0], "in/+") && gids[0] == 0 && !strcmp(got[1], "70000 x") && gids[1] == 0,
          "old file: %d filters", n);
    rundir_free_filters(got, gids, n);

    n = rundir_read_filters(dir, 5, &got, &gids);
    CHECK(n == 0 && !got && !gids, "no file: nothing");
    unlink(path);
    snprintf(path, sizeof path, "%s/slot-3.filters", dir);
    unlink(path);
    rmdir(dir);
    return TEST_SUMMARY("test_rundir_filters");
}
