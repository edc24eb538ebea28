/* The worker process: set-up, its one event loop (epoll over the MQTT socket
 * and a signalfd), heartbeat, recycling and stopping. */
#include "worker_internal.h"
#include "log.h"
#include "luavm.h"
#include "proc_statm.h"
#include "mqtt_client.h"
#include "mqtt_readbuf.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define READ_BUDGET 256          /* packets read before looking at signals and timers again */
#define READ_BUDGET_NS 20000000  /* ... or this much time, when handlers are slow */

static int setup_signals(worker *w)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGQUIT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTTIN);
    sigaddset(&set, SIGTTOU);
    if (sigprocmask(SIG_BLOCK, &set, NULL)) return -1;
    signal(SIGPIPE, SIG_IGN);
    w->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (w->sigfd < 0) return -1;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0) return -1;
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = w->sigfd };
    return epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->sigfd, &ev);
}

/* Starts a graceful stop: no new handler starts (but when retiring, or when
 * the whole instance stops), the one in progress finishes, what handlers
 * published is written and acknowledged, then the DISCONNECT goes out
 * (stop_when_flushed) and the loop ends once it is written. */
void worker_begin_stop(worker *w, enum stop_kind kind)
{
    if (w->stop.kind) {
        if (kind == STOP_RETIRE && w->stop.kind != STOP_RETIRE && !w->stop.disconnect_sent) {
            w->stop.kind = STOP_RETIRE;
            w->stop.drain_since_ns = w->last_msg_ns = shm_now_ns();
            if (w->conn.connected) worker_mqtt_unsubscribe_all(w);
        }
        return;
    }
    w->stop.kind = kind;
    w->stop.since_ns = shm_now_ns();
    /* The master's WORKER_STOP_TIMEOUT counts from its signal. */
    int64_t signalled = atomic_load(&w->shm->stop_signal_ns);
    if (signalled && signalled < w->stop.since_ns) w->stop.since_ns = signalled;
    worker_jobs(w, 0);  /* no timer run or health check starts any more */
    atomic_store(&w->shm->state, SLOT_DRAINING);
    if (kind == STOP_RECYCLE) log_info("recycling after %llu messages", (unsigned long long)w->handled);
    else log_debug("stopping%s", kind == STOP_RETIRE ? " (slot retired)" : "");
    if (kind == STOP_RETIRE) {
        /* Ending the session now would drop what the broker queued for this
         * member of the share group: unsubscribe first, handle that backlog,
         * and disconnect once the broker has stopped sending
         * (stop_when_flushed); not connected: once connected again. */
        w->stop.drain_since_ns = w->last_msg_ns = shm_now_ns();
        if (w->conn.connected) worker_mqtt_unsubscribe_all(w);
    }
}

/* Fallback when the drain marker does not come back (a broker ACL that
 * refuses $routemq/drain/#): no message for this long after the UNSUBACKs. */
#define DRAIN_FALLBACK_QUIET_NS 2000000000LL

/* Retiring: the broker has stopped sending us messages (worker_mqtt.c). */
static int drained(worker *w, int64_t now)
{
    if (w->stop.drained) return 1;
    if (!w->stop.unsubacked_ns || w->conn.unsubs_pending) return 0;
    int64_t since = w->stop.unsubacked_ns > w->last_msg_ns ? w->stop.unsubacked_ns : w->last_msg_ns;
    if (now - since < DRAIN_FALLBACK_QUIET_NS || worker_queue_len(w) || atomic_load(&w->shm->in_progress)) return 0;
    log_warn("the drain marker on %s did not come back (does the broker's ACL allow this client to publish and "
             "subscribe to it?); nothing arrived for %.0f s since the UNSUBACK, so the backlog is taken as done",
             w->stop.drain_topic, DRAIN_FALLBACK_QUIET_NS / 1e9);
    w->stop.drained = 1;
    return 1;
}

/* Nothing left to do before the DISCONNECT: no handler running, every
 * publish acknowledged, and nothing queued that this worker must handle. */
static int flushed(worker *w, int64_t now)
{
    if (atomic_load(&w->shm->in_progress) || w->out.count) return 0;
    if (worker_queue_len(w) && worker_can_start(w)) return 0;
    if (w->stop.kind == STOP_RETIRE && w->stop.drain_since_ns) return drained(w, now);
    return 1;
}

