/* The master process: forks the workers into slots and supervises them
 * (restarts with crash-loop backoff, watchdog, graceful stop, hot reload,
 * scaling). It never does MQTT I/O; everything it knows about a worker comes
 * from waitpid() and the worker's slot in shared memory (shm.h).
 *
 * master.c          master_run, the event loop, signals, graceful stop
 * master_spawn.c    forking a worker into a slot (both sides of the fork)
 * master_reap.c     exits: reasons, in-flight records, restart and backoff
 * master_watchdog.c handler timeouts, heartbeats, stop deadlines
 * master_app.c      a generation's route table and code, shared by reference
 * master_reload.c   SIGHUP reload slot by slot
 * master_scale.c    SIGTTIN/SIGTTOU, auto-scale, memory backstop
 * master_policy.c   pure supervision rules: restart backoff, exit names, worker counts
 * master_control.c  the control socket's connections; master_commands.c its requests
 * master_request.c  one control request line parsed (pure; fuzzed)
 * master_status.c   status as JSON and as a table, readiness
 * master_http.c     the admin HTTP endpoint (libmicrohttpd, driven by our loop)
 * master_auth.c     the admin endpoint's access rules (token, peers)
 * master_console.c  the web console's embedded files and actions
 * master_errors.c   the latest handler errors of every slot
 * master_history.c  one sample a second of every route and slot, for the console
 * master_metrics.c  Prometheus text
 * master_notify.c   systemd sd_notify (READY, RELOADING, STOPPING, WATCHDOG)
 * master_presence.c the master's own MQTT connection: presence records of the group (docs/deployment.md)
 * master_adopt.c    adopting the sessions of a lost or stopped instance (docs/deployment.md)
 * The master's state is struct master below: one sub-object per concern
 * (control, presence, adopt, notify, http_state, history...), each released
 * in master.c's teardown.
 */
#ifndef ROUTEMQ_MASTER_H
#define ROUTEMQ_MASTER_H

#include <signal.h>
#include <stdint.h>
#include <sys/types.h>

#include "app.h"
#include "clock.h"
#include "config.h"
#include "luavm.h"
#include "shm.h"
#include "strbuf.h"


/* What cli_run hands to master_run. */
typedef struct master_params {
    config *cfg;                  /* the caller's; outlives master_run */
    app_def app;                  /* validated route table; master_run takes it over */
    luavm_paths paths;            /* for loading the application again on reload */
    int base_override;            /* --workers / WORKER_COUNT; 0: as routed */
    int override;                 /* worker_count override at start (base or auto-scale clamp) */
    int workers;                  /* P at start */
    int nslots;                   /* shared memory slots: the most workers we can scale to */
    int64_t restart_max_delay_ns; /* WORKER_RESTART_MAX_DELAY */
    int control_fd;               /* listening control socket (rundir.c owns it) */
    int dev_watch;                /* `routemq dev`: reload when application files change */
} master_params;

/* What an epoll event of the master's loop is about: data.u64 = kind << 32 | index. */
enum master_event { MEV_SIGNAL = 1, MEV_CONTROL_LISTEN, MEV_CONTROL_CONN, MEV_HTTP, MEV_WATCH, MEV_PRESENCE };
#define MEV(kind, index) (((uint64_t)(kind) << 32) | (uint32_t)(index))

/* Why a worker was restarted: the index of master.restarts_by_reason. */
typedef enum restart_reason {
    RESTART_EXIT,             /* exited by itself */
    RESTART_SIGNAL,           /* killed by a signal the master did not send */
    RESTART_HANDLER_TIMEOUT,  /* watchdog: a handler ran past its route's timeout */
    RESTART_HEARTBEAT,        /* watchdog: no heartbeat for WORKER_HEARTBEAT_TIMEOUT */
    RESTART_STARTUP,          /* watchdog: stuck while starting */
    RESTART_RECYCLE,          /* asked to be replaced (max messages / memory) */
    RESTART_RECYCLE_MEMORY,   /* the master's memory backstop stopped it */
    RESTART_HEALTH,           /* the application's health check (router.health) kept failing */
    RESTART_APP_ERROR,        /* the worker could not load its application */
    RESTART_NREASONS
} restart_reason;

