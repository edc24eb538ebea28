/* A generation's application code: every Lua file under <app>/app/, read
 * once when the master loads or reloads the application. Workers forked for
 * that generation load from it (the memory is inherited by fork), never from
 * disk, so a worker restarted after a crash runs exactly the code the master
 * checked, whatever happened to the files since. */
#ifndef ROUTEMQ_APP_SNAPSHOT_H
#define ROUTEMQ_APP_SNAPSHOT_H

#include <stddef.h>

#define APP_SNAPSHOT_MAX_BYTES (64u << 20)  /* more Lua than this is a mistake (a data dir under app/) */

typedef struct app_file {
    char *path;     /* relative to the application root: "app/routers/x.lua" */
    char *data;     /* NULL in a snapshot read against an earlier one: the file was unchanged */
    size_t len;
    long long mtime_ns;  /* with len and ino: "unchanged" without reading it again */
    unsigned long long ino;
} app_file;

typedef struct app_snapshot {
    app_file *files;  /* sorted by path */
    int nfiles;
} app_snapshot;

/* Reads every *.lua file below root/app (hidden entries skipped) into a new
 * snapshot. NULL with the reason in err (a file that cannot be read, too
 * much code, out of memory). */
app_snapshot *app_snapshot_read(const char *root, char *err, size_t errlen);
/* 1 when the Lua files under root/app are no longer those of snap (a file
 * added, removed or with other bytes). Only files whose size, mtime or inode
 * differ are read again, so asking often (the /status endpoint) is cheap. */
int app_snapshot_changed(const app_snapshot *snap, const char *root);
/* Frees it; NULL is fine. */
void app_snapshot_free(app_snapshot *s);
/* 1 when both hold the same files with the same bytes. */
int app_snapshot_equal(const app_snapshot *a, const app_snapshot *b);
/* The file at path, or NULL. */
const app_file *app_snapshot_find(const app_snapshot *s, const char *path);
/* The snapshot app_load loads from in this process (not owned; NULL: from
 * disk, as `routemq check` and the testing harness do). */
void app_snapshot_use(const app_snapshot *s);
const app_snapshot *app_snapshot_current(void);

#endif