/* Past this share of WORKER_STOP_TIMEOUT the worker leaves with what is
 * left, before the master's kill. */
#define STOP_FLUSH_SHARE 0.8

static void give_up(worker *w, int64_t now)
{
    int queued = worker_queue_len(w);
    uint32_t unacked = worker_out_abandon(w);
    w->stop.gave_up = 1;
    if (w->stop.kind == STOP_RETIRE && !w->stop.drained)
        log_warn("stopping after %.1f s (WORKER_STOP_TIMEOUT %g s) with the broker still sending: the session of %s "
                 "is kept, with what is queued in it, for the next start or another instance",
                 (now - w->stop.since_ns) / 1e9, w->cfg->stop_timeout, w->conn.client_id);
    if (!unacked && !queued) return;
    /* Nothing is dropped: the messages stay in the slot's keep file, for the
     * slot's next worker or the next start on this run directory. */
    log_warn("stopping after %.1f s (WORKER_STOP_TIMEOUT %g s) with %u publish%s not acknowledged and %d message%s "
             "not handled; %u message%s stay kept for the next worker of the slot (or the next start)",
             (now - w->stop.since_ns) / 1e9, w->cfg->stop_timeout, unacked, unacked == 1 ? "" : "es", queued,
             queued == 1 ? "" : "s", atomic_load(&w->shm->kept), atomic_load(&w->shm->kept) == 1 ? "" : "s");
}

static void stop_when_flushed(worker *w, int64_t now)
{
    if (!w->stop.kind || w->stop.disconnect_sent) return;
    /* A retirement while the instance runs (scale down, adoption) has no
     * deadline of its own: the whole backlog is the point, and the master
     * lets it run while it makes progress (master_watchdog.c). */
    int no_deadline = w->stop.kind == STOP_RETIRE &&
                      (w->args->adopt_client_id || !atomic_load(&w->shm->stopping_for_good));
    if (!w->conn.connected && !no_deadline) {
        /* Nothing can be flushed without the broker; the reconnect goes on
         * until the deadline when publishes wait. A retirement without a
         * deadline drains again after the reconnect; a handover leaves its
         * session kept (and adopted). */
        if (!w->out.count && !w->stop.gave_up) w->stop.gave_up = 1;
    }
    int late = now - w->stop.since_ns > (int64_t)(w->cfg->stop_timeout * STOP_FLUSH_SHARE * 1e9);
    if (late && !no_deadline && !w->stop.gave_up) give_up(w, now);
    if (!w->conn.connected) return;
    if ((flushed(w, now) || w->stop.gave_up) && !atomic_load(&w->shm->in_progress)) worker_mqtt_disconnect(w);
}

/* Reading stops when the keep has no record or no room for the largest
 * message left: nothing is taken (and acknowledged by libmosquitto) that
 * cannot be kept. The acknowledgements of our publishes come on the
 * publishing connection (worker_pubconn.c), so they still arrive and free
 * the keep. Reading also stops while stopping (what the broker queued stays
 * in the session for the next worker), except when retiring: the share the
 * broker still sends is handled. */
static int wants_read(worker *w)
{
    if (!worker_keep_has_room(w)) return 0;
    if (w->stop.gave_up) return 0;  /* past the deadline: finish what was taken, take nothing more */
    /* Handlers wait for the publishing connection: taking messages before
     * it is up would only fill the keep. (Before the CONNACK, reading is
     * what brings it.) */
    if (w->conn.connected && !worker_pubconn_connected(w)) return 0;
    /* The CONNACK, and the end of a connection the broker closed, are read
     * whatever the handlers do: else a worker at WORKER_CONCURRENCY notices
     * a broker restart only at its next keepalive. */
    if (!w->stop.kind && (!w->conn.connected || w->conn.peer_closed)) return 1;
    /* WORKER_CONCURRENCY handlers in progress and as many waiting: leave the
     * rest with the broker until one finishes; but not over the outgoing
     * bound, where handlers wait for the acknowledgements that come on this
     * connection. A retiring worker too: what it has not taken stays in the
     * session, for its successor if it cannot finish. */
    if ((!w->stop.kind || w->stop.kind == STOP_RETIRE) &&
        atomic_load_explicit(&w->shm->in_progress, memory_order_relaxed) >= (uint32_t)w->cfg->concurrency &&
        worker_queue_len(w) >= w->cfg->concurrency && !w->out.over)
        return 0;
    return !w->stop.kind || w->stop.kind == STOP_RETIRE;
}

