/* keep_file_upgrade: a keep of version 1 (before retries), with a message
 * kept, comes out in the current layout with the same record and bytes. */
#include "keep_file.h"
#include "test_util.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The version-1 record as routemq 0.1 (e99a708) wrote it. */
typedef struct rec_v1 {
    uint32_t state, attempts, stop_kills;
    char reason[SHM_REASON_MAX];
    uint64_t seq;
    int64_t started_ns;
    int32_t route_index, stat_index;
    uint8_t qos, retain, earlier_run, dlq, started;
    uint32_t topic_len, payload_len, props_len, chunk, nchunks;
} rec_v1;

#define RECS 4
#define ARENA 8192

static size_t page(size_t n) { return (n + 4095) / 4096 * 4096; }

/* Writes a version-1 keep at path with record 2 kept; returns its size. */
static size_t write_v1(const char *path)
{
    size_t recs_at = page(sizeof(keep_hdr)), arena_at = page(recs_at + RECS * sizeof(rec_v1));
    size_t size = arena_at + ARENA;
    char *buf = calloc(1, size);
    keep_hdr *h = (keep_hdr *)buf;
    h->magic = KEEP_MAGIC;
    h->version = 1;
    h->max_recs = RECS;
    h->arena_bytes = ARENA;
    h->size = size;
    atomic_store(&h->next_seq, 77);
    atomic_store(&h->used, 3);
    h->app_hash = 0xabcdef;
    h->seen.entry[5] = 0x1234;
    rec_v1 *r = (rec_v1 *)(buf + recs_at) + 2;
    r->state = REC_QUEUED;
    r->attempts = 1;
    strcpy(r->reason, "signal 9 (SIGKILL)");
    r->seq = 76;
    r->route_index = 3;
    r->stat_index = 9;
    r->qos = 1;
    r->topic_len = 5;
    r->payload_len = 3;
    r->chunk = 1;
    r->nchunks = 1;
    memcpy(buf + arena_at + 128, "a/b/c\0x\0y", 9);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0 && write(fd, buf, size) == (ssize_t)size, "write %s", path);
    close(fd);
    free(buf);
    return size;
}

int main(void)
{
    char dir[] = "/tmp/test_keep_upgrade.XXXXXX", path[256], err[512] = "";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(path, sizeof path, "%s/keep-0", dir);

    CHECK(keep_file_upgrade(path, err, sizeof err) == 0, "no file: nothing to do");
    write_v1(path);
    CHECK(keep_file_upgrade(path, err, sizeof err) == 1, "version 1 upgraded (%s)", err);
    CHECK(keep_file_upgrade(path, err, sizeof err) == 0, "the second time: nothing to do");

    keep_map km;
    CHECK(keep_file_map(&km, path) == 0, "the upgraded keep maps");
    if (km.h) {
        CHECK(km.h->version == KEEP_VERSION, "version %u", km.h->version);
        CHECK(atomic_load(&km.h->next_seq) == 77 && atomic_load(&km.h->used) == 3, "header counters");
        CHECK(km.h->app_hash == 0xabcdef && km.h->seen.entry[5] == 0x1234, "header app hash and seen table");
        CHECK(keep_file_count(&km) == 1, "one message kept, got %u", keep_file_count(&km));
        shm_rec *r = &km.rec[2];
        CHECK(atomic_load(&r->state) == REC_QUEUED && r->attempts == 1 && r->seq == 76, "record state");
        CHECK(!strcmp(r->reason, "signal 9 (SIGKILL)"), "reason '%s'", r->reason);
        CHECK(r->route_index == 3 && r->stat_index == 9 && r->qos == 1, "route and qos");
        CHECK(r->topic_len == 5 && r->payload_len == 3 && r->chunk == 1 && r->nchunks == 1, "place in the arena");
        CHECK(r->failures == 0 && r->due_ms == 0 && r->dlq_id == 0 && !r->replayed, "new fields zero");
        CHECK(!memcmp(km.arena + 128, "a/b/c\0x\0y", 9), "arena bytes");
        keep_file_unmap(&km);
    }

    int fd = open(path, O_WRONLY | O_TRUNC);
    CHECK(fd >= 0 && write(fd, "not a keep", 10) == 10, "overwrite");
    close(fd);
    CHECK(keep_file_upgrade(path, err, sizeof err) == 0, "not a keep: left alone");
    unlink(path);
    rmdir(dir);
    return TEST_SUMMARY("test_keep_upgrade");
}