/* Why the master SIGKILLed a worker. */
typedef enum kill_cause {
    KILL_NONE = 0, KILL_HANDLER_TIMEOUT, KILL_HEARTBEAT, KILL_STARTUP, KILL_STOP_TIMEOUT, KILL_ALL
} kill_cause;

/* Why the master asked a worker to stop; decides what follows its exit. */
typedef enum stop_cause {
    MSTOP_NONE = 0, MSTOP_RELOAD, MSTOP_RETIRE, MSTOP_RECYCLE_MEMORY, MSTOP_SHUTDOWN, MSTOP_HEALTH
} stop_cause;

/* A route table, shared by the current application and every worker started
 * with it; freed when its last user lets go (the watchdog needs the timeouts
 * of the routes an old-generation worker runs). */
typedef struct master_app {
    app_def def;
    int refs;
    uint32_t generation;
} master_app;

/* The master's own record of one slot (the worker's view is shm_slot). */
typedef struct master_slot {
    pid_t pid;                   /* 0: no process */
    uint32_t generation;         /* times this slot was started */
    int active;                  /* part of the running set: restart it when it dies */
    int64_t started_ns;
    int64_t restart_at_ns;       /* a delayed restart is due then; 0: none */
    int quick_deaths;            /* deaths in a row within 1 s of starting */
    kill_cause kill;             /* set when the master SIGKILLed it */
    char kill_detail[SHM_REASON_MAX]; /* the in-flight reason for a watchdog kill */
    stop_cause stop;             /* set when the master asked it to stop */
    int64_t stop_deadline_ns;    /* SIGKILL when still alive then */
    uint64_t stop_progress;      /* messages handled when the deadline was last moved (retiring) */
    master_app *app;             /* route table it was started with (a reference) */
    int64_t busy_seen_ns;        /* last tick a handler was seen running */
    uint64_t busy_prev;          /* busy time at the last auto-scale sample */
    int busy_valid;              /* busy_prev is a baseline of this process */
    uint64_t restarts;
    char last_restart[96];       /* why its worker was last restarted (master_reason_text); "" none */
    restart_reason last_restart_reason;
    int64_t last_restart_ns;     /* when */
} master_slot;

typedef enum reload_phase {
    RELOAD_IDLE = 0,
    RELOAD_NEXT,        /* pick the next slot to replace */
    RELOAD_WAIT_EXIT,   /* the old worker of `slot` is draining */
    RELOAD_WAIT_READY,  /* the new worker of `slot` is starting */
} reload_phase;

typedef struct master_reload {
    reload_phase phase;
    int pending;           /* one more SIGHUP arrived meanwhile */
    int slot;              /* slot being replaced */
    pid_t old_pid;
    int old_p, new_p;
    int64_t started_ns, deadline_ns;
    uint64_t seq;          /* master.reload_seq of this reload */
} master_reload;

typedef struct master_autoscale {
    int64_t last_ns;       /* last sample */
    int high, low;         /* consecutive samples above 75% / below 10% */
    int64_t cooldown_until_ns;
} master_autoscale;

/* systemd notification state (master_notify.c). */
typedef struct master_notify_state {
    int enabled;                 /* NOTIFY_SOCKET is set */
    int ready_sent;              /* READY=1 went out after the start */
    int64_t watchdog_interval_ns; /* 0: the unit has no WatchdogSec */
    int64_t watchdog_next_ns;
} master_notify_state;

/* Adoption of orphaned sessions (master_adopt.c): its workers, counters and
 * the records it left alone; released by master_adopt_teardown. */
#define MASTER_ADOPT_REFUSED_REASONS 3  /* client_id, route, unexpected_message */
struct adopter;
struct adopt_refused;
typedef struct master_adopt_state {
    struct adopter *adopters;    /* nadopters of them */
    int nadopters;
    uint64_t sessions_total, messages_total;
    uint64_t refused_total[MASTER_ADOPT_REFUSED_REASONS];
    struct adopt_refused *refused; /* (instance, seq) refused, nrefused of them, logged once each */
    int nrefused;
} master_adopt_state;

