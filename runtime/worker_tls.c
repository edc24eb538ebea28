/* TLS to the broker. libmosquitto 2.0 reports a failed handshake only to its
 * log callback ("OpenSSL Error[0]: ..." at MOSQ_LOG_ERR), then closes the
 * socket; when the failure surfaces in mosquitto_loop_read it returns
 * MOSQ_ERR_TLS without calling on_disconnect, so nothing would ever schedule
 * another attempt. The log callback is therefore where a failed handshake is
 * noticed, logged and turned into a reconnect. */
#include "worker_tls.h"
#include "clock.h"
#include "worker_internal.h"
#include "log.h"
#include "log_limit.h"
#include "mqtt_client.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define TLS_LOG_WINDOW_NS (10 * NS_PER_S) /* like handler errors: 10 lines per 10 s */
#define TLS_LOG_MAX 10
#define TLS_SAME_ATTEMPT_NS (5 * NS_PER_MS)

static void log_missed(int n)
{
    log_warn("%d failed connection attempts were not logged (rate limit: %d per 10 s)", n, TLS_LOG_MAX);
}

/* Logs one failed connection attempt (worker_mqtt_schedule_reconnect has
 * run), at most TLS_LOG_MAX lines per TLS_LOG_WINDOW_NS and then a count. */
static void attempt_failed(worker *w, const char *what, const char *reason)
{
    worker_tls_state *tls = &w->tls;
    tls->failed = 1;
    tls->failures++;
    int64_t now = shm_now_ns();
    int missed, allowed = log_limit_allow(&tls->lines, now, TLS_LOG_WINDOW_NS, TLS_LOG_MAX, &missed);
    if (missed) log_missed(missed);
    if (!allowed) return;
    double delay = w->conn.reconnect_pending ? (double)(w->conn.next_connect_ns - now) / 1e9 : 0;
    log_error("%s %s failed: %s; attempt %d, retrying in %.1f s", what, mqtt_client_broker(w->cfg), reason,
              tls->failures, delay < 0 ? 0 : delay);
}

static void on_tls_failure(worker *w, const char *first)
{
    worker_tls_state *tls = &w->tls;
    char reason[1024], more[256];
    size_t h = strlen(tls->hint);
    if (h && tls->hint[h - 1] == '.') tls->hint[h - 1] = 0;  /* "Error: host name verification failed." */
    size_t n = (size_t)snprintf(reason, sizeof reason, "%s%s%s", tls->hint, tls->hint[0] ? ": " : "", first);
    /* The rest of OpenSSL's queue: libmosquitto would log it as Error[1].. */
    for (unsigned long e; n < sizeof reason && (e = ERR_get_error());) {
        ERR_error_string_n(e, more, sizeof more);
        n += (size_t)snprintf(reason + n, sizeof reason - n, "; %s", more);
    }
    SSL *ssl = mosquitto_ssl_get(w->conn.mosq);
    long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (v != X509_V_OK && v != X509_V_ERR_UNSPECIFIED && n < sizeof reason)
        snprintf(reason + n, sizeof reason - n, " (%s)", X509_verify_cert_error_string(v));
    tls->hint[0] = 0;
    worker_mqtt_schedule_reconnect(w);
    tls->failure_ns = shm_now_ns();

    attempt_failed(w, "TLS handshake with", reason);
}

static void on_log(struct mosquitto *m, void *ud, int level, const char *str)
{
    worker *w = ud;
    if (level != MOSQ_LOG_ERR || !str) return;
    if (!strncmp(str, "OpenSSL Error[0]: ", 18)) on_tls_failure(w, str + 18);
    else if (!strncmp(str, "OpenSSL Error[", 14)) return;  /* drained by on_tls_failure already */
    else if (!strncmp(str, "Error: ", 7)) snprintf(w->tls.hint, sizeof w->tls.hint, "%s", str + 7);
    else log_debug("libmosquitto: %s", str);
}

void worker_tls_attach(worker *w)
{
    if (w->cfg->tls_enabled) mosquitto_log_callback_set(w->conn.mosq, on_log);
}

int worker_tls_failed(worker *w)
{
    int f = w->tls.failed;
    w->tls.failed = 0;
    return f;
}

void worker_tls_closed(worker *w, int rc, int err)
{
    /* A handshake failure that surfaced in SSL_read was logged just now,
     * in the same call into libmosquitto; the next attempt is at least
     * MQTT_RETRY_MIN_DELAY (>= 10 ms) later. */
    if (shm_now_ns() - w->tls.failure_ns < TLS_SAME_ATTEMPT_NS) return;
    if (rc == MOSQ_ERR_CONN_REFUSED) return;  /* a CONNACK refused it: on_connect logged that */
    char reason[512];
    snprintf(reason, sizeof reason, "the broker closed the connection before answering CONNECT (%s)%s",
             rc == MOSQ_ERR_ERRNO ? strerror(err) : mosquitto_strerror(rc),
             w->cfg->tls_enabled ? "; a broker that requires a client certificate does this when it has none "
                                   "(MQTT_TLS_CERTFILE, MQTT_TLS_KEYFILE), its log says why" : "");
    attempt_failed(w, "connecting to", reason);
}

void worker_tls_connected(worker *w)
{
    worker_tls_state *tls = &w->tls;
    if (tls->lines.missed) log_missed(tls->lines.missed);
    if (tls->failures) log_info("connected to %s after %d failed attempt%s", mqtt_client_broker(w->cfg),
                                 tls->failures, tls->failures == 1 ? "" : "s");
    tls->failures = tls->failed = 0;
    tls->lines = (log_limit){ 0 };
    tls->hint[0] = 0;
}
