/* A worker process: one LuaJIT state with the application, one MQTT
 * connection, one event loop. Runs in the child after the master forks. */
#ifndef ROUTEMQ_WORKER_H
#define ROUTEMQ_WORKER_H

#include <stdint.h>
#include <sys/types.h>
#include "config.h"
#include "shm.h"

typedef struct worker_args {
    const config *cfg;
    int slot;                /* 0-based slot number */
    uint32_t generation;     /* how many times this slot was started, 1 first */
    shm_slot *shm;           /* this slot's shared state */
    int workers_override;    /* worker_count of every shared route, 0: as routed */
    pid_t master_pid;
    const char *adopt_client_id; /* adoption (docs/deployment.md): resume this client id's session, handle what is
                                    queued, end it; NULL for a normal worker */
    char *const *adopt_routes;   /* the routes the orphan's record declares (NULL: not checked);  */
    int adopt_nroutes;           /* a message outside them stops the adoption (worker_adopt_guard.c) */
} worker_args;

/* Exit code of an adoption worker that found no session to adopt. */
#define WORKER_EXIT_ADOPT_NONE 20
/* Exit code of an adoption worker that met a message outside the orphan's routes. */
#define WORKER_EXIT_ADOPT_REFUSED 21
/* Exit code of a retiring or adoption worker that left with its session
 * kept (the broker was still sending at the stop deadline, or it was told
 * to leave the session): what is queued there waits for a successor. */
#define WORKER_EXIT_SESSION_KEPT 22

/* Runs the worker until it is told to stop; returns its exit code (WORKER_EXIT_*).
 * Signals: SIGTERM/SIGINT stop gracefully keeping the MQTT session; SIGUSR2
 * retires the slot for good (ends the session); SIGQUIT stops at once. The
 * worker also stops when the master dies. */
int worker_main(const worker_args *a);

#endif
