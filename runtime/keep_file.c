/* The keep file of a worker slot (keep_file.h). A new or resized keep is
 * made under a temporary name and renamed into place: a mapping the master
 * holds of the previous file never loses its pages (no SIGBUS). */
#include "keep_file.h"
#include "hash.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE 4096

static size_t align_page(size_t n)
{
    return (n + PAGE - 1) / PAGE * PAGE;
}

static size_t recs_offset(void)
{
    return align_page(sizeof(keep_hdr));
}

static size_t arena_offset(uint32_t max_recs)
{
    return align_page(recs_offset() + (size_t)max_recs * sizeof(shm_rec));
}

static size_t file_size(uint32_t max_recs, uint64_t arena_bytes)
{
    return arena_offset(max_recs) + (size_t)arena_bytes;
}

void keep_file_path(char *out, size_t n, const char *run_dir, int slot, const char *adopt_client_id)
{
    if (adopt_client_id)
        snprintf(out, n, "%s/keep-adopt-%016llx", run_dir,
                 (unsigned long long)hash_fnv1a(HASH_FNV1A_INIT, adopt_client_id, strlen(adopt_client_id)));
    else
        snprintf(out, n, "%s/keep-%d", run_dir, slot);
}

/* 1 when h (read from a file of st_size bytes) is a keep of ours. */
static int valid_header(const keep_hdr *h, size_t st_size)
{
    return h->magic == KEEP_MAGIC && h->version == KEEP_VERSION && h->max_recs > 0 &&
           h->size == file_size(h->max_recs, h->arena_bytes) && h->size == st_size;
}

static void set_views(keep_map *km, void *p, size_t size)
{
    km->h = p;
    km->size = size;
    km->rec = (shm_rec *)((char *)p + recs_offset());
    km->arena = (char *)p + arena_offset(km->h->max_recs);
}

static int map_fd(keep_map *km, int fd, size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return -1;
    set_views(km, p, size);
    return 0;
}

uint32_t keep_file_count(const keep_map *km)
{
    uint32_t n = 0, used = atomic_load(&km->h->used);
    for (uint32_t i = 0; i < used && i < km->h->max_recs; i++)
        n += atomic_load_explicit(&km->rec[i].state, memory_order_acquire) != REC_FREE;
    return n;
}

/* An existing keep at fd, mapped into km when valid; 0, or -1 when not a keep. */
static int map_existing(keep_map *km, int fd)
{
    struct stat st;
    keep_hdr h;
    if (fstat(fd, &st) || (size_t)st.st_size < sizeof h || pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h ||
        !valid_header(&h, (size_t)st.st_size))
        return -1;
    return map_fd(km, fd, (size_t)st.st_size);
}

int keep_file_map(keep_map *km, const char *path)
{
    memset(km, 0, sizeof *km);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = map_existing(km, fd);
    close(fd);
    return rc;
}

void keep_file_unmap(keep_map *km)
{
    if (km->h) munmap(km->h, km->size);
    memset(km, 0, sizeof *km);
}

static int reserve(int fd, size_t size, const char *path, char *err, size_t errlen)
{
    int rc = posix_fallocate(fd, 0, (off_t)size);
    if (rc == 0) return 0;
    snprintf(err, errlen, "cannot reserve %.1f MB for the keep in %s: %s", size / 1048576.0, path, strerror(rc));
    return -1;
}

/* A new, empty keep at path (made as path.new, then renamed). */
static int make_new(keep_map *km, const char *path, uint32_t max_recs, uint64_t arena_bytes, char *err, size_t errlen)
{
    char tmp[4200];
    size_t size = file_size(max_recs, arena_bytes);
    snprintf(tmp, sizeof tmp, "%s.new", path);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create the keep %s: %s", tmp, strerror(errno));
        return -1;
    }
    if (reserve(fd, size, path, err, errlen) || map_fd(km, fd, size)) {
        if (!err[0]) snprintf(err, errlen, "cannot map the keep %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    close(fd);
    keep_hdr *h = km->h;
    h->version = KEEP_VERSION;
    h->max_recs = max_recs;
    h->arena_bytes = arena_bytes;
    h->size = size;
    atomic_store(&h->next_seq, 0);
    atomic_store(&h->used, 0);
    h->magic = KEEP_MAGIC;  /* last: a half-made file is never taken for a keep */
    set_views(km, h, size);
    if (rename(tmp, path)) {
        snprintf(err, errlen, "cannot rename %s into place: %s", tmp, strerror(errno));
        keep_file_unmap(km);
        unlink(tmp);
        return -1;
    }
    return 0;
}

int keep_file_open_reserved(keep_map *km, const char *path, uint32_t max_recs, uint64_t arena_bytes,
                            uint32_t *kept_geometry, char *err, size_t errlen)
{
    memset(km, 0, sizeof *km);
    err[0] = 0;
    *kept_geometry = 0;
    if (keep_file_upgrade(path, err, errlen) < 0) return -1;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd >= 0 && map_existing(km, fd) == 0) {
        int same = km->h->max_recs == max_recs && km->h->arena_bytes == arena_bytes;
        if (same || keep_file_count(km) > 0) {
            /* Its space may have holes (copied, restored): reserve it all. */
            int rc = reserve(fd, km->size, path, err, errlen);
            close(fd);
            if (rc) { keep_file_unmap(km); return -1; }
            *kept_geometry = !same;
            return 0;
        }
        keep_file_unmap(km);
    }
    if (fd >= 0) close(fd);
    return make_new(km, path, max_recs, arena_bytes, err, errlen);
}
