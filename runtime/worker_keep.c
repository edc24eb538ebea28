/* Where a taken message is kept until it is finished: a record in the
 * slot's keep file (keep_file.h, under the run directory) and its bytes in
 * the file's arena, so that a replacement worker, or the next start of the
 * instance, finds every message this one had not finished. The file's space
 * is reserved when the worker starts; reading incoming messages stops while
 * a record or room for the largest message is missing (worker_keep_has_room),
 * so nothing is acknowledged that cannot be kept. The allocation state
 * (which records and arena chunks are free) is the process's own and is
 * rebuilt from the records when a worker starts. */
#include "worker_internal.h"
#include "log.h"
#include "hash.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROPS_ROOM (64 * 1024)   /* packed properties kept with a message, at most (worker_dispatch.c) */
#define MQTT_MAX_PACKET 268435460u

static void mark_chunks(worker_keep_state *k, uint32_t first, uint32_t n, int used)
{
    for (uint32_t c = first; c < first + n; c++) {
        if (used) k->bits[c / 64] |= 1ULL << (c % 64);
        else k->bits[c / 64] &= ~(1ULL << (c % 64));
    }
    if (!used && first / 64 < k->first_free_word) k->first_free_word = first / 64;
    if (used && first + n > k->used_end) k->used_end = first + n;
    k->room = -1;
}

/* Lowers used_end to just past the last used chunk. */
static void trim_used_end(worker_keep_state *k)
{
    uint32_t word = (k->used_end + 63) / 64;
    while (word > 0 && k->bits[word - 1] == 0) word--;
    if (word == 0) { k->used_end = 0; return; }
    uint64_t last = k->bits[word - 1];
    k->used_end = (word - 1) * 64 + 64 - (uint32_t)__builtin_clzll(last);
}

/* First fit: n free chunks in a row, lowest first, so that the same few
 * pages serve a steady flow; -1 when there is no such run. Whole used or
 * free words are stepped over at once. */
static int64_t find_chunks(worker_keep_state *k, uint32_t n)
{
    uint32_t words = k->nchunks / 64;
    while (k->first_free_word < words && k->bits[k->first_free_word] == ~0ULL) k->first_free_word++;
    uint32_t run = 0;
    for (uint32_t c = k->first_free_word * 64; c < k->nchunks;) {
        uint64_t word = k->bits[c / 64];
        if (c % 64 == 0 && word == ~0ULL) { run = 0; c += 64; continue; }
        if (c % 64 == 0 && word == 0 && run + 64 < n) { run += 64; c += 64; continue; }
        if ((word >> (c % 64)) & 1) run = 0;
        else if (++run == n) return (int64_t)c + 1 - n;
        c++;
    }
    return -1;
}

static int by_seq(const void *a, const void *b, void *keep)
{
    const shm_rec *rec = keep;
    uint64_t x = rec[*(const int *)a].seq, y = rec[*(const int *)b].seq;
    return (x > y) - (x < y);
}

uint32_t worker_keep_max_message(const worker *w)
{
    uint64_t m = (uint64_t)w->keep.nchunks * SHM_CHUNK / 4;
    return m > MQTT_MAX_PACKET ? MQTT_MAX_PACKET : (uint32_t)m;
}

int worker_keep_setup(worker *w)
{
    worker_keep_state *k = &w->keep;
    char path[4200], err[4600];
    uint32_t other = 0;
    keep_file_path(path, sizeof path, w->cfg->run_dir, w->args->slot, w->args->adopt_client_id);
    if (keep_file_open_reserved(&k->km, path, (uint32_t)w->cfg->max_kept, (uint64_t)w->cfg->max_kept_mb << 20, &other,
                                err, sizeof err)) {
        log_error("%s; the worker does not start without room for its keep (WORKER_MAX_KEPT=%ld, "
                  "WORKER_MAX_KEPT_MB=%ld: free some space or lower them)", err, w->cfg->max_kept, w->cfg->max_kept_mb);
        return -1;
    }
    if (other)
        log_warn("the keep %s still holds messages kept with WORKER_MAX_KEPT=%u and WORKER_MAX_KEPT_MB=%llu; it keeps "
                 "that size until a start finds it empty", path, k->km.h->max_recs,
                 (unsigned long long)(k->km.h->arena_bytes >> 20));
    k->max_recs = k->km.h->max_recs;
    k->nchunks = (uint32_t)(k->km.h->arena_bytes / SHM_CHUNK / 64 * 64);
    k->bits = calloc(k->nchunks / 64 + 1, sizeof *k->bits);
    k->free_stack = calloc(k->max_recs, sizeof *k->free_stack);
    w->recs = calloc(k->max_recs, sizeof *w->recs);
    w->queue.cap = (int)k->max_recs + 1;
    w->queue.ids = calloc((size_t)w->queue.cap, sizeof *w->queue.ids);
    uint64_t room = (uint64_t)worker_keep_max_message(w) + PROPS_ROOM;
    k->room_chunks = (uint32_t)((room + SHM_CHUNK - 1) / SHM_CHUNK);
    if (k->room_chunks > k->nchunks) k->room_chunks = k->nchunks;
    k->room = -1;
    if (k->bits && k->free_stack && w->recs && w->queue.ids) return 0;
    log_error("out of memory");
    return -1;
}

void worker_keep_free(worker *w)
{
    keep_file_unmap(&w->keep.km);
    free(w->keep.bits);
    free(w->keep.free_stack);
    free(w->recs);
    free(w->queue.ids);
    w->keep.bits = NULL;
    w->keep.free_stack = NULL;
    w->recs = NULL;
    w->queue.ids = NULL;
}

shm_rec *worker_keep_rec(worker *w, int id)
{
    return &w->keep.km.rec[id];
}

