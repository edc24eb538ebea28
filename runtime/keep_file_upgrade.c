/* Keeps written by an earlier routemq (version 1, before retries) are
 * rewritten in the current layout when a worker opens them, so an upgrade
 * with messages still kept handles them instead of replacing the file. */
#include "keep_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE 4096

/* The record of version 1, frozen: never change it. */
typedef struct shm_rec_v1 {
    _Atomic uint32_t state;
    uint32_t attempts;
    uint32_t stop_kills;
    char reason[SHM_REASON_MAX];
    uint64_t seq;
    int64_t started_ns;
    int32_t route_index;
    int32_t stat_index;
    uint8_t qos, retain;
    uint8_t earlier_run;
    uint8_t dlq;
    uint8_t started;
    uint32_t topic_len, payload_len, props_len;
    uint32_t chunk, nchunks;
} shm_rec_v1;

static size_t align_page(size_t n)
{
    return (n + PAGE - 1) / PAGE * PAGE;
}

/* Where the records and the arena of a keep start, for records of rec_size bytes. */
static size_t arena_at(uint32_t max_recs, size_t rec_size)
{
    return align_page(align_page(sizeof(keep_hdr)) + (size_t)max_recs * rec_size);
}

static void copy_rec(shm_rec *to, const shm_rec_v1 *from)
{
    memset(to, 0, sizeof *to);
    to->attempts = from->attempts;
    to->stop_kills = from->stop_kills;
    memcpy(to->reason, from->reason, sizeof to->reason);
    to->seq = from->seq;
    to->started_ns = from->started_ns;
    to->route_index = from->route_index;
    to->stat_index = from->stat_index;
    to->qos = from->qos;
    to->retain = from->retain;
    to->earlier_run = from->earlier_run;
    to->dlq = from->dlq;
    to->started = from->started;
    to->topic_len = from->topic_len;
    to->payload_len = from->payload_len;
    to->props_len = from->props_len;
    to->chunk = from->chunk;
    to->nchunks = from->nchunks;
    atomic_store(&to->state, atomic_load(&from->state));
}

/* Writes the version-2 copy of old (mapped, old_size bytes) to path.new, then renames it over path. */
static int rewrite(const char *path, const char *old, char *err, size_t errlen)
{
    const keep_hdr *oh = (const keep_hdr *)old;
    size_t old_arena = arena_at(oh->max_recs, sizeof(shm_rec_v1));
    size_t new_arena = arena_at(oh->max_recs, sizeof(shm_rec));
    size_t size = new_arena + oh->arena_bytes;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s to upgrade the keep: %s", tmp, strerror(errno));
        return -1;
    }
    int rc = posix_fallocate(fd, 0, (off_t)size);
    char *p = rc ? MAP_FAILED : mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "cannot reserve %.1f MB to upgrade the keep %s: %s", size / 1048576.0, path,
                 strerror(rc ? rc : errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    close(fd);
    keep_hdr *h = (keep_hdr *)p;
    memcpy(h, oh, sizeof *h);
    h->version = KEEP_VERSION;
    h->size = size;
    const shm_rec_v1 *from = (const shm_rec_v1 *)(old + align_page(sizeof(keep_hdr)));
    shm_rec *to = (shm_rec *)(p + align_page(sizeof(keep_hdr)));
    for (uint32_t i = 0; i < oh->max_recs; i++) copy_rec(&to[i], &from[i]);
    memcpy(p + new_arena, old + old_arena, oh->arena_bytes);
    munmap(p, size);
    if (rename(tmp, path)) {
        snprintf(err, errlen, "cannot rename %s into place: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int keep_file_upgrade(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat st;
    keep_hdr h;
    if (fstat(fd, &st) || (size_t)st.st_size < sizeof h || pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h ||
        h.magic != KEEP_MAGIC || h.version != 1 || h.max_recs == 0 ||
        h.size != arena_at(h.max_recs, sizeof(shm_rec_v1)) + h.arena_bytes || h.size != (uint64_t)st.st_size) {
        close(fd);
        return 0;
    }
    char *old = mmap(NULL, h.size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (old == MAP_FAILED) {
        snprintf(err, errlen, "cannot map the keep %s to upgrade it: %s", path, strerror(errno));
        return -1;
    }
    int rc = rewrite(path, old, err, errlen);
    munmap(old, h.size);
    return rc ? -1 : 1;
}