static void on_signals(worker *w)
{
    struct signalfd_siginfo si;
    while (read(w->sigfd, &si, sizeof si) == sizeof si) {
        switch (si.ssi_signo) {
        case SIGTERM:
        case SIGINT:
            if (getppid() != w->args->master_pid && !w->stop.master_gone) {
                /* The master died: leave within a second whatever a handler does. */
                w->stop.master_gone = 1;
                alarm(1);
            }
            if (w->stop.kind == STOP_RETIRE && !w->stop.disconnect_sent &&
                (w->args->adopt_client_id || !atomic_load(&w->shm->stopping_for_good))) {
                /* An adoption stops with its instance (or the orphan came
                 * back), a retiring slot was scaled up again: leave the
                 * session, and what is queued in it, to the next worker. */
                if (w->args->adopt_client_id)
                    log_info("leaving the adoption of %s: its session stays for another instance", w->conn.client_id);
                else
                    log_info("no longer retiring: the session stays for the slot's next worker");
                w->stop.kind = STOP_KEEP;
                int64_t signalled = atomic_load(&w->shm->stop_signal_ns);
                w->stop.since_ns = signalled ? signalled : shm_now_ns();
            }
            worker_begin_stop(w, STOP_KEEP);
            break;
        case SIGUSR2: worker_begin_stop(w, STOP_RETIRE); break;
        case SIGQUIT: exit(WORKER_EXIT_OK);
        default: break;  /* SIGHUP and friends belong to the master */
        }
    }
}

/* Keeps the epoll registration in step with libmosquitto's socket and wishes. */
static void update_socket(worker *w)
{
    int fd = w->conn.mosq ? mosquitto_socket(w->conn.mosq) : -1;
    if (fd != w->conn.sock) {
        w->conn.peer_closed = 0;
        worker_coalesce_reset(&w->conn.coalesce);
    }
    mqtt_readbuf_attach(fd);
    int events = (wants_read(w) ? EPOLLIN : 0) | (fd >= 0 && mosquitto_want_write(w->conn.mosq) ? EPOLLOUT : 0) |
                 (fd >= 0 && !w->conn.peer_closed ? EPOLLRDHUP : 0);
    mqtt_client_sync_epoll(w->epfd, fd, (uint32_t)events, (epoll_data_t){ .fd = fd }, &w->conn.sock,
                           &w->conn.sock_events);
}

/* Writes what libmosquitto queued. Nagle stays on, so a stream of PUBACKs
 * costs few segments; but a handler's publish queued behind a PUBACK would
 * then wait for the broker's ACK of the PUBACK (its delayed ACK, up to
 * 40 ms), so when a handler published, the socket is corked for the writes
 * and everything leaves at once. */
static void flush_writes(worker *w)
{
    int fd = mosquitto_socket(w->conn.mosq);
    if (fd < 0 || !mosquitto_want_write(w->conn.mosq)) return;
    int cork = w->conn.published;
    w->conn.published = 0;
    if (cork) setsockopt(fd, IPPROTO_TCP, TCP_CORK, &(int){ 1 }, sizeof(int));
    mosquitto_loop_write(w->conn.mosq, 1);
    if (cork && mosquitto_socket(w->conn.mosq) == fd) setsockopt(fd, IPPROTO_TCP, TCP_CORK, &(int){ 0 }, sizeof(int));
}

/* Reads and handles packets until nothing is left to read (or a budget is
 * spent, so signals and timers get their turn). What the handlers queued
 * (PUBACKs, publishes) is written after each batch that one read() brought
 * (mqtt_readbuf.h): acknowledgements leave once the message is kept, and a
 * resumed session's backlog cannot starve our SUBSCRIBEs. */
