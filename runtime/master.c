/* The master's event loop: epoll over a signalfd, the control socket and the
 * admin HTTP endpoint, with a short timeout that drives the watchdog, delayed
 * restarts, reload steps and the stop deadline. All signals the master acts
 * on are blocked and read from the signalfd, so everything runs in the loop
 * and nothing happens inside a signal handler; the master has no thread, so
 * forking a worker never copies another thread's half-done state. */
#include "master.h"
#include "master_console.h"
#include "master_presence.h"
#include "devwatch.h"
#include "rundir.h"
#include "keep_file.h"
#include "cli.h"
#include "log.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#define TICK_MS 100          /* watchdog resolution */
#define TICK_RELOAD_MS 20    /* while a reload waits for a worker: keep it short */

static const int master_signals[] = { SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGTTIN, SIGTTOU, SIGQUIT, SIGUSR1 };

static int live_count(const master *m)
{
    int n = 0;
    for (int i = 0; i < m->nslots; i++) n += m->slots[i].pid > 0;
    return n + master_adopt_live(m);
}

int master_signal_slot(master *m, int i, int sig, stop_cause why)
{
    master_slot *s = &m->slots[i];
    if (s->pid <= 0) return -1;
    /* The worker's deadlines count from here, not from when it reads the
     * signal (a handler may hold its loop for a while). */
    if (why != MSTOP_NONE) atomic_store(&m->shm->slots[i].stop_signal_ns, shm_now_ns());
    if (kill(s->pid, sig) && errno != ESRCH) {
        log_error("worker %d (pid %d): kill(%s): %s", i, (int)s->pid, sigabbrev_np(sig), strerror(errno));
        return -1;
    }
    if (why != MSTOP_NONE) {
        s->stop = why;
        s->stop_deadline_ns = shm_now_ns() + (int64_t)(m->cfg->stop_timeout * NS_PER_S);
    }
    return 0;
}

void master_kill_all(master *m)
{
    for (int i = 0; i < m->nslots; i++) {
        master_slot *s = &m->slots[i];
        if (s->pid <= 0 || s->kill != KILL_NONE) continue;
        kill(s->pid, SIGKILL);
        s->kill = KILL_ALL;
    }
    master_adopt_kill_all(m);
    m->killed_all = 1;
}

/* ROUTEMQ_STOP_SESSIONS / `routemq stop --keep-sessions|--end-sessions`:
 * 1 when this stop should hand the sessions over, with the reason in why. */
static int master_stop_ends_sessions(master *m, char *why, size_t n)
{
    char who[600];
    if (m->stop_sessions == 1) { snprintf(why, n, "routemq stop --keep-sessions"); return 0; }
    if (m->stop_sessions == 2) { snprintf(why, n, "routemq stop --end-sessions"); return 1; }
    if (m->cfg->stop_sessions == STOP_SESSIONS_KEEP) { snprintf(why, n, "ROUTEMQ_STOP_SESSIONS=keep"); return 0; }
    if (m->cfg->stop_sessions == STOP_SESSIONS_END) { snprintf(why, n, "ROUTEMQ_STOP_SESSIONS=end"); return 1; }
    if (master_presence_peer_serves(m, who, sizeof who)) {
        snprintf(why, n, "ROUTEMQ_STOP_SESSIONS=auto: instance %s serves the same shared routes, it takes over "
                 "what is queued for this one", who);
        return 1;
    }
    snprintf(why, n, "ROUTEMQ_STOP_SESSIONS=auto: no other live instance serves the shared routes, "
             "a restart resumes them");
    return 0;
}

void master_begin_stop(master *m, int code)
{
    if (code > m->exit_code) m->exit_code = code;
    if (m->stopping) return;
    m->stopping = 1;
    m->stop_started_ns = shm_now_ns();
    master_notify_stopping(m);
    master_reload_abort(m);
    /* The orphans' records say lost again before ours says stopped (or is
     * cleared): the same connection keeps that order, so no other instance
     * sees us gone while a record still says adopted by us. */
    master_adopt_stop(m);
    int end = 0;
    if (m->workers_started) {
        char why[1024];
        end = master_stop_ends_sessions(m, why, sizeof why);
        log_info("stop: %s the sessions (%s)", end ? "ending" : "keeping", why);
        master_presence_set_stopping(m, !end);
    }
    int n = 0;
    for (int i = 0; i < m->nslots; i++) {
        master_slot *s = &m->slots[i];
        s->restart_at_ns = 0;
        /* No worker will follow: each handles what it took before leaving. */
        atomic_store(&m->shm->slots[i].stopping_for_good, 1);
        if (s->pid <= 0) continue;
        n++;
        /* A worker already told to stop (reload, retire, recycle) keeps going
         * as it was told, under the same stop deadline as the others. SIGUSR2
         * is the retire path: unsubscribe, handle the backlog, end the session. */
        if (s->stop == MSTOP_NONE) master_signal_slot(m, i, end ? SIGUSR2 : SIGTERM, MSTOP_SHUTDOWN);
    }
    log_info("stopping %d worker%s (WORKER_STOP_TIMEOUT %g s)", n, n == 1 ? "" : "s", m->cfg->stop_timeout);
}

