/* Forking a worker into a slot. The parent prepares the slot's shared state
 * before the fork (so the worker never sees the previous process's values);
 * the child sheds what belongs to the master and runs worker_main. */
#include "master.h"
#include "proctitle.h"
#include "log.h"
#include "worker.h"

#include <bsd/unistd.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define SPAWN_RETRY_NS NS_PER_S  /* after fork failed */

/* A new worker's slot: its generation and clocks, and the per-process
 * fields cleared (shm_slot_reset); counters and the kept records carry over
 * (the replacement replays what was in flight). */
static void reset_shm_slot(shm_slot *sh, uint32_t gen, int64_t now)
{
    atomic_store(&sh->generation, gen);
    atomic_store(&sh->started_ns, now);
    atomic_store(&sh->heartbeat_ns, now);
    shm_slot_reset(sh, SLOT_STARTING);
}

/* Default dispositions for everything the worker may want to handle itself;
 * SIGPIPE stays ignored so a closed socket or stderr pipe gives EPIPE. */
static void reset_signal_handlers(void)
{
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        signal(sig, sig == SIGPIPE ? SIG_IGN : SIG_DFL);  /* fails harmlessly on reserved ones */
    }
}

/* The master's epoll, signalfd and whatever later joins them (sockets) are
 * not the worker's business; stdin/stdout/stderr stay. */
static void close_master_fds(void)
{
    if (close_range(3, ~0U, 0) == 0) return;
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = 3; fd < (max > 0 ? max : 1024); fd++) close((int)fd);
}

/* What every child of the master does first, worker or adoption worker. */
static void child_setup(master *m)
{
    /* Die with the master; if it already died between fork and prctl, the
     * parent is no longer the master and nobody would ever stop us. */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) || getppid() != m->pid) _exit(WORKER_EXIT_OK);
    reset_signal_handlers();
    close_master_fds();
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* This generation's code, read by the master when it loaded it: the
     * worker loads from this copy of the master's memory, never from disk. */
    app_snapshot_use(m->app ? m->app->def.snap : NULL);
}

static _Noreturn void child_main(master *m, int i, uint32_t gen)
{
    log_set_process(i);
    child_setup(m);
    proctitle_set("routemq: worker %d gen %u", i, gen);
    worker_args a = {
        .cfg = m->cfg,
        .slot = i,
        .generation = gen,
        .shm = &m->shm->slots[i],
        .workers_override = m->override,
        .master_pid = m->pid,
    };
    _exit(worker_main(&a));
}

int master_spawn(master *m, int i)
{
    master_slot *s = &m->slots[i];
    shm_slot *sh = &m->shm->slots[i];
    int64_t now = shm_now_ns();
    uint32_t gen = s->generation + 1;
    reset_shm_slot(sh, gen, now);
    fflush(NULL);  /* nothing buffered may be written twice */
    pid_t pid = fork();
    if (pid < 0) {
        log_error("worker %d: fork: %s", i, strerror(errno));
        atomic_store(&sh->state, SLOT_EMPTY);
        return -1;
    }
    if (pid == 0) child_main(m, i, gen);
    atomic_store(&sh->pid, pid);
    s->pid = pid;
    s->generation = gen;
    s->started_ns = now;
    s->restart_at_ns = 0;
    s->kill = KILL_NONE;
    s->kill_detail[0] = 0;
    s->stop = MSTOP_NONE;
    s->stop_deadline_ns = 0;
    s->busy_seen_ns = 0;
    s->busy_valid = 0;
    master_app_unref(s->app);
    s->app = master_app_ref(m->app);
    log_info("worker %d gen %u started (pid %d)", i, gen, (int)pid);
    return 0;
}

void master_start_slot(master *m, int i)
{
    if (master_spawn(m, i)) m->slots[i].restart_at_ns = shm_now_ns() + SPAWN_RETRY_NS;
}

pid_t master_spawn_adopter(master *m, int slot, const char *client_id, char *const *routes, int nroutes, shm_slot *sh)
{
    reset_shm_slot(sh, 1, shm_now_ns());
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        log_error("adoption of %s: fork: %s", client_id, strerror(errno));
        return -1;
    }
    if (pid > 0) return pid;
    log_set_process(slot);
    char label[128];
    snprintf(label, sizeof label, "adopt %s", client_id);
    log_set_label(label);
    child_setup(m);
    proctitle_set("routemq: adopt %s", client_id);
    worker_args a = {
        .cfg = m->cfg,
        .slot = slot,
        .generation = 1,
        .shm = sh,
        .workers_override = m->override,
        .master_pid = m->pid,
        .adopt_client_id = client_id,
        .adopt_routes = routes,
        .adopt_nroutes = nroutes,
    };
    _exit(worker_main(&a));
}
