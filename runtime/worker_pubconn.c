/* The worker's second MQTT connection, used only to publish: what handlers
 * (and timers, init, dead letters) publish goes out here and the broker's
 * acknowledgements come back here. Incoming messages come on the first
 * connection (worker_mqtt.c), which stops being read while the keep is at
 * its bound; the acknowledgements that free the keep must not queue behind
 * those unread messages, and mosquitto 2.0.11 does not honour our Receive
 * Maximum, so one connection cannot bound the keep (docs/delivery.md).
 *
 * Its client id is the slot's with "-out"; its session is persistent (MQTT 5:
 * MQTT_SESSION_EXPIRY) so that QoS 1/2 publishes in flight survive a
 * reconnect; it never subscribes, so the broker queues nothing for it. */
#include "worker_internal.h"
#include "log.h"
#include "backoff.h"
#include "mqtt_client.h"

#include <dlfcn.h>
#include <errno.h>
#include <mqtt_protocol.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

struct worker_pubconn {
    struct mosquitto *mosq;
    char client_id[600];
    int sock, sock_events;      /* in epoll; -1 none */
    int connected;              /* CONNACK received */
    int64_t attempt_ns;         /* a connect attempt awaits its CONNACK since then; 0 none */
    int64_t next_connect_ns;    /* next attempt; 0 none due */
    double retry_delay;
    int disconnect_sent;
    int64_t last_misc_ns;
};

static void schedule(worker *w, double seconds)
{
    struct worker_pubconn *p = w->pub;
    p->next_connect_ns = shm_now_ns() + (int64_t)(seconds * 1e9);
}

/* Its own backoff, from 0.1 s (worker_pubconn_setup) up to MQTT_RETRY_MAX_DELAY. */
static double backoff(worker *w)
{
    return backoff_next(&w->pub->retry_delay, 0.1, w->cfg->retry_max_delay);
}

/* Until the worker's last DISCONNECT: a stopping worker still finishes
 * handlers (retiring, or when the whole instance stops) and delivers what
 * they published. */
static int wanted(worker *w)
{
    return !w->pub->disconnect_sent;
}

/* It connects once the incoming connection is up: that one's attempts say
 * why the broker cannot be reached (worker_connect.c, worker_tls.c), and two
 * failing at once would only blur that. A stop goes on to deliver what is
 * unacknowledged. */
static int may_connect(const worker *w)
{
    return w->conn.connected || w->out.count;
}

static void on_connect(struct mosquitto *m, void *ud, int rc, int flags, const mosquitto_property *props)
{
    worker *w = ud;
    struct worker_pubconn *p = w->pub;
    p->attempt_ns = 0;
    if (rc) {
        log_warn("the broker refused the publishing connection %s: %s", p->client_id,
                 w->cfg->protocol == 5 ? mosquitto_reason_string(rc) : mosquitto_connack_string(rc));
        errno = 0;
        return;  /* the broker closes it: on_disconnect schedules the retry */
    }
    p->connected = 1;
    p->retry_delay = 0.1;
    int fd = mosquitto_socket(m);
    /* Publishes are written in batches (worker_pubconn_flush corks); a lone
     * reply must not wait for Nagle. */
    if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, sizeof(int));
    log_debug("publishing connection %s up", p->client_id);
    worker_pump(w);  /* handlers wait for this connection (worker_can_start) */
    errno = 0;
}

static void on_disconnect(struct mosquitto *m, void *ud, int rc, const mosquitto_property *props)
{
    worker *w = ud;
    struct worker_pubconn *p = w->pub;
    int was = p->connected;
    p->connected = 0;
    p->attempt_ns = 0;
    worker_out_connection_lost(w);
    if (wanted(w)) {
        double d = was ? 0.1 : backoff(w);
        if (was) p->retry_delay = 0.1;
        if (w->conn.connected)
            log_warn("lost the publishing connection %s (%s); reconnecting in %.1f s", p->client_id,
                     rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc), d);
        schedule(w, d);
    }
    errno = 0;
}