static void on_signal(master *m, const struct signalfd_siginfo *si)
{
    switch (si->ssi_signo) {
    case SIGCHLD: master_reap(m); break;
    case SIGTERM: master_begin_stop(m, 0); break;
    case SIGINT:
        if (!m->stopping) { master_begin_stop(m, 0); break; }
        log_warn("second SIGINT: stopping at once");
        master_kill_all(m);
        break;
    case SIGQUIT:
        log_warn("SIGQUIT: stopping at once");
        master_begin_stop(m, 0);
        master_kill_all(m);
        break;
    case SIGHUP: master_reload_request(m); break;
    case SIGTTIN: master_scale_by(m, +1, "SIGTTIN"); break;
    case SIGTTOU: master_scale_by(m, -1, "SIGTTOU"); break;
    case SIGUSR1: log_info("SIGUSR1: logs go to stderr, nothing to reopen"); break;
    default: break;
    }
}

static void read_signals(master *m)
{
    struct signalfd_siginfo si;
    for (;;) {
        ssize_t n = read(m->sfd, &si, sizeof si);
        if (n == (ssize_t)sizeof si) { on_signal(m, &si); continue; }
        if (n < 0 && errno == EINTR) continue;
        break;  /* EAGAIN: drained */
    }
}

/* A keep left by an earlier run for a slot this one does not run is handled
 * only when that slot runs again: say so rather than leave it unnoticed. */
static void warn_unrun_keeps(master *m)
{
    for (int i = m->P; i < m->nslots; i++) {
        char path[4200];
        keep_map km;
        keep_file_path(path, sizeof path, m->cfg->run_dir, i, NULL);
        if (keep_file_map(&km, path)) continue;
        uint32_t n = keep_file_count(&km);
        keep_file_unmap(&km);
        if (n)
            log_warn("%s holds %u message%s kept by worker %d of an earlier run, and this start runs %d worker%s: they "
                     "are handled once slot %d runs again (routemq scale %d, or --workers %d)", path, n,
                     n == 1 ? "" : "s", i, m->P, m->P == 1 ? "" : "s", i, i + 1, i + 1);
    }
}

/* The workers start once the group's presence records are in: an identity
 * that is live elsewhere must not take over its sessions. */
static void start_workers(master *m, int64_t now)
{
    if (m->workers_started || m->stopping || !master_presence_settled(m, now)) return;
    char why[1600];
    if (master_presence_conflict(m, why, sizeof why)) {
        log_error("cannot start: %s", why);
        master_begin_stop(m, EXIT_USAGE);
        return;
    }
    m->workers_started = 1;
    master_presence_announce(m);
    warn_unrun_keeps(m);
    for (int i = 0; i < m->P; i++) {
        m->slots[i].active = 1;
        master_start_slot(m, i);
    }
}

/* Everything that depends on time rather than on an event. */
static void tick(master *m)
{
    int64_t now = shm_now_ns();
    start_workers(m, now);
    master_presence_tick(m, now);
    master_watchdog(m, now);
    if (!m->stopping) {
        master_restart_due(m, now);
        if (m->watch_due_ns && now >= m->watch_due_ns) {
            m->watch_due_ns = 0;
            log_info("routemq dev: application files changed; reloading");
            master_reload_request(m);
        }
        master_reload_tick(m, now);
    }
    if (now >= m->next_second_ns) {
        m->next_second_ns = now + NS_PER_S;
        if (!m->stopping) master_scale_tick(m, now);
        if (m->http) master_history_tick(m, now);
    }
    master_control_tick(m, now);
    if (m->http) master_errors_collect(m);  /* before a burst goes round the slots' small rings */
    master_http_run(m);  /* connection timeouts */
    master_notify_tick(m, now);
}

static int loop_timeout_ms(master *m)
{
    int64_t now = shm_now_ns();
    int64_t ms = master_reloading(m) ? TICK_RELOAD_MS : TICK_MS;
    int64_t next = master_next_restart(m), wd = master_notify_next_ns(m, now);
    if (wd < next) next = wd;
    if (m->watch_due_ns && m->watch_due_ns < next) next = m->watch_due_ns;
    if (next != INT64_MAX) {
        int64_t until = (next - now + NS_PER_MS - 1) / NS_PER_MS;
        if (until < ms) ms = until < 0 ? 0 : until;
    }
    int64_t http = master_http_timeout_ms(m);
    if (http >= 0 && http < ms) ms = http;
    return (int)ms;
}

static void on_event(master *m, const struct epoll_event *ev)
{
    int kind = (int)(ev->data.u64 >> 32);
    uint32_t index = (uint32_t)ev->data.u64;
    switch (kind) {
    case MEV_SIGNAL: read_signals(m); break;
    case MEV_CONTROL_LISTEN:
    case MEV_CONTROL_CONN: master_control_event(m, kind, index, ev->events); break;
    case MEV_HTTP: master_http_run(m); break;
    case MEV_PRESENCE: master_presence_event(m, ev->events); break;
    case MEV_WATCH:
        /* Editors save in bursts: reload once things are quiet for 200 ms. */
        if (devwatch_read(m->watch)) m->watch_due_ns = shm_now_ns() + 200 * NS_PER_MS;
        break;
    default: break;
    }
}