int worker_keep_init(worker *w, int *ids, int max)
{
    worker_keep_state *k = &w->keep;
    keep_hdr *h = k->km.h;
    memset(k->bits, 0, (k->nchunks / 64 + 1) * sizeof *k->bits);
    k->first_free_word = 0;
    k->used_end = 0;
    k->nfree = 0;
    k->room = -1;
    int n = 0;
    uint32_t used = atomic_load(&h->used);
    k->fresh = used > k->max_recs ? k->max_recs : used;
    for (int i = (int)k->fresh - 1; i >= 0; i--) {
        shm_rec *r = &k->km.rec[i];
        if (atomic_load_explicit(&r->state, memory_order_acquire) == REC_FREE ||
            (uint64_t)r->chunk + r->nchunks > k->nchunks) {
            atomic_store(&r->state, REC_FREE);
            k->free_stack[k->nfree++] = (uint32_t)i;
            continue;
        }
        mark_chunks(k, r->chunk, r->nchunks, 1);
        if (n < max) ids[n++] = i;
    }
    /* Arrival order: what the previous worker took first is handled first
     * (a flood can leave hundreds of thousands: no quadratic sort). */
    qsort_r(ids, (size_t)n, sizeof *ids, by_seq, k->km.rec);
    atomic_store(&w->shm->kept, (uint32_t)n);
    return n;
}

/* Asked after every message taken or finished: the free tail above the
 * last used chunk answers at once in a steady flow (first fit keeps the
 * used chunks low); only a keep filled that far is searched. */
static int room_for_largest(worker_keep_state *k)
{
    if (k->nchunks - k->used_end >= k->room_chunks) return 1;
    trim_used_end(k);
    if (k->nchunks - k->used_end >= k->room_chunks) return 1;
    return find_chunks(k, k->room_chunks) >= 0;
}

int worker_keep_has_room(worker *w)
{
    worker_keep_state *k = &w->keep;
    if (k->room < 0) k->room = (k->nfree > 0 || k->fresh < k->max_recs) && room_for_largest(k);
    return k->room;
}

void worker_keep_count_lost(worker *w, const char *reason)
{
    (void)reason;  /* one reason so far: too_large */
    atomic_fetch_add_explicit(&w->shm->lost_too_large, 1, memory_order_relaxed);
}

int worker_keep_add(worker *w, const worker_msg *m)
{
    worker_keep_state *k = &w->keep;
    keep_hdr *h = k->km.h;
    int id;
    w->taken_match.id_plus1 = 0;  /* a record id about to hold another message */
    if (k->nfree) id = (int)k->free_stack[k->nfree - 1];
    else if (k->fresh < k->max_recs) id = (int)k->fresh;
    else return -1;
    size_t len = m->tlen + m->plen + m->props_len;
    uint32_t need = (uint32_t)((len + SHM_CHUNK - 1) / SHM_CHUNK);
    if (!need) need = 1;
    int64_t first = len <= (uint64_t)k->nchunks * SHM_CHUNK ? find_chunks(k, need) : -1;
    if (first < 0) return -1;
    shm_rec *r = &k->km.rec[id];
    r->seq = atomic_fetch_add_explicit(&h->next_seq, 1, memory_order_relaxed) + 1;
    r->chunk = (uint32_t)first;
    r->nchunks = need;
    mark_chunks(k, r->chunk, r->nchunks, 1);
    char *p = k->km.arena + (size_t)r->chunk * SHM_CHUNK;
    memcpy(p, m->topic, m->tlen);
    if (m->plen) memcpy(p + m->tlen, m->payload, m->plen);
    if (m->props_len) memcpy(p + m->tlen + m->plen, m->props, m->props_len);
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
    r->earlier_run = 0;
    r->dlq = 0;
    /* A reused record must not look like a retry or a replay of its previous message. */
    r->failures = 0;
    r->due_ms = 0;
    r->dlq_id = 0;
    r->replayed = 0;
    r->redelivered = 0;
    r->started_ns = 0;
    r->reason[0] = 0;
    if (k->nfree) k->nfree--;
    else atomic_store(&h->used, ++k->fresh);
    k->room = -1;
    /* Published last: a record the master or a replacement sees is complete. */
    atomic_store_explicit(&r->state, REC_QUEUED, memory_order_release);
    atomic_fetch_add_explicit(&w->shm->kept, 1, memory_order_relaxed);
    return id;
}

void worker_keep_open(worker *w, int id, worker_kept *out)
{
    shm_rec *r = &w->keep.km.rec[id];
    memset(out, 0, sizeof *out);
    out->bytes = w->keep.km.arena + (size_t)r->chunk * SHM_CHUNK;
    out->msg.topic = out->bytes;
    out->msg.tlen = r->topic_len;
    out->msg.payload = out->bytes + r->topic_len;
    out->msg.plen = r->payload_len;
    out->msg.props = out->bytes + r->topic_len + r->payload_len;
    out->msg.props_len = r->props_len;
    out->msg.qos = r->qos;
    out->msg.retain = r->retain;
    out->msg.rid = r->route_index;
}

void worker_keep_release(worker *w, int id)
{
    worker_keep_state *k = &w->keep;
    shm_rec *r = &k->km.rec[id];
    if (atomic_load_explicit(&r->state, memory_order_relaxed) == REC_FREE) return;
    atomic_store_explicit(&r->state, REC_FREE, memory_order_release);
    mark_chunks(k, r->chunk, r->nchunks, 0);
    k->free_stack[k->nfree++] = (uint32_t)id;
    k->room = -1;
    atomic_fetch_sub_explicit(&w->shm->kept, 1, memory_order_relaxed);
}
