/* Unit tests for app_snapshot.c: what a generation's snapshot holds and when
 * the files on disk count as changed. */
#include "test_util.h"
#include "app_snapshot.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[64];

/* Moves the file's mtime by secs: what an editor's save does. */
static void retime(const char *rel, int secs)
{
    char path[256];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", root, rel);
    stat(path, &st);
    struct timespec t[2] = { st.st_atim, st.st_mtim };
    t[1].tv_sec += secs;
    utimensat(AT_FDCWD, path, t, 0);
}

int main(void)
{
    char err[256], cmd[512];
    snprintf(root, sizeof root, "/tmp/routemq-snap.XXXXXX");
    if (!mkdtemp(root)) return 2;
    snprintf(cmd, sizeof cmd, "mkdir -p %s/app/routers %s/app/controllers/sub %s/app/.git", root, root, root);
    if (system(cmd)) return 2;
    test_put_file(root, "app/routers/a.lua", "return 1\n");
    test_put_file(root, "app/controllers/sub/c.lua", "return 'c'\n");
    test_put_file(root, "app/controllers/notes.txt", "not code\n");
    test_put_file(root, "app/.git/x.lua", "hidden\n");
    test_put_file(root, "app/routers/.#a.lua", "editor lock\n");

    app_snapshot *s = app_snapshot_read(root, err, sizeof err);
    CHECK(s != NULL, "read: %s", err);
    if (!s) return TEST_SUMMARY("test_snapshot");
    CHECK(s->nfiles == 2, "only visible .lua files: %d", s->nfiles);
    const app_file *a = app_snapshot_find(s, "app/routers/a.lua");
    CHECK(a && a->len == 9 && !memcmp(a->data, "return 1\n", 9), "a.lua held in memory");
    CHECK(app_snapshot_find(s, "app/controllers/sub/c.lua") != NULL, "subdirectories too");
    CHECK(!strcmp(s->files[0].path, "app/controllers/sub/c.lua"), "sorted by path");
    CHECK(!app_snapshot_changed(s, root), "unchanged");

    retime("app/routers/a.lua", 5);
    CHECK(!app_snapshot_changed(s, root), "touched, same bytes: unchanged");
    test_put_file(root, "app/routers/a.lua", "return 2\n");  /* same size */
    retime("app/routers/a.lua", 10);
    CHECK(app_snapshot_changed(s, root), "same size, other bytes: changed");
    test_put_file(root, "app/routers/a.lua", "return 1\n");
    CHECK(!app_snapshot_changed(s, root), "written back: unchanged");
    test_put_file(root, "app/routers/b.lua", "return 3\n");
    CHECK(app_snapshot_changed(s, root), "a new file: changed");
    snprintf(cmd, sizeof cmd, "%s/app/routers/b.lua", root);
    unlink(cmd);
    snprintf(cmd, sizeof cmd, "%s/app/controllers/sub/c.lua", root);
    unlink(cmd);
    CHECK(app_snapshot_changed(s, root), "a deleted file: changed");
    app_snapshot_free(s);

    /* No app/ at all: an empty snapshot (the loader names what is missing). */
    app_snapshot *none = app_snapshot_read("/nonexistent-routemq", err, sizeof err);
    CHECK(none && none->nfiles == 0, "no app/: empty");
    app_snapshot_free(none);

    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd)) return 2;
    return TEST_SUMMARY("test_snapshot");
}