static void read_socket(worker *w)
{
    int64_t until = shm_now_ns() + READ_BUDGET_NS;
    for (int i = 0; i < READ_BUDGET; i++) {
        int fd = mosquitto_socket(w->conn.mosq);
        if (fd < 0) break;
        /* libmosquitto reads one packet and returns; a read that found
         * nothing (or part of a packet) leaves EAGAIN in errno (the message
         * callback clears it). Asking the socket ourselves (a peek) cost a
         * system call per message; this costs one read per batch, and also
         * drains what OpenSSL decrypted already (which raises no EPOLLIN). */
        errno = 0;
        int rc = mosquitto_loop_read(w->conn.mosq, 1);
        int drained = errno == EAGAIN || errno == EWOULDBLOCK;
        /* The PUBACKs of the packets one read() brought leave together, at
         * most 16 packets after their message was kept (and at the latest
         * when the loop flushes after this). */
        if (!mqtt_readbuf_pending(fd) || (i & 15) == 15) flush_writes(w);
        worker_pubconn_service(w);
        if (rc != MOSQ_ERR_SUCCESS) break;
        if (w->stop.kind && w->stop.disconnect_sent) break;
        if (!wants_read(w)) break;
        if (drained) break;
        if ((i & 15) == 15 && shm_now_ns() > until) break;
    }
}

/* read_socket, then raises or lowers the socket's SO_RCVLOWAT by what the
 * read brought (worker_coalesce.h). by_timer: the coalescing deadline
 * passed, the socket did not say it was ready. */
static void read_coalesced(worker *w, int by_timer)
{
    int fd = mosquitto_socket(w->conn.mosq);
    unsigned long long before = mqtt_readbuf_socket_bytes(fd);
    read_socket(w);
    if (fd < 0 || mosquitto_socket(w->conn.mosq) != fd) return;
    size_t bytes = (size_t)(mqtt_readbuf_socket_bytes(fd) - before);
    int64_t now = shm_now_ns();
    if (bytes) w->conn.last_in_ns = now;
    enum coalesce_action a = worker_coalesce_after_read(&w->conn.coalesce, bytes, now, by_timer);
    if (a == COALESCE_KEEP) return;
    int mark = a == COALESCE_RAISE ? COALESCE_BYTES : 1;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &mark, sizeof mark)) worker_coalesce_refused(&w->conn.coalesce);
}

static void sample_memory(worker *w)
{
    uint64_t kb;
    if (proc_rss_kb(0, &kb)) return;
    atomic_store(&w->shm->rss_kb, kb);
    if (w->cfg->max_memory_mb && kb / 1024 > (uint64_t)w->cfg->max_memory_mb && !w->stop.kind) {
        log_info("RSS %llu MB is above WORKER_MAX_MEMORY_MB=%ld", (unsigned long long)(kb / 1024),
                 w->cfg->max_memory_mb);
        worker_begin_stop(w, STOP_RECYCLE);
    }
}

static void periodic(worker *w, int64_t now)
{
    if (now < w->next_misc_ns) return;
    w->next_misc_ns = now + 1000000000LL;
    if (w->conn.mosq && mosquitto_socket(w->conn.mosq) >= 0) mosquitto_loop_misc(w->conn.mosq);
    sample_memory(w);
    if (!w->stop.master_gone && getppid() != w->args->master_pid) {
        w->stop.master_gone = 1;
        alarm(1);
        worker_begin_stop(w, STOP_KEEP);
    }
    worker_dlq_retry_due(w);
    worker_dlq_replay_tick(w, now);
    worker_errlog_flush(w, now);
}