/* The outcome of the latest reload, kept for POST /reload's answer (master_console.c). */
typedef struct master_console_state {
    uint64_t reload_seq;
    int reload_ok;
    char reload_msg[1024];
} master_console_state;

typedef struct master_control master_control;  /* master_control.c */
typedef struct master_http_state master_http_state;  /* master_http.c */
typedef struct master_history master_history;        /* master_history.c */
typedef struct master_errors master_errors;          /* master_errors.c */
struct MHD_Daemon;

typedef struct master {
    config *cfg;
    luavm_paths paths;
    shm_area *shm;
    master_slot *slots;    /* nslots of them */
    int nslots;
    int P;                 /* slots meant to run: 0 .. P-1 */
    int override;          /* what new workers get as workers_override */
    int base_override;
    master_app *app;       /* the current application (a reference) */
    uint32_t app_generation;
    pid_t pid;
    int epfd, sfd;
    sigset_t sigmask, oldmask;
    int64_t restart_max_delay_ns;

    int stopping;
    int killed_all;
    int exit_code;
    int64_t stop_started_ns;

    master_reload reload;
    int scale_pending;     /* SIGTTIN/SIGTTOU received during a reload */
    master_autoscale autoscale;
    int64_t next_second_ns;

    uint64_t restarts_by_reason[RESTART_NREASONS];
    uint64_t reloads_ok, reloads_failed;
    uint64_t reload_seq;   /* reloads started (loaded or failed); what `routemq reload` waits for */
    int scale_to_pending;  /* `routemq scale N` received during a reload; 0: none */

    int64_t started_ns;
    master_control *control;
    struct MHD_Daemon *http;
    int http_epfd;         /* libmicrohttpd's epoll fd, inside ours; -1: no HTTP */
    master_http_state *http_state; /* its connections and access rules; freed by master_http_stop */
    master_history *history;  /* /stats: allocated when HTTP starts, freed by master_history_free */
    master_errors *errors;    /* /errors: allocated when HTTP starts, freed by master_errors_free */
    master_console_state console;
    struct devwatch *watch;   /* `routemq dev` file watching; NULL otherwise */
    int64_t watch_due_ns;     /* reload when files stop changing, 0: none due */
    master_notify_state notify;
    struct master_presence *presence;  /* master_presence.c; NULL: none */
    master_adopt_state adopt;          /* master_adopt.c */
    int workers_started;     /* the start waits for the presence records (identity check) */
    int stop_sessions;       /* `routemq stop --keep-sessions` (1) / `--end-sessions` (2); 0: ROUTEMQ_STOP_SESSIONS */
    uint64_t kept_at_stop;   /* messages workers left kept when the instance stopped (routemq_kept_at_stop_total) */
} master;

/* master.c */
/* Runs the master until it is stopped; returns the exit code (0, or 2 after a broker refusal). */
int master_run(master_params *p);
/* Starts the graceful stop (idempotent); code raises the exit code. */
void master_begin_stop(master *m, int code);
/* SIGKILLs every live worker (a second SIGINT, SIGQUIT). */
void master_kill_all(master *m);
/* Sends sig to slot i's worker and records why; 0 ok, -1 when it has no process. */
int master_signal_slot(master *m, int i, int sig, stop_cause why);

/* master_spawn.c */
/* Forks a new generation into slot i; 0 ok, -1 (logged) when fork failed. */
int master_spawn(master *m, int i);
/* Forks an adoption worker for another instance's client id (outside the slots); its pid or -1 (logged). */
pid_t master_spawn_adopter(master *m, int slot, const char *client_id, char *const *routes, int nroutes, shm_slot *sh);
/* master_spawn, or a retry in a second when fork failed. */
void master_start_slot(master *m, int i);

/* master_reap.c */
/* Reaps every exited child and decides each slot's restart. */
void master_reap(master *m);
/* Starts the slots whose delayed restart is due. */
void master_restart_due(master *m, int64_t now);
/* The earliest pending restart, or INT64_MAX. */
int64_t master_next_restart(const master *m);
/* The metric label of a restart reason (master_policy.c). */
const char *master_restart_reason_name(restart_reason r);

