/* Connection attempts and outages, without ever stopping the worker's loop
 * (docs/deployment.md): a non-blocking connect bounded by MQTT_CONNECT_TIMEOUT, a watch
 * that notices a silent broker within 1.5 x MQTT_KEEPALIVE, a first
 * reconnect within 100 ms after a connection that worked, then backoff.
 *
 * libmosquitto 2.0.11's mosquitto_connect_bind_async() puts the socket in
 * non-blocking mode before connect() and queues the CONNECT packet, which our
 * loop writes once the socket is writable; a blocking connect would instead
 * wait for the kernel's SYN retries (about two minutes) while the heartbeat
 * goes stale. The name in MQTT_BROKER is still resolved with getaddrinfo()
 * inside that call: a numeric address (or a resolver that answers) keeps the
 * attempt instant (docs/configuration.md says so). */
#include "clock.h"
#include "worker_internal.h"
#include "log.h"
#include "worker_tls.h"
#include "backoff.h"
#include "mqtt_client.h"

#include <mqtt_protocol.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FAST_RETRY_MAX_NS (NS_PER_S / 10)     /* first reconnect after a working connection: 0-100 ms */
#define SHORT_CONNECTION_NS (5 * NS_PER_S)  /* a connection closed sooner did not really work */
#define ADOPT_RECONNECT_MIN_S 0.5           /* an adoption worker's first reconnect (worker_connect_lost) */

static const char *no_stop(const char *text);

/* Stopping, and not draining a retiring session (which reconnects to go on). */
static int stops_now(worker *w)
{
    return w->stop.kind != STOP_NONE && (w->stop.kind != STOP_RETIRE || w->stop.disconnect_sent || w->stop.gave_up);
}

static void schedule_in(worker *w, double seconds)
{
    w->conn.reconnect_pending = 1;
    w->conn.next_connect_ns = shm_now_ns() + NS_FROM_S(seconds);
}

/* The backoff step: retry_delay now, doubled (up to MQTT_RETRY_MAX_DELAY) for the next failure. */
static double next_backoff(worker *w)
{
    return backoff_next(&w->conn.retry_delay, w->cfg->retry_min_delay, w->cfg->retry_max_delay);
}

void worker_mqtt_schedule_reconnect(worker *w)
{
    if (w->conn.reconnect_pending || (stops_now(w) && !w->out.count)) return;
    schedule_in(w, next_backoff(w));
}

int worker_connect_start(worker *w)
{
    w->conn.reconnect_pending = 0;
    w->conn.disconnect_noted = 0;
    w->conn.taken_over = 0;
    w->conn.abort_why[0] = 0;
    errno = 0;
    worker_tls_failed(w);  /* a failure logged by worker_tls.c from here on is this attempt's */
    int rc = mosquitto_connect_bind_async(w->conn.mosq, w->cfg->broker, w->cfg->port, w->cfg->keepalive, NULL);
    if (rc == MOSQ_ERR_TLS && worker_tls_failed(w)) {
        w->conn.connect_started_ns = 0;  /* logged with OpenSSL's reason and rescheduled (worker_tls.c) */
        worker_mqtt_schedule_reconnect(w);
        return -1;
    }
    if (rc != MOSQ_ERR_SUCCESS) {
        const char *why = rc == MOSQ_ERR_ERRNO ? strerror(errno)
                          : rc == MOSQ_ERR_EAI ? gai_strerror(errno) : no_stop(mosquitto_strerror(rc));
        w->conn.connect_started_ns = 1;  /* so worker_connect_failed logs it as an attempt */
        worker_connect_failed(w, why);
        return -1;
    }
    w->conn.connect_started_ns = shm_now_ns();
    return 0;
}

void worker_connect_failed(worker *w, const char *why)
{
    if (!w->conn.connect_started_ns) return;
    w->conn.connect_started_ns = 0;
    if (stops_now(w) && !w->out.count) return;  /* a stop goes on reconnecting only to deliver publishes or drain */
    if (w->args->adopt_client_id && ++w->conn.adopt_attempts >= 5) {
        /* The master starts it again with backoff. */
        log_warn("leaving the adoption of %s for now: cannot connect to %s: %s", w->conn.client_id, mqtt_client_broker(w->cfg), why);
        w->stop.kind = STOP_KEEP;
        w->stop.gave_up = 1;
        return;
    }
    double d = next_backoff(w);
    log_warn("cannot connect to %s: %s; retrying in %.1f s", mqtt_client_broker(w->cfg), why, d);
    w->conn.reconnect_pending = 0;
    schedule_in(w, d);
}