static int timeout_ms(worker *w, int64_t now)
{
    int64_t next = w->next_misc_ns;
    if (w->stop.kind && !w->stop.disconnect_sent && now + 50000000LL < next) next = now + 50000000LL;
    if (w->conn.reconnect_pending && w->conn.next_connect_ns < next) next = w->conn.next_connect_ns;
    if (worker_connect_deadline(w) < next) next = worker_connect_deadline(w);
    if (worker_pubconn_deadline(w) < next) next = worker_pubconn_deadline(w);
    int64_t ms = (next - now) / 1000000;
    int64_t retry_ms = worker_retry_wait_ms(w);
    if (retry_ms >= 0 && retry_ms < ms && worker_can_start_over(w, 1)) ms = retry_ms;
    if (worker_queue_len(w) && worker_can_start(w)) ms = 0;  /* worker_pump left some for the next turn */
    if (mqtt_readbuf_pending(w->conn.sock) && wants_read(w)) ms = 0;  /* read, not yet handed over */
    int64_t coalesce_ns = worker_coalesce_deadline(&w->conn.coalesce);
    if (coalesce_ns != INT64_MAX && wants_read(w)) {
        /* Rounded up: a wait of 0 ms would spin until the deadline. */
        int64_t cms = coalesce_ns <= now ? 0 : (coalesce_ns - now + 999999) / 1000000;
        if (cms < ms) ms = cms;
    }
    int step_ms = worker_step_timeout_ms(w);
    w->lua.step_due_ns = step_ms >= 0 ? now + (int64_t)step_ms * 1000000 : INT64_MAX;
    if (step_ms >= 0 && step_ms < ms) ms = step_ms;
    /* Wake often enough that an idle loop's heartbeat never looks stale. */
    int64_t cap = (int64_t)(w->cfg->heartbeat_timeout * 1000 / 3);
    if (cap > 1000) cap = 1000;
    if (cap < 10) cap = 10;
    return ms < 0 ? 0 : ms > cap ? (int)cap : (int)ms;
}

static int run_loop(worker *w)
{
    struct epoll_event evs[4];
    w->out.waitable = 1;  /* acknowledgements are read from now on: a publish may wait for them */
    for (;;) {
        int64_t now = shm_now_ns();
        atomic_store_explicit(&w->shm->heartbeat_ns, now, memory_order_relaxed);
        stop_when_flushed(w, now);
        if (w->stop.kind && (w->stop.disconnect_sent || (!w->conn.connected && w->stop.gave_up))) {
            if ((!w->conn.mosq || mosquitto_socket(w->conn.mosq) < 0 || !mosquitto_want_write(w->conn.mosq)) &&
                worker_pubconn_idle(w))
                break;
        }
        worker_connect_tick(w, now);
        worker_pubconn_tick(w, now);
        if (w->conn.reconnect_pending && now >= w->conn.next_connect_ns && (!w->stop.kind || !w->stop.gave_up))
            worker_mqtt_connect(w);
        worker_retry_pump(w);
        worker_pump(w);
        if (worker_watch_controller(w)) return WORKER_EXIT_INIT;
        update_socket(w);
        worker_pubconn_update(w);
        int n = epoll_wait(w->epfd, evs, 4, timeout_ms(w, now));
        if (n < 0 && errno != EINTR) { log_error("epoll_wait: %s", strerror(errno)); return WORKER_EXIT_INIT; }
        int step = 0;
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd == w->sigfd) { on_signals(w); continue; }
            if (evs[i].data.fd == w->lua.cq_fd) { step = 1; continue; }
            if (worker_pubconn_event(w, evs[i].data.fd, evs[i].events)) continue;
            if (evs[i].data.fd != w->conn.sock || mosquitto_socket(w->conn.mosq) != w->conn.sock) continue;
            if (evs[i].events & EPOLLIN) w->conn.last_in_ns = now;
            if (evs[i].events & EPOLLOUT) flush_writes(w);
            if (evs[i].events & EPOLLRDHUP) w->conn.peer_closed = 1;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP) || (evs[i].events & EPOLLRDHUP && wants_read(w)))
                read_coalesced(w, 0);
        }
        /* Packets read into our buffer before read_socket stopped (budget,
         * a full keep) raise no EPOLLIN: they are taken here. */
        if (w->conn.mosq && mosquitto_socket(w->conn.mosq) == w->conn.sock &&
            mqtt_readbuf_pending(w->conn.sock) && wants_read(w))
            read_coalesced(w, 0);
        /* Below a raised SO_RCVLOWAT the socket says nothing: what came
         * within the wait is read now. */
        if (w->conn.mosq && mosquitto_socket(w->conn.mosq) == w->conn.sock && w->conn.sock >= 0 &&
            shm_now_ns() >= worker_coalesce_deadline(&w->conn.coalesce) && wants_read(w))
            read_coalesced(w, 1);
        /* Waiting handlers and timers whose socket or timer is ready (a
         * handler that starts waiting makes the controller's descriptor
         * readable, so it is stepped on the next turn). */
        if (step || shm_now_ns() >= w->lua.step_due_ns) worker_step(w);
        if (w->conn.mosq) flush_writes(w);
        worker_pubconn_flush(w);
        periodic(w, shm_now_ns());
    }
    switch (w->stop.kind) {
    case STOP_RECYCLE: return WORKER_EXIT_RECYCLE;
    case STOP_RETIRE:
        /* A retirement that could not end its session says so (its master
         * leaves it to the next start or to adoption). */
        if (!w->exit_code && !w->stop.session_ended && w->conn.persistent) return WORKER_EXIT_SESSION_KEPT;
        return w->exit_code;
    default:
        if (w->args->adopt_client_id && !w->exit_code) return WORKER_EXIT_SESSION_KEPT;
        return w->exit_code;
    }
}

