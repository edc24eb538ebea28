/* Where a taken message is kept until it is finished: a record in the slot's
 * shared memory and its bytes in the slot's arena, or in a file of its own in
 * /dev/shm when it is large (or the arena has no room), so that a replacement
 * worker finds every message this one had not finished, whatever its size.
 * The allocation state (which records and arena chunks are free) is the
 * process's own and is rebuilt from the records when a worker starts. */
#include "worker_internal.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define WORDS (SHM_ARENA_CHUNKS / 64)

/* Adoption workers have a shared area of their own, with its own sequence:
 * their files are named apart from the slot's (SHM_ADOPT_SLOT_BASE). */
static void external_name(const worker *w, uint64_t seq, char *out, size_t n)
{
    int slot = w->args->adopt_client_id ? SHM_ADOPT_SLOT_BASE + w->args->slot : w->args->slot;
    shm_keep_file_name(out, n, (int)w->args->master_pid, slot, seq);
}

static int chunk_used(const worker_keep_state *k, uint32_t c)
{
    return (int)((k->bits[c / 64] >> (c % 64)) & 1);
}

static void mark_chunks(worker_keep_state *k, uint32_t first, uint32_t n, int used)
{
    for (uint32_t c = first; c < first + n; c++) {
        if (used) k->bits[c / 64] |= 1ULL << (c % 64);
        else k->bits[c / 64] &= ~(1ULL << (c % 64));
    }
    if (!used && first / 64 < k->first_free_word) k->first_free_word = first / 64;
}

/* First fit: n free chunks in a row, lowest first, so that the same few
 * pages serve a steady flow and the rest of the arena is never touched;
 * -1 when there is no such run. */
static int64_t find_chunks(worker_keep_state *k, uint32_t n)
{
    while (k->first_free_word < SHM_ARENA_CHUNKS / 64 && k->bits[k->first_free_word] == ~0ULL) k->first_free_word++;
    uint32_t run = 0;
    for (uint32_t c = k->first_free_word * 64; c < SHM_ARENA_CHUNKS; c++) {
        if (!(c % 64) && k->bits[c / 64] == ~0ULL) { run = 0; c += 63; continue; }
        if (chunk_used(k, c)) { run = 0; continue; }
        if (++run == n) return c + 1 - n;
    }
    return -1;
}

static int by_seq(const void *a, const void *b, void *keep)
{
    const shm_keep *sk = keep;
    uint64_t x = sk->rec[*(const int *)a].seq, y = sk->rec[*(const int *)b].seq;
    return (x > y) - (x < y);
}

int worker_keep_setup(worker *w)
{
    w->keep.free_stack = calloc(SHM_RECS, sizeof *w->keep.free_stack);
    w->recs = calloc(SHM_RECS, sizeof *w->recs);
    w->queue.ids = calloc(SHM_RECS + 1, sizeof *w->queue.ids);
    if (w->keep.free_stack && w->recs && w->queue.ids) return 0;
    log_error("out of memory");
    return -1;
}

void worker_keep_free(worker *w)
{
    free(w->keep.free_stack);
    free(w->recs);
    free(w->queue.ids);
    w->keep.free_stack = NULL;
    w->recs = NULL;
    w->queue.ids = NULL;
}

int worker_keep_init(worker *w, int *ids, int max)
{
    worker_keep_state *k = &w->keep;
    shm_keep *sk = &w->shm->keep;
    memset(k->bits, 0, sizeof k->bits);
    k->first_free_word = 0;
    k->nfree = 0;
    int n = 0;
    uint32_t used = atomic_load(&sk->used);
    k->fresh = used > SHM_RECS ? SHM_RECS : used;
    for (int i = (int)k->fresh - 1; i >= 0; i--) {
        shm_rec *r = &sk->rec[i];
        if (atomic_load_explicit(&r->state, memory_order_acquire) == REC_FREE) {
            k->free_stack[k->nfree++] = (uint32_t)i;
            continue;
        }
        if (!r->external) mark_chunks(k, r->chunk, r->nchunks, 1);
        if (n < max) ids[n++] = i;
    }
    /* Arrival order: what the previous worker took first is handled first
     * (a flood can leave hundreds of thousands: no quadratic sort). */
    qsort_r(ids, (size_t)n, sizeof *ids, by_seq, sk);
    atomic_store(&w->shm->kept, (uint32_t)n);
    return n;
}

int worker_keep_full(const worker *w)
{
    return w->keep.nfree == 0 && w->keep.fresh >= SHM_RECS;
}