/* libmosquitto's texts end with a full stop; ours go in the middle of a line. */
static const char *no_stop(const char *text)
{
    static char buf[160];
    snprintf(buf, sizeof buf, "%s", text);
    size_t n = strlen(buf);
    if (n && buf[n - 1] == '.') buf[n - 1] = 0;
    return buf;
}

static const char *reason_text(const worker *w, int reason, int err)
{
    if (w->conn.abort_why[0]) return w->conn.abort_why;
    if (reason >= 0x80) return no_stop(mosquitto_reason_string(reason));
    if (reason == MOSQ_ERR_ERRNO && err) return strerror(err);
    return no_stop(mosquitto_strerror(reason));
}

void worker_connect_lost(worker *w, int reason)
{
    int err = errno;
    int64_t now = shm_now_ns();
    if (w->conn.connect_started_ns) {  /* the attempt never got its CONNACK */
        worker_connect_failed(w, reason_text(w, reason, err));
        return;
    }
    if (stops_now(w) && !w->out.count) return;
    int brief_adoption = w->args->adopt_client_id && now - w->conn.connected_ns < SHORT_CONNECTION_NS &&
                         w->conn.short_connections >= 1;
    if (w->args->adopt_client_id && (reason == MQTT_RC_SESSION_TAKEN_OVER || brief_adoption)) {
        /* Taken over: the instance came back (mosquitto 2.0 may close without
         * saying so: a second short connection). Taking the session back
         * would start a tug of war; the adoption ends here. */
        log_info("the adoption of %s ended: %s", w->conn.client_id,
                 reason == MQTT_RC_SESSION_TAKEN_OVER ? "session taken over" : "the broker keeps closing the connection");
        w->stop.kind = STOP_KEEP;
        w->stop.gave_up = 1;
        return;
    }
    if (!w->conn.connected_ns) {  /* the broker refused the CONNECT (logged by on_connect) */
        w->conn.reconnect_pending = 0;
        schedule_in(w, next_backoff(w));
        return;
    }
    double d;
    int brief = now - w->conn.connected_ns < SHORT_CONNECTION_NS;
    w->conn.short_connections = brief ? w->conn.short_connections + 1 : 0;
    if (reason == MQTT_RC_SESSION_TAKEN_OVER) {
        /* Reconnecting at once would take the session back and start a
         * tug of war with the other connection, each losing half the messages. */
        w->conn.taken_over = 1;
        d = w->cfg->retry_max_delay;
        log_error("the broker %s gave the session of %s to another connection with the same client id "
                  "(session taken over): two routemq instances run with one identity. Give each its own "
                  "ROUTEMQ_INSTANCE (or MQTT_CLIENT_ID); retrying in %.1f s", mqtt_client_broker(w->cfg), w->conn.client_id, d);
    } else if (w->conn.short_connections >= 2) {
        /* mosquitto 2.0 closes a taken-over connection without saying why
         * (no DISCONNECT 0x8E): a second short connection in a row is the sign. */
        w->conn.taken_over = 1;
        d = w->cfg->retry_max_delay;
        log_error("the broker %s closed the connection of %s %d times in a row within %d s of accepting it: "
                  "most likely another client uses the same client id (two routemq instances with one identity: "
                  "give each its own ROUTEMQ_INSTANCE or MQTT_CLIENT_ID), or the broker rejects what this client "
                  "does (see its log); retrying in %.1f s", mqtt_client_broker(w->cfg), w->conn.client_id, w->conn.short_connections,
                  (int)(SHORT_CONNECTION_NS / NS_PER_S), d);
    } else {
        if (!brief) {
            /* The connection worked for a while: the broker restarted or the
             * network hiccuped. Come back at once (jittered, so a host's
             * workers do not arrive together), then back off from 100 ms:
             * a restarting mosquitto drops shared-route messages until the
             * first member is subscribed again (docs/delivery.md). */
            w->conn.retry_delay = w->cfg->retry_min_delay < 0.1 ? w->cfg->retry_min_delay : 0.1;
            d = (double)(rand() % FAST_RETRY_MAX_NS) / 1e9;
        } else {
            d = next_backoff(w);
        }
        /* An adoption has no subscription to restore in a hurry, and a lost
         * connection may be the orphan taking its session back: give its
         * master time to say so (a SIGTERM) before reconnecting. */
        if (w->args->adopt_client_id && d < ADOPT_RECONNECT_MIN_S) d = ADOPT_RECONNECT_MIN_S;
        if (!w->conn.disconnect_noted)
            log_warn("lost the connection to %s: %s; reconnecting in %.2f s", mqtt_client_broker(w->cfg),
                     reason_text(w, reason, err), d);
        else
            log_info("reconnecting to %s in %.2f s", mqtt_client_broker(w->cfg), d);
    }
    w->conn.disconnect_noted = 1;
    w->conn.connected_ns = 0;
    w->conn.reconnect_pending = 0;
    schedule_in(w, d);
}