int worker_pubconn_setup(worker *w)
{
    const config *c = w->cfg;
    struct worker_pubconn *p = calloc(1, sizeof *p);
    if (!p) { log_error("out of memory"); return -1; }
    w->pub = p;
    p->sock = -1;
    p->retry_delay = 0.1;
    snprintf(p->client_id, sizeof p->client_id, "%s-out", w->conn.client_id);
    p->mosq = mosquitto_new(p->client_id, false, w);
    if (!p->mosq) { log_error("cannot create the publishing MQTT client: out of memory"); return -1; }
    mosquitto_int_option(p->mosq, MOSQ_OPT_PROTOCOL_VERSION, c->protocol == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
    /* Written only from our loop (worker_pubconn_flush), in batches. */
    mosquitto_threaded_set(p->mosq, true);
    if (c->username && mosquitto_username_pw_set(p->mosq, c->username, c->password) != MOSQ_ERR_SUCCESS) {
        log_error("cannot set MQTT_USERNAME");
        return -1;
    }
    if (c->tls_enabled) {
        int rc = mosquitto_tls_set(p->mosq, c->tls_ca_certs, NULL, c->tls_certfile, c->tls_keyfile, NULL);
        if (rc != MOSQ_ERR_SUCCESS) {
            log_error("MQTT_TLS_*: cannot set up TLS: %s", mosquitto_strerror(rc));
            return -1;
        }
        mosquitto_tls_insecure_set(p->mosq, c->tls_insecure);
    }
    mosquitto_connect_v5_callback_set(p->mosq, on_connect);
    mosquitto_disconnect_v5_callback_set(p->mosq, on_disconnect);
    mosquitto_publish_v5_callback_set(p->mosq, worker_out_on_publish);
    if (c->protocol == 5) {
        /* The session expiry goes with the async connect: stored by this
         * call, which then fails on the invalid port (see worker_mqtt.c). */
        mosquitto_property *props = NULL;
        mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, (uint32_t)c->session_expiry);
        int rc = mosquitto_connect_bind_v5(p->mosq, c->broker, -1, c->keepalive, NULL, props);
        mosquitto_property_free_all(&props);
        if (rc != MOSQ_ERR_INVAL) {
            log_error("cannot set the session expiry of the publishing connection: %s", mosquitto_strerror(rc));
            return -1;
        }
    }
    p->next_connect_ns = shm_now_ns();
    return 0;
}

void worker_pubconn_free(worker *w)
{
    if (!w->pub) return;
    if (w->pub->mosq) mosquitto_destroy(w->pub->mosq);
    free(w->pub);
    w->pub = NULL;
}

struct mosquitto *worker_pubconn_mosq(worker *w)
{
    return w->pub->mosq;
}

int worker_pubconn_connected(const worker *w)
{
    return w->pub && w->pub->connected;
}

/* Cuts the attempt or connection: libmosquitto notices on the read. */
static void cut(worker *w)
{
    int fd = mosquitto_socket(w->pub->mosq);
    if (fd < 0) return;
    shutdown(fd, SHUT_RDWR);
    mosquitto_loop_read(w->pub->mosq, 1);
    if (w->pub->attempt_ns) {  /* on_disconnect did not come */
        w->pub->attempt_ns = 0;
        schedule(w, backoff(w));
    }
}

void worker_pubconn_tick(worker *w, int64_t now)
{
    struct worker_pubconn *p = w->pub;
    if (!p) return;
    if (p->attempt_ns) {
        if (now - p->attempt_ns > (int64_t)(w->cfg->connect_timeout * 1e9)) {
            log_warn("the publishing connection %s: no CONNACK within %g s", p->client_id, w->cfg->connect_timeout);
            cut(w);
        }
        return;
    }
    if (p->connected) {
        if (now - p->last_misc_ns > 1000000000LL) {
            p->last_misc_ns = now;
            mosquitto_loop_misc(p->mosq);  /* keepalive */
        }
        return;
    }
    if (!p->next_connect_ns || now < p->next_connect_ns || mosquitto_socket(p->mosq) >= 0) return;
    if (!wanted(w)) { p->next_connect_ns = 0; return; }
    if (!may_connect(w)) return;
    p->next_connect_ns = 0;
    int rc = mosquitto_connect_bind_async(p->mosq, w->cfg->broker, w->cfg->port, w->cfg->keepalive, NULL);
    if (rc != MOSQ_ERR_SUCCESS) {
        double d = backoff(w);
        log_debug("the publishing connection %s: cannot connect: %s; retrying in %.1f s", p->client_id,
                  rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc), d);
        schedule(w, d);
        return;
    }
    p->attempt_ns = now;
    log_debug("publishing connection %s: connecting", p->client_id);
}