/* master_watchdog.c */
/* Kills hung workers (handler timeout, heartbeat, startup) and those past their stop deadline. */
void master_watchdog(master *m, int64_t now);
/* The same checks for one process outside the slots (an adoption worker), named who in the log. */
void master_watchdog_process(master *m, master_slot *s, shm_slot *sh, const char *who, int64_t now);

/* master_app.c */
/* Loads the application in a fresh Lua state; 0 ok, -1 with "file:line: reason" in err. */
int master_load_app(const luavm_paths *paths, const config *cfg, app_def *out, char *err, size_t errlen);
/* Wraps a route table (taken over) with one reference; NULL when out of memory (the table is freed). */
master_app *master_app_new(app_def *def, uint32_t generation);
/* Takes one more reference. */
master_app *master_app_ref(master_app *a);
/* Drops one reference; frees the table with the last one. NULL is fine. */
void master_app_unref(master_app *a);

/* master_reload.c */
/* SIGHUP: reloads now, or after the reload in progress. */
void master_reload_request(master *m);
/* Moves the slot-by-slot replacement on; never blocks. */
void master_reload_tick(master *m, int64_t now);
/* 1 while a reload replaces workers. */
int master_reloading(const master *m);
/* Forgets the reload in progress (the master is stopping). */
void master_reload_abort(master *m);

/* master_control.c */
/* Takes the listening control socket into the loop; 0 ok, -1 (logged). */
int master_control_open(master *m, int listen_fd);
/* An epoll event on the control socket (kind MEV_CONTROL_*). */
void master_control_event(master *m, int kind, uint32_t index, uint32_t events);
/* Drops connections past their deadline. */
void master_control_tick(master *m, int64_t now);
/* Answers the `routemq reload` clients waiting for reloads up to seq. */
void master_control_reload_done(master *m, uint64_t seq, int ok, const char *msg);
/* The master is exiting: tells the `routemq stop` clients and closes every connection. */
void master_control_close(master *m);

/* master_status.c */
/* `routemq status --json` and /status. */
void master_status_json(const master *m, strbuf *out);
/* `routemq status`: a table for people. */
void master_status_table(const master *m, strbuf *out);
/* 1 when every slot is connected and subscribed (/ready); else 0 with the reason in why. */
int master_is_ready(const master *m, char *why, size_t n);
/* Name of a shm slot state. */
const char *master_slot_state_name(int state);

/* master_metrics.c */
/* /metrics: Prometheus text format 0.0.4. */
void master_metrics(const master *m, strbuf *out);

/* master_http.c */
/* Starts the admin endpoint when ROUTEMQ_HTTP is set; 0 ok (or off), -1 (logged). */
int master_http_start(master *m);
/* Serves what is pending (the epoll fd is readable, or a timer tick). */
void master_http_run(master *m);
/* Milliseconds until libmicrohttpd needs master_http_run again; -1: no deadline. */
int64_t master_http_timeout_ms(master *m);
/* Stops the endpoint and frees m->http_state; fine when it never started. */
void master_http_stop(master *m);

/* master_notify.c (no-ops unless built with libsystemd) */
void master_notify_init(master *m);
/* READY=1 once every slot is ready after the start; WATCHDOG=1 when due. */
void master_notify_tick(master *m, int64_t now);
/* Nanoseconds until the next WATCHDOG=1, or INT64_MAX. */
int64_t master_notify_next_ns(const master *m, int64_t now);
void master_notify_reloading(master *m);
void master_notify_reloaded(master *m, const char *status);
void master_notify_stopping(master *m);

/* master_scale.c */
/* SIGTTIN (+1) / SIGTTOU (-1); deferred while a reload runs. */
void master_scale_by(master *m, int delta, const char *why);
/* Sets P to n (clamped to 1 .. nslots), starting or retiring slots. */
void master_scale_to(master *m, int n, const char *why);
/* Retires slot i for good: not restarted, its session ended (SIGUSR2). */
void master_retire_slot(master *m, int i);
/* Once a second: auto-scale and the memory backstop. */
void master_scale_tick(master *m, int64_t now);

#endif
