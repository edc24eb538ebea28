/* The keep of a worker slot on disk: <run dir>/keep-<slot> (adoption
 * workers: keep-adopt-<hash of the client id>), one file holding a header,
 * the message records and the arena of their bytes. The worker maps it
 * MAP_SHARED, so what it keeps survives the worker, the master and a
 * restart of the instance (not a crash of the host: nothing is synced).
 * Its whole size is reserved (posix_fallocate) when the worker starts, so a
 * full disk or tmpfs can never fault a write later. */
#ifndef ROUTEMQ_KEEP_FILE_H
#define ROUTEMQ_KEEP_FILE_H

#include "shm.h"

#include <stddef.h>
#include <stdint.h>

#define KEEP_MAGIC   0x31504545514d5452ULL  /* "RTMQKEEP1" of sorts */
#define KEEP_VERSION 2   /* 2: retries and replays (failures, due_ms, dlq_id) */

typedef struct keep_hdr {
    uint64_t magic;
    uint32_t version;
    uint32_t max_recs;              /* records in the file (WORKER_MAX_KEPT when made) */
    uint64_t arena_bytes;           /* arena size (WORKER_MAX_KEPT_MB when made) */
    uint64_t size;                  /* the whole file */
    _Atomic uint64_t next_seq;      /* written by the slot's workers only */
    _Atomic uint32_t used;          /* records [used, max_recs) were never used */
    _Atomic int32_t master_pid;     /* the master of the worker that last opened it */
    uint64_t app_hash;              /* fingerprint of the routes of that worker's application */
    shm_seen seen;                  /* recent deliveries (worker_dispatch.c), across restarts */
} keep_hdr;

typedef struct keep_map {
    keep_hdr *h;                    /* NULL: not mapped */
    shm_rec *rec;
    char *arena;
    size_t size;
} keep_map;

/* <run_dir>/keep-<slot>, or for an adoption worker keep-adopt-<hash of client_id>. */
void keep_file_path(char *out, size_t n, const char *run_dir, int slot, const char *adopt_client_id);
/* Opens (or makes) the keep at path with max_recs records and arena_bytes of
 * arena, reserving its space; a keep that still holds messages keeps its
 * own geometry until it is empty (*kept_geometry is then 1, else 0).
 * 0 ok; -1 with the reason in err. */
int keep_file_open_reserved(keep_map *km, const char *path, uint32_t max_recs, uint64_t arena_bytes,
                            uint32_t *kept_geometry, char *err, size_t errlen);
/* Maps an existing keep (the master, after a worker ended); 0 ok, -1 when
 * there is none or it is not a keep. */
int keep_file_map(keep_map *km, const char *path);
void keep_file_unmap(keep_map *km);
/* Rewrites a keep of an earlier layout at path in the current one
 * (keep_file_upgrade.c): 1 done, 0 nothing to do, -1 with the reason in err. */
int keep_file_upgrade(const char *path, char *err, size_t errlen);
/* Records in use in a mapped keep. */
uint32_t keep_file_count(const keep_map *km);

#endif