int64_t worker_pubconn_deadline(worker *w)
{
    struct worker_pubconn *p = w->pub;
    if (!p || (!p->attempt_ns && !may_connect(w))) return INT64_MAX;
    if (p->attempt_ns) return p->attempt_ns + (int64_t)(w->cfg->connect_timeout * 1e9);
    if (!p->connected && p->next_connect_ns) return p->next_connect_ns;
    return INT64_MAX;
}

void worker_pubconn_update(worker *w)
{
    struct worker_pubconn *p = w->pub;
    if (!p) return;
    int fd = mosquitto_socket(p->mosq);
    int events = fd >= 0 ? EPOLLIN | (mosquitto_want_write(p->mosq) ? EPOLLOUT : 0) : 0;
    mqtt_client_sync_epoll(w->epfd, fd, (uint32_t)events, (epoll_data_t){ .fd = fd }, &p->sock, &p->sock_events);
}

void worker_pubconn_flush(worker *w)
{
    struct worker_pubconn *p = w->pub;
    if (!p) return;
    int fd = mosquitto_socket(p->mosq);
    if (fd < 0 || !mosquitto_want_write(p->mosq)) return;
    /* Corked: a batch of publishes leaves in as few segments as it fills. */
    setsockopt(fd, IPPROTO_TCP, TCP_CORK, &(int){ 1 }, sizeof(int));
    mosquitto_loop_write(p->mosq, 1);
    if (mosquitto_socket(p->mosq) == fd) setsockopt(fd, IPPROTO_TCP, TCP_CORK, &(int){ 0 }, sizeof(int));
}

/* Bytes in the socket, or decrypted already inside OpenSSL (no EPOLLIN for
 * those; see worker.c). */
typedef int (*ssl_pending_fn)(const void *ssl);

static int more_to_read(worker *w)
{
    char c;
    int fd = mosquitto_socket(w->pub->mosq);
    if (fd < 0) return 0;
    if (recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0) return 1;
    if (!w->cfg->tls_enabled) return 0;
    static ssl_pending_fn pending;
    static int looked;
    if (!looked) { pending = (ssl_pending_fn)dlsym(RTLD_DEFAULT, "SSL_pending"); looked = 1; }
    void *ssl = mosquitto_ssl_get(w->pub->mosq);
    return ssl && pending && pending(ssl) > 0;
}

int worker_pubconn_event(worker *w, int fd, uint32_t events)
{
    struct worker_pubconn *p = w->pub;
    if (!p || fd != p->sock || mosquitto_socket(p->mosq) != fd) return 0;
    if (events & EPOLLOUT) worker_pubconn_flush(w);
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        /* Only acknowledgements come here: read them all. */
        for (int i = 0; i < 4096; i++) {
            if (mosquitto_loop_read(p->mosq, 1) != MOSQ_ERR_SUCCESS || !more_to_read(w)) break;
        }
        worker_pubconn_flush(w);
    }
    return 1;
}

void worker_pubconn_service(worker *w)
{
    struct worker_pubconn *p = w->pub;
    if (!p || mosquitto_socket(p->mosq) < 0) return;
    worker_pubconn_flush(w);
    if (!w->out.count || !more_to_read(w)) return;
    for (int i = 0; i < 256; i++) {
        if (mosquitto_loop_read(p->mosq, 1) != MOSQ_ERR_SUCCESS || !more_to_read(w)) break;
    }
    worker_pubconn_flush(w);
}

void worker_pubconn_disconnect(worker *w)
{
    struct worker_pubconn *p = w->pub;
    if (!p || p->disconnect_sent) return;
    p->disconnect_sent = 1;
    p->next_connect_ns = 0;
    if (mosquitto_socket(p->mosq) < 0) return;
    mosquitto_property *props = NULL;
    /* A slot retired for good ends this session too (MQTT 5). */
    if (w->stop.kind == STOP_RETIRE && w->cfg->protocol == 5)
        mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, 0);
    mosquitto_disconnect_v5(p->mosq, 0, props);
    mosquitto_property_free_all(&props);
}

int worker_pubconn_idle(worker *w)
{
    struct worker_pubconn *p = w->pub;
    return !p || mosquitto_socket(p->mosq) < 0 || !mosquitto_want_write(p->mosq);
}