static int load_app(worker *w)
{
    char err[4096], tb[8192];
    luavm_paths paths;
    if (luavm_find_paths(&paths, err, sizeof err) || !(w->lua.L = luavm_new(&paths, err, sizeof err))) {
        log_error("%s", err);
        return -1;
    }
    if (app_load(w->lua.L, w->cfg, &w->app, err, sizeof err, tb, sizeof tb)) {
        log_with(LOGL_ERROR, &(log_fields){ .traceback = tb[0] ? tb : NULL }, "cannot load the application: %s", err);
        return -1;
    }
    if (w->args->workers_override) app_override_workers(&w->app, w->args->workers_override);
    return 0;
}

int worker_main(const worker_args *a)
{
    worker w;
    memset(&w, 0, sizeof w);
    w.args = a;
    w.cfg = a->cfg;
    w.shm = a->shm;
    w.conn.sock = w.sigfd = w.epfd = -1;
    w.lua.call_ref = w.lua.envelope_ref = w.lua.empty_ref = LUA_NOREF;
    w.lua.step_ref = w.lua.timeout_ref = w.lua.init_ref = w.lua.start_jobs_ref = w.lua.stop_jobs_ref = LUA_NOREF;
    w.lua.new_thread_ref = w.lua.adopt_ref = w.lua.pollfd_ref = LUA_NOREF;
    w.lua.cq_fd = -1;
    /* The master cleared the slot before the fork (shm_slot_reset). */
    atomic_store(&w.shm->pid, getpid());
    atomic_store(&w.shm->heartbeat_ns, shm_now_ns());

    int rc = WORKER_EXIT_INIT;
    if (setup_signals(&w)) { log_error("cannot set up signals: %s", strerror(errno)); goto out; }
    if (load_app(&w)) { rc = WORKER_EXIT_APP; goto out; }
    if (worker_keep_setup(&w) || worker_retry_setup(&w) || worker_dispatch_setup(&w) || worker_out_setup(&w) ||
        worker_mqtt_setup(&w) || worker_pubconn_setup(&w))
        goto out;
    worker_replay_load(&w);
    worker_dlq_replay_start(&w);
    if (worker_run_init(&w)) { rc = WORKER_EXIT_APP; goto out; }
    worker_jobs(&w, 1);
    if (a->cfg->max_messages > 0) {
        srand((unsigned)getpid());
        w.recycle_after = (uint64_t)a->cfg->max_messages + (uint64_t)(rand() % (a->cfg->max_messages / 10 + 1));
    }
    atomic_store(&w.shm->state, SLOT_CONNECTING);
    worker_mqtt_connect(&w);
    rc = run_loop(&w);
out:
    atomic_store(&w.shm->connected, 0);
    worker_pubconn_free(&w);
    worker_mqtt_free(&w);
    worker_dlq_free(&w);
    worker_out_free(&w);
    worker_retry_free(&w);
    worker_keep_free(&w);
    free(w.props_buf);
    free(w.route_stat);
    if (w.lua.L) lua_close(w.lua.L);
    app_free(&w.app);
    if (w.trie) topic_trie_free(w.trie);
    if (w.sigfd >= 0) close(w.sigfd);
    if (w.epfd >= 0) close(w.epfd);
    return rc;
}

void worker_after_message(worker *w)
{
    w->handled++;
    if (w->recycle_after && w->handled >= w->recycle_after && !w->stop.kind) worker_begin_stop(w, STOP_RECYCLE);
}
