/* The control socket: `routemq status|reload|stop|scale` send one request
 * line and read the answer. Every connection is non-blocking and bounded (a
 * request line of at most CONTROL_LINE_MAX bytes within REQUEST_NS, the
 * answer taken within WRITE_NS), so a client that sends garbage, floods or
 * goes silent costs a slot for a few seconds and never stalls the loop.
 *
 * Answer lines: ". text" is progress, then one final "ok[ text]" or
 * "error text"; for status the body follows "ok". `reload` and `stop` wait:
 * their connection stays open until the reload's outcome or the master's
 * exit. Only the master's own user (and root) may talk to it. */
#include "master_control.h"
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONTROL_MAX_CONNS 16
#define REQUEST_NS (2 * NS_PER_S)
#define WRITE_NS (10 * NS_PER_S)

struct master_control {
    int listen_fd;           /* rundir.c owns it */
    control_conn conns[CONTROL_MAX_CONNS];
};

static void conn_close(master *m, control_conn *c)
{
    if (c->fd < 0) return;
    epoll_ctl(m->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    sb_free(&c->out);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

static int pending(const control_conn *c) { return c->out_off < c->out.len; }

static void update_events(master *m, control_conn *c)
{
    uint32_t ev = (c->eof ? 0 : EPOLLIN) | (pending(c) ? EPOLLOUT : 0);
    if (ev == c->events) return;
    struct epoll_event e = { .events = ev, .data.u64 = MEV(MEV_CONTROL_CONN, c - m->control->conns) };
    if (epoll_ctl(m->epfd, EPOLL_CTL_MOD, c->fd, &e) == 0) c->events = ev;
}

/* Writes what it can; closes a finished connection; keeps the deadline
 * only while something is owed to the client. */
static void flush(master *m, control_conn *c)
{
    while (pending(c)) {
        ssize_t n = write(c->fd, c->out.p + c->out_off, c->out.len - c->out_off);
        if (n > 0) { c->out_off += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        conn_close(m, c);  /* EPIPE and friends: the client is gone */
        return;
    }
    if (c->out.oom) { conn_close(m, c); return; }
    if (!pending(c)) {
        sb_free(&c->out);
        c->out_off = 0;
        if (c->done && c->wait == WAIT_NONE) { conn_close(m, c); return; }
        if (c->have_request) c->deadline_ns = 0;
    } else if (!c->deadline_ns) {
        c->deadline_ns = shm_now_ns() + WRITE_NS;
    }
    update_events(m, c);
}

void control_reply(master *m, control_conn *c, int final, const char *fmt, ...)
{
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    sb_puts(&c->out, line);
    sb_puts(&c->out, "\n");
    if (final) c->done = 1;
    flush(m, c);
}

void control_reply_body(master *m, control_conn *c, const strbuf *body)
{
    sb_puts(&c->out, "ok\n");
    sb_put(&c->out, body->p ? body->p : "", body->len);
    c->done = 1;
    flush(m, c);
}

static void handle_request(master *m, control_conn *c, char *line)
{
    c->have_request = 1;
    c->deadline_ns = 0;  /* from now on: the answer's deadline, set by flush when one is owed */
    control_command(m, c, line);
}

/* Reads the request line; after it, input only tells whether the client is still there. */
static void on_readable(master *m, control_conn *c)
{
    for (;;) {
        char scratch[512];
        char *dst = c->have_request ? scratch : c->in + c->in_len;
        size_t room = c->have_request ? sizeof scratch : sizeof c->in - 1 - c->in_len;
        ssize_t n = read(c->fd, dst, room);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0 || (n == 0 && (c->have_request ? !pending(c) && c->wait == WAIT_NONE : c->in_len == 0))) {
            conn_close(m, c);
            return;
        }
        if (n == 0) {  /* shut down after a request without a newline, or while waiting */
            c->eof = 1;
            if (!c->have_request) { c->in[c->in_len] = 0; handle_request(m, c, c->in); }
            if (c->fd >= 0) update_events(m, c);
            return;
        }
        if (c->have_request) continue;
        c->in_len += (size_t)n;
        c->in[c->in_len] = 0;
        char *nl = memchr(c->in, '\n', c->in_len);
        if (nl) { *nl = 0; handle_request(m, c, c->in); return; }
        if (c->in_len >= sizeof c->in - 1) {
            c->have_request = 1;
            control_reply(m, c, 1, "error request too long (at most %d bytes)", CONTROL_LINE_MAX - 1);
            return;
        }
    }
}

/* Same user as the master, or root: the socket's mode says so too, this
 * holds even when the run directory was made more open than it should be. */
static int peer_allowed(int fd)
{
    struct ucred cr;
    socklen_t len = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len)) return 0;
    return cr.uid == 0 || cr.uid == geteuid();
}