static int write_external(worker *w, shm_rec *r, const worker_msg *m)
{
    char name[96];
    size_t len = m->tlen + m->plen + m->props_len;
    external_name(w, r->seq, name, sizeof name);
    int fd = shm_open(name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    int rc = -1;
    if (len == 0 || ftruncate(fd, (off_t)len) == 0) {
        char *p = len ? mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : NULL;
        if (!len || p != MAP_FAILED) {
            if (len) {
                memcpy(p, m->topic, m->tlen);
                if (m->plen) memcpy(p + m->tlen, m->payload, m->plen);
                if (m->props_len) memcpy(p + m->tlen + m->plen, m->props, m->props_len);
                munmap(p, len);
            }
            rc = 0;
        }
    }
    close(fd);
    if (rc) shm_unlink(name);
    return rc;
}

int worker_keep_add(worker *w, const worker_msg *m)
{
    worker_keep_state *k = &w->keep;
    shm_keep *sk = &w->shm->keep;
    int id;
    if (k->nfree) id = (int)k->free_stack[k->nfree - 1];
    else if (k->fresh < SHM_RECS) id = (int)k->fresh;
    else return -1;
    shm_rec *r = &sk->rec[id];
    size_t len = m->tlen + m->plen + m->props_len;
    uint32_t need = (uint32_t)((len + SHM_CHUNK - 1) / SHM_CHUNK);
    r->seq = atomic_fetch_add_explicit(&sk->next_seq, 1, memory_order_relaxed) + 1;
    r->external = 0;
    int64_t first = len <= SHM_ARENA_MAX ? find_chunks(k, need ? need : 1) : -1;
    if (first >= 0) {
        r->chunk = (uint32_t)first;
        r->nchunks = need ? need : 1;
        mark_chunks(k, r->chunk, r->nchunks, 1);
        char *p = sk->arena + (size_t)r->chunk * SHM_CHUNK;
        memcpy(p, m->topic, m->tlen);
        if (m->plen) memcpy(p + m->tlen, m->payload, m->plen);
        if (m->props_len) memcpy(p + m->tlen + m->plen, m->props, m->props_len);
    } else {
        if (write_external(w, r, m)) {
            log_error("cannot keep a message of %zu bytes in /dev/shm: %s", len, strerror(errno));
            return -1;
        }
        r->external = 1;
        r->chunk = r->nchunks = 0;
    }
    r->topic_len = (uint32_t)m->tlen;
    r->payload_len = (uint32_t)m->plen;
    r->props_len = (uint32_t)m->props_len;
    r->qos = (uint8_t)m->qos;
    r->retain = (uint8_t)m->retain;
    r->route_index = m->rid;
    r->stat_index = -1;
    r->attempts = 0;
    r->stop_kills = 0;
    r->started = 0;
    r->dlq = 0;
    r->started_ns = 0;
    r->reason[0] = 0;
    if (k->nfree) k->nfree--;
    else atomic_store(&sk->used, ++k->fresh);
    /* Published last: a record the master or a replacement sees is complete. */
    atomic_store_explicit(&r->state, REC_QUEUED, memory_order_release);
    atomic_fetch_add_explicit(&w->shm->kept, 1, memory_order_relaxed);
    return id;
}

int worker_keep_open(worker *w, int id, worker_kept *out)
{
    shm_rec *r = &w->shm->keep.rec[id];
    size_t len = (size_t)r->topic_len + r->payload_len + r->props_len;
    memset(out, 0, sizeof *out);
    if (!r->external) {
        out->bytes = w->shm->keep.arena + (size_t)r->chunk * SHM_CHUNK;
    } else if (len) {
        char name[96];
        external_name(w, r->seq, name, sizeof name);
        int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0) return -1;
        void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
        close(fd);
        if (p == MAP_FAILED) return -1;
        out->bytes = p;
        out->map_len = len;
    } else {
        out->bytes = "";
    }
    out->msg.topic = out->bytes;
    out->msg.tlen = r->topic_len;
    out->msg.payload = out->bytes + r->topic_len;
    out->msg.plen = r->payload_len;
    out->msg.props = out->bytes + r->topic_len + r->payload_len;
    out->msg.props_len = r->props_len;
    out->msg.qos = r->qos;
    out->msg.retain = r->retain;
    out->msg.rid = r->route_index;
    return 0;
}

void worker_keep_close(worker_kept *k)
{
    if (k->map_len) munmap((void *)k->bytes, k->map_len);
    memset(k, 0, sizeof *k);
}

void worker_keep_release(worker *w, int id)
{
    worker_keep_state *k = &w->keep;
    shm_rec *r = &w->shm->keep.rec[id];
    if (atomic_load_explicit(&r->state, memory_order_relaxed) == REC_FREE) return;
    atomic_store_explicit(&r->state, REC_FREE, memory_order_release);
    if (r->external) {
        char name[96];
        external_name(w, r->seq, name, sizeof name);
        shm_unlink(name);
    } else {
        mark_chunks(k, r->chunk, r->nchunks, 0);
    }
    k->free_stack[k->nfree++] = (uint32_t)id;
    atomic_fetch_sub_explicit(&w->shm->kept, 1, memory_order_relaxed);
}