/* Cuts the connection (or the attempt) from our side and lets libmosquitto
 * notice it at once: reading a shut-down socket fails, it closes the socket
 * and calls on_disconnect. */
static void cut(worker *w)
{
    int fd = mosquitto_socket(w->conn.mosq);
    if (fd < 0) return;
    shutdown(fd, SHUT_RDWR);
    errno = 0;
    mosquitto_loop_read(w->conn.mosq, 1);
    if (w->conn.connect_started_ns) worker_connect_failed(w, w->conn.abort_why);  /* on_disconnect did not come (TLS) */
}

static int readable(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    return poll(&p, 1, 0) > 0;
}

void worker_connect_tick(worker *w, int64_t now)
{
    int64_t gap = w->conn.last_tick_ns ? now - w->conn.last_tick_ns : 0;
    w->conn.last_tick_ns = now;
    if (!w->conn.mosq) return;
    if (w->conn.connect_started_ns) {
        /* A stop does not wait for an attempt that has no session yet to keep. */
        int give_up = stops_now(w) && !w->out.count;
        if (!give_up && now - w->conn.connect_started_ns < NS_FROM_S(w->cfg->connect_timeout)) return;
        snprintf(w->conn.abort_why, sizeof w->conn.abort_why, "timed out after %g s", w->cfg->connect_timeout);
        cut(w);
        return;
    }
    if (!w->conn.connected || mosquitto_socket(w->conn.mosq) < 0) return;
    int64_t keepalive_ns = (int64_t)w->cfg->keepalive * NS_PER_S;
    /* The loop was held up (a long handler): nothing read and no PINGREQ sent
     * meanwhile, so the silence is ours. Give a PINGREQ half a keepalive. */
    if (gap > 2 * NS_PER_S && w->conn.last_in_ns < now - keepalive_ns) w->conn.last_in_ns = now - keepalive_ns;
    if (now - w->conn.last_in_ns < keepalive_ns * 3 / 2) return;
    if (readable(mosquitto_socket(w->conn.mosq))) { w->conn.last_in_ns = now; return; }
    log_warn("nothing from %s for %.1f s (1.5 x MQTT_KEEPALIVE=%d): the connection is lost", mqtt_client_broker(w->cfg),
             (now - w->conn.last_in_ns) / 1e9, w->cfg->keepalive);
    snprintf(w->conn.abort_why, sizeof w->conn.abort_why, "no answer to keepalive");
    w->conn.disconnect_noted = 1;
    w->conn.last_in_ns = now;  /* one line per outage, even if libmosquitto keeps the socket */
    cut(w);
}

int64_t worker_connect_deadline(worker *w)
{
    if (w->conn.connect_started_ns) return w->conn.connect_started_ns + NS_FROM_S(w->cfg->connect_timeout);
    if (w->conn.connected) return w->conn.last_in_ns + (int64_t)w->cfg->keepalive * (NS_PER_S * 3 / 2);
    return INT64_MAX;
}