static void accept_one(master *m, int fd)
{
    master_control *mc = m->control;
    static const char busy[] = "error busy: too many control connections\n";
    static const char denied[] = "error permission denied\n";
    control_conn *c = NULL;
    for (int i = 0; i < CONTROL_MAX_CONNS && !c; i++)
        if (mc->conns[i].fd < 0) c = &mc->conns[i];
    int allowed = peer_allowed(fd);
    if (!c || !allowed) {
        if (!allowed) log_warn("control socket: refused a connection from another user");
        ssize_t w = write(fd, allowed ? busy : denied, allowed ? sizeof busy - 1 : sizeof denied - 1);
        (void)w;  /* best effort: the client may not even read */
        close(fd);
        return;
    }
    c->fd = fd;
    c->deadline_ns = shm_now_ns() + REQUEST_NS;
    c->events = EPOLLIN;
    struct epoll_event e = { .events = EPOLLIN, .data.u64 = MEV(MEV_CONTROL_CONN, c - mc->conns) };
    if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, fd, &e)) {
        close(fd);
        c->fd = -1;
    }
}

static void accept_all(master *m)
{
    for (;;) {
        int fd = accept4(m->control->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) { accept_one(m, fd); continue; }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) log_warn("control socket: accept: %s", strerror(errno));
        return;
    }
}

int master_control_open(master *m, int listen_fd)
{
    master_control *mc = calloc(1, sizeof *mc);
    if (!mc) { log_error("cannot start: out of memory"); return -1; }
    mc->listen_fd = listen_fd;
    for (int i = 0; i < CONTROL_MAX_CONNS; i++) mc->conns[i].fd = -1;
    m->control = mc;
    if (listen_fd < 0) return 0;
    struct epoll_event e = { .events = EPOLLIN, .data.u64 = MEV(MEV_CONTROL_LISTEN, 0) };
    if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, listen_fd, &e)) {
        log_error("cannot watch the control socket: %s", strerror(errno));
        return -1;
    }
    return 0;
}

void master_control_event(master *m, int kind, uint32_t index, uint32_t events)
{
    if (!m->control) return;
    if (kind == MEV_CONTROL_LISTEN) { accept_all(m); return; }
    if (index >= CONTROL_MAX_CONNS || m->control->conns[index].fd < 0) return;
    control_conn *c = &m->control->conns[index];
    if (events & EPOLLERR) { conn_close(m, c); return; }
    if (events & (EPOLLIN | EPOLLHUP)) on_readable(m, c);
    if (c->fd >= 0 && (events & EPOLLOUT)) flush(m, c);
    if (c->fd >= 0 && (events & EPOLLHUP) && !(events & EPOLLIN)) conn_close(m, c);
}

void master_control_tick(master *m, int64_t now)
{
    if (!m->control) return;
    for (int i = 0; i < CONTROL_MAX_CONNS; i++) {
        control_conn *c = &m->control->conns[i];
        if (c->fd < 0 || !c->deadline_ns || now < c->deadline_ns) continue;
        log_debug("control socket: dropped a connection that %s in time",
                  c->have_request ? "did not take its answer" : "sent no request");
        conn_close(m, c);
    }
}

void master_control_reload_done(master *m, uint64_t seq, int ok, const char *msg)
{
    if (!m->control) return;
    for (int i = 0; i < CONTROL_MAX_CONNS; i++) {
        control_conn *c = &m->control->conns[i];
        if (c->fd < 0 || c->wait != WAIT_RELOAD || c->want_seq > seq) continue;
        c->wait = WAIT_NONE;
        control_reply(m, c, 1, "%s %s", ok ? "ok reloaded:" : "error", msg);
    }
}

void master_control_close(master *m)
{
    master_control *mc = m->control;
    if (!mc) return;
    for (int i = 0; i < CONTROL_MAX_CONNS; i++) {
        control_conn *c = &mc->conns[i];
        if (c->fd < 0) continue;
        /* Best effort and never blocking: the answers are a line each. */
        if (c->wait == WAIT_STOP) sb_printf(&c->out, "ok stopped (exit code %d)\n", m->exit_code);
        if (c->wait == WAIT_RELOAD) sb_puts(&c->out, "error the master stopped\n");
        c->wait = WAIT_NONE;
        c->done = 1;
        flush(m, c);
        conn_close(m, c);
    }
    if (mc->listen_fd >= 0) epoll_ctl(m->epfd, EPOLL_CTL_DEL, mc->listen_fd, NULL);
    free(mc);
    m->control = NULL;
}
