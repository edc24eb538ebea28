/* systemd Type=notify: READY=1 once every slot is connected and subscribed,
 * RELOADING=1 then READY=1 around a reload, STOPPING=1 when stopping, and
 * WATCHDOG=1 every WatchdogSec/2 from the master's loop (so a wedged loop
 * is what systemd's watchdog catches). The protocol is one datagram to
 * $NOTIFY_SOCKET, written here rather than linking libsystemd (which would
 * map a dozen libraries into every worker). Built with -DROUTEMQ_SYSTEMD=OFF,
 * or without NOTIFY_SOCKET at run time, all of it does nothing. */
#include "master.h"
#include "log.h"

#ifdef ROUTEMQ_HAVE_SYSTEMD
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Sends msg to $NOTIFY_SOCKET (a path, or '@' for the abstract namespace);
 * 1 sent, 0 no socket, negative errno on failure. */
static int notify_send(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path) return 0;
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    size_t n = strlen(path);
    if (n >= sizeof a.sun_path) return -EINVAL;
    memcpy(a.sun_path, path, n);
    if (a.sun_path[0] == '@') a.sun_path[0] = 0;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    /* Never wait for the receiver: a notify socket whose queue is full
     * (10 datagrams by default) would freeze the master's loop. */
    ssize_t w = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&a,
                       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
    int err = errno;
    close(fd);
    return w < 0 ? -err : 1;
}

/* WatchdogSec of the unit in microseconds, 0 when off or meant for another pid. */
static uint64_t watchdog_usec(pid_t self)
{
    const char *us = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    if (!us || !*us) return 0;
    if (pid && *pid && strtol(pid, NULL, 10) != (long)self) return 0;
    return strtoull(us, NULL, 10);
}

void master_notify_init(master *m)
{
    const char *sock = getenv("NOTIFY_SOCKET");
    uint64_t usec = watchdog_usec(m->pid);
    m->notify.enabled = sock && *sock;
    if (m->notify.enabled && usec > 0) {
        m->notify.watchdog_interval_ns = (int64_t)(usec * 1000 / 2);
        m->notify.watchdog_next_ns = shm_now_ns();
        log_info("systemd watchdog: WATCHDOG=1 every %lld ms",
                 (long long)(m->notify.watchdog_interval_ns / NS_PER_MS));
    }
}

static void notify(master *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void notify(master *m, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int rc = notify_send(msg);
    if (rc < 0) log_debug("systemd notify: %s", strerror(-rc));
}

void master_notify_tick(master *m, int64_t now)
{
    if (!m->notify.enabled) return;
    if (!m->notify.ready_sent && !m->stopping) {
        char why[128];
        if (master_is_ready(m, why, sizeof why)) {
            m->notify.ready_sent = 1;
            notify(m, "READY=1\nSTATUS=%s\nMAINPID=%d", why, (int)m->pid);
        }
    }
    if (m->notify.watchdog_interval_ns && now >= m->notify.watchdog_next_ns) {
        m->notify.watchdog_next_ns = now + m->notify.watchdog_interval_ns;
        notify(m, "WATCHDOG=1");
    }
}

int64_t master_notify_next_ns(const master *m, int64_t now)
{
    (void)now;
    return m->notify.watchdog_interval_ns ? m->notify.watchdog_next_ns : INT64_MAX;
}

void master_notify_reloading(master *m)
{
    if (!m->notify.enabled) return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  /* MONOTONIC_USEC: Type=notify-reload wants it */
    notify(m, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
         (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
}

void master_notify_reloaded(master *m, const char *status)
{
    if (!m->notify.enabled) return;
    m->notify.ready_sent = 1;
    notify(m, "READY=1\nSTATUS=%s", status);
}

void master_notify_stopping(master *m)
{
    if (m->notify.enabled) notify(m, "STOPPING=1\nSTATUS=stopping");
}

#else

void master_notify_init(master *m) { (void)m; }
void master_notify_tick(master *m, int64_t now) { (void)m; (void)now; }
int64_t master_notify_next_ns(const master *m, int64_t now) { (void)m; (void)now; return INT64_MAX; }
void master_notify_reloading(master *m) { (void)m; }
void master_notify_reloaded(master *m, const char *status) { (void)m; (void)status; }
void master_notify_stopping(master *m) { (void)m; }

#endif