static int loop(master *m)
{
    struct epoll_event evs[16];
    while (!(m->stopping && live_count(m) == 0)) {
        int n = epoll_wait(m->epfd, evs, 16, loop_timeout_ms(m));
        if (n < 0 && errno != EINTR) {
            log_error("epoll_wait: %s", strerror(errno));
            return -1;
        }
        for (int i = 0; i < n; i++) on_event(m, &evs[i]);
        tick(m);
    }
    return 0;
}

static int setup_signals(master *m)
{
    sigemptyset(&m->sigmask);
    for (size_t i = 0; i < sizeof master_signals / sizeof *master_signals; i++)
        sigaddset(&m->sigmask, master_signals[i]);
    /* Blocked before the first fork; each child unblocks them (master_spawn.c). */
    if (sigprocmask(SIG_BLOCK, &m->sigmask, &m->oldmask)) return -1;
    /* A closed pipe or socket must give EPIPE, never kill the master. */
    signal(SIGPIPE, SIG_IGN);
    m->sfd = signalfd(-1, &m->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (m->sfd < 0) return -1;
    m->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (m->epfd < 0) return -1;
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = MEV(MEV_SIGNAL, 0) };
    return epoll_ctl(m->epfd, EPOLL_CTL_ADD, m->sfd, &ev);
}

static int setup(master *m, master_params *p)
{
    memset(m, 0, sizeof *m);
    m->cfg = p->cfg;
    m->paths = p->paths;
    m->nslots = p->nslots;
    m->P = p->workers;
    rundir_write_workers(m->cfg->run_dir, m->P);
    m->override = p->override;
    m->base_override = p->base_override;
    m->restart_max_delay_ns = p->restart_max_delay_ns;
    m->pid = getpid();
    m->started_ns = shm_now_ns();
    m->epfd = m->sfd = m->http_epfd = -1;
    m->app_generation = 1;
    m->app = master_app_new(&p->app, m->app_generation);
    m->slots = calloc((size_t)m->nslots, sizeof *m->slots);
    m->shm = shm_create(m->nslots);
    if (!m->app || !m->slots || !m->shm) {
        log_error("cannot start: out of memory (%d slots)", m->nslots);
        return -1;
    }
    if (setup_signals(m)) {
        log_error("cannot set up signals: %s", strerror(errno));
        return -1;
    }
    /* Before the first fork: a port that cannot be bound stops the start. */
    if (master_control_open(m, p->control_fd) || master_http_start(m) || master_presence_start(m)) return -1;
    master_notify_init(m);
    if (p->dev_watch && (m->watch = devwatch_open(m->cfg->app_dir))) {
        struct epoll_event ev = { .events = EPOLLIN, .data.u64 = MEV(MEV_WATCH, 0) };
        if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, devwatch_fd(m->watch), &ev)) {
            devwatch_close(m->watch);
            m->watch = NULL;
        } else {
            log_info("routemq dev: reloading when files under %s/app or .env change", m->cfg->app_dir);
        }
    }
    return 0;
}

/* Kills and reaps whatever is still running, then releases every resource.
 * After a clean stop there is nothing left to kill. */
static void teardown(master *m)
{
    for (int i = 0; m->slots && i < m->nslots; i++) {
        master_slot *s = &m->slots[i];
        if (s->pid > 0) {
            kill(s->pid, SIGKILL);
            while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR) {}
            s->pid = 0;
        }
        master_app_unref(s->app);
        s->app = NULL;
    }
    master_adopt_teardown(m);
    /* Workers are gone: a waiting `routemq stop` may return now. */
    master_control_close(m);
    master_http_stop(m);
    master_history_free(m);
    master_errors_free(m);
    master_presence_stop(m);
    devwatch_close(m->watch);
    m->watch = NULL;
    master_app_unref(m->app);
    m->app = NULL;
    free(m->slots);
    m->slots = NULL;
    shm_destroy(m->shm);
    m->shm = NULL;
    if (m->epfd >= 0) close(m->epfd);
    if (m->sfd >= 0) close(m->sfd);
    m->epfd = m->sfd = -1;
    sigprocmask(SIG_SETMASK, &m->oldmask, NULL);
}

int master_run(master_params *p)
{
    master m;
    if (setup(&m, p)) {
        teardown(&m);
        return EXIT_USAGE;
    }
    log_info("master %d: %d worker%s for %s, broker %s:%d", (int)m.pid, m.P, m.P == 1 ? "" : "s",
             m.cfg->app_dir, m.cfg->broker, m.cfg->port);
    app_note_protocol(&m.app->def, m.cfg->protocol);
    start_workers(&m, shm_now_ns());
    m.next_second_ns = shm_now_ns() + NS_PER_S;
    int rc = loop(&m);
    if (rc == 0)
        log_info("stopped in %lld ms", (long long)((shm_now_ns() - m.stop_started_ns) / NS_PER_MS));
    int code = rc ? EXIT_USAGE : m.exit_code;
    teardown(&m);
    return code;
}
