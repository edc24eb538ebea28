/* systemd Type=notify: READY=1 once every slot is connected and subscribed,
 * RELOADING=1 then READY=1 around a reload, STOPPING=1 when stopping, and
 * WATCHDOG=1 every WatchdogSec/2 from the master's loop (so a wedged loop
 * is what systemd's watchdog catches). Without libsystemd at build time, or
 * without NOTIFY_SOCKET at run time, all of it does nothing. */
#include "master.h"
#include "log.h"

#ifdef ROUTEMQ_HAVE_SYSTEMD
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

void master_notify_init(master *m)
{
    uint64_t usec = 0;
    const char *sock = getenv("NOTIFY_SOCKET");
    m->notify.enabled = sock && *sock;
    if (m->notify.enabled && sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        m->notify.watchdog_interval_ns = (int64_t)(usec * 1000 / 2);
        m->notify.watchdog_next_ns = shm_now_ns();
        log_info("systemd watchdog: WATCHDOG=1 every %lld ms",
                 (long long)(m->notify.watchdog_interval_ns / MASTER_NS_PER_MS));
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
    int rc = sd_notify(0, msg);
    if (rc < 0) log_debug("sd_notify: %s", strerror(-rc));
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
