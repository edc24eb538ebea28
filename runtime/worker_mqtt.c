/* The worker's MQTT connection: set-up, connect with backoff, subscriptions
 * on every (re)connect, and the DISCONNECT that keeps or ends the session. */
#include "worker_internal.h"
#include "log.h"
#include "worker_tls.h"
#include "rundir.h"
#include "hash.h"
#include "mqtt_client.h"

#include <mqtt_protocol.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Connected and every subscription acknowledged: the slot serves its routes. */
static void mark_ready(worker *w)
{
    atomic_store(&w->shm->ready_ns, shm_now_ns());
    atomic_store(&w->shm->state, SLOT_READY);
    log_info("connected to %s as %s, %d subscription%s%s", mqtt_client_broker(w->cfg), w->conn.client_id, w->conn.nsubs,
             w->conn.nsubs == 1 ? "" : "s", w->conn.session_resumed ? ", session resumed" : "");
}

/* The filters (with their subscription identifiers) the slot's previous
 * connection subscribed: what a resumed session holds. */
typedef struct held_subs {
    char **filters;
    uint32_t *ids;
    int n;
} held_subs;

/* 1 when s is in list (and with identifier id, unless id is 0). */
static int listed(char *const *list, const uint32_t *ids, int n, const char *s, uint32_t id)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(list[i], s) && (!id || (ids && ids[i] == id))) return 1;
    return 0;
}

/* Subscribes every route this slot holds; returns how many SUBSCRIBEs went out. */
static int subscribe_all(worker *w, const held_subs *held)
{
    int n = 0;
    for (int i = 0; i < w->app.nroutes; i++) {
        route_info *r = &w->app.routes[i];
        worker_sub *s = &w->conn.subs[i];
        memset(s, 0, sizeof *s);
        if (!app_slot_subscribes(r, w->args->slot)) continue;
        mosquitto_property *props = NULL;
        int options = 0;
        /* The subscription identifier tells which route a copy was delivered
         * for when routes overlap; retain handling which retained messages
         * come with the SUBACK (MQTT 5 only). */
        if (w->cfg->protocol == 5) {
            mosquitto_property_add_varint(&props, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, r->sub_id);
            options = r->retain_handling << 4;
        }
        int rc = mosquitto_subscribe_v5(w->conn.mosq, &s->mid, r->sub, r->qos, options, props);
        mosquitto_property_free_all(&props);
        if (rc != MOSQ_ERR_SUCCESS) {
            s->mid = 0;
            log_error("cannot subscribe to %s: %s", r->sub, mosquitto_strerror(rc));
            continue;
        }
        n++;
        /* A resumed session already holds the subscriptions of the previous
         * connection: what it queued came with a copy for each, with its
         * identifier. A subscription new to it (or with another identifier)
         * delivers only what is published after it: until its first copy,
         * the messages queued before came for the other routes alone. */
        if (w->conn.session_resumed) s->delivering = listed(held->filters, held->ids, held->n, r->sub, r->sub_id);
        else s->on_suback = 1;
    }
    return n;
}

/* A fingerprint of what this slot subscribes to: when the broker resumes our
 * session and the previous worker of the slot held the same set, the
 * subscriptions are already in place at CONNACK. */
static uint64_t subscription_hash(worker *w)
{
    uint64_t h = HASH_FNV1A_INIT;
    for (int i = 0; i < w->app.nroutes; i++) {
        route_info *r = &w->app.routes[i];
        if (!app_slot_subscribes(r, w->args->slot)) continue;
        h = hash_fnv1a(h, r->sub, strlen(r->sub));
        h = hash_fnv1a_word(h, (uint64_t)(r->qos + 1) * 31 + (uint64_t)r->sub_id);
    }
    return h ? h : 1;
}

/* The name of a SUBACK reason code, "Not authorized (0x87)". */
static void reason_name(worker *w, int code, char *out, size_t n)
{
    const char *name = w->cfg->protocol == 5 ? mosquitto_reason_string(code) : "Failure";
    snprintf(out, n, "%s (0x%02x)", name, code);
}

/* The broker refused route i's subscription: no message comes for it, the
 * slot is not ready (/ready and status say which route and why). */
static void refused(worker *w, int i, int code)
{
    const route_info *r = &w->app.routes[i];
    char why[64];
    reason_name(w, code, why, sizeof why);
    log_error("the broker %s refused the subscription of route '%s' (%s): %s; the slot is not ready",
              mqtt_client_broker(w->cfg), r->pattern, r->sub, why);
    if (atomic_load(&w->shm->subs_refused) == 0) {
        snprintf(w->shm->refused_reason, sizeof w->shm->refused_reason, "%s", why);
        atomic_store(&w->shm->refused_route, r->index);
    }
    atomic_fetch_add(&w->shm->subs_refused, 1);
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *granted,
                         const mosquitto_property *props)
{
    worker *w = ud;
    int i = 0;
    while (i < w->app.nroutes && w->conn.subs[i].mid != mid) i++;
    if (i < w->app.nroutes) {
        worker_sub *s = &w->conn.subs[i];
        s->mid = 0;
        if (n >= 1 && granted[0] >= 0x80) {
            s->delivering = 0;  /* copies for less specific routes are all there is */
            refused(w, i, granted[0]);
        } else if (s->on_suback) {
            s->delivering = 1;
        }
    } else {
        for (int k = 0; k < n; k++)
            if (granted[k] >= 0x80) log_error("the broker %s refused a subscription (reason %d)", mqtt_client_broker(w->cfg), granted[k]);
    }
    if (w->conn.subs_pending > 0 && --w->conn.subs_pending > 0) {
        /* mosquitto does not set TCP_NODELAY: its next SUBACKs wait for our
         * ACK of this one, which the kernel would delay by up to 40 ms. */
        int one = 1;
        setsockopt(mosquitto_socket(m), IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
    } else if (!w->stop.kind && atomic_load(&w->shm->subs_refused)) {
        atomic_store(&w->shm->state, SLOT_REFUSED);
    } else if (!w->stop.kind && atomic_load(&w->shm->state) != SLOT_READY) {
        mark_ready(w);
    }
    errno = 0;  /* see worker_on_message */
}

static void on_unsubscribe(struct mosquitto *m, void *ud, int mid, const mosquitto_property *props)
{
    worker *w = ud;
    if (w->conn.unsubs_pending > 0 && --w->conn.unsubs_pending == 0) w->stop.unsubacked_ns = shm_now_ns();
    errno = 0;  /* see worker_on_message */
}

/* A resumed session keeps the filters the slot's previous worker subscribed
 * (held); those no route of this generation uses would go on bringing
 * messages (of a route that was removed, or a share that now belongs to
 * other slots). */
static void forget_stale_filters(worker *w, const held_subs *held)
{
    const char **now = calloc((size_t)w->app.nroutes + 1, sizeof *now);
    uint32_t *ids = calloc((size_t)w->app.nroutes + 1, sizeof *ids);
    if (!now || !ids) { free(now); free(ids); return; }
    int k = 0;
    for (int i = 0; i < w->app.nroutes; i++) {
        if (!app_slot_subscribes(&w->app.routes[i], w->args->slot)) continue;
        ids[k] = w->app.routes[i].sub_id;
        now[k++] = w->app.routes[i].sub;
    }
    for (int i = 0; i < held->n && w->conn.session_resumed; i++) {
        if (listed((char *const *)now, NULL, k, held->filters[i], 0)) continue;
        if (mosquitto_unsubscribe(w->conn.mosq, NULL, held->filters[i]) == MOSQ_ERR_SUCCESS)
            log_info("unsubscribed %s: the resumed session still held it, no route of this slot uses it now",
                     held->filters[i]);
    }
    rundir_write_filters(w->cfg->run_dir, w->args->slot, now, ids, k);
    free(now);
    free(ids);
}

static int is_auth_failure(int rc)
{
    return rc == CONNACK_REFUSED_BAD_USERNAME_PASSWORD || rc == CONNACK_REFUSED_NOT_AUTHORIZED ||
           rc == MQTT_RC_BAD_USERNAME_OR_PASSWORD || rc == MQTT_RC_NOT_AUTHORIZED;
}

static void connected(struct mosquitto *m, void *ud, int rc, int flags, const mosquitto_property *props)
{
    worker *w = ud;
    w->conn.connect_started_ns = 0;
    if (rc != 0) {
        w->conn.disconnect_noted = 1;  /* the broker closes next: retry with backoff, no second line */
        w->conn.connected_ns = 0;
        log_error("the broker %s refused the connection of %s: %s", mqtt_client_broker(w->cfg), w->conn.client_id,
                  w->cfg->protocol == 5 ? mosquitto_reason_string(rc) : mosquitto_connack_string(rc));
        if (is_auth_failure(rc) && ++w->conn.auth_failures >= 3) {
            log_error("giving up after %d refused logins: check MQTT_USERNAME and MQTT_PASSWORD", w->conn.auth_failures);
            w->exit_code = WORKER_EXIT_BROKER_AUTH;
            w->stop.kind = STOP_KEEP;
        }
        return;
    }
    w->conn.connected = 1;
    worker_tls_connected(w);
    w->conn.connected_ns = w->conn.last_in_ns = shm_now_ns();
    w->conn.auth_failures = 0;
    w->conn.adopt_attempts = 0;
    w->conn.retry_delay = w->cfg->retry_min_delay;
    atomic_store(&w->shm->connected, 1);
    if (w->stop.kind == STOP_RETIRE && !w->stop.disconnect_sent) {
        /* The connection was lost while draining (a broker restart): the
         * session kept the rest of the backlog, so the drain starts over;
         * without a session nothing is left to drain. */
        w->conn.session_resumed = flags & 1;
        log_info("connected to %s as %s again, %s", mqtt_client_broker(w->cfg), w->conn.client_id,
                 w->conn.session_resumed ? "session resumed: draining what is queued for it" : "no session left");
        if (w->conn.session_resumed) {
            worker_mqtt_unsubscribe_all(w);
        } else {
            worker_forget_seen(w);
            w->stop.drained = 1;
        }
        errno = 0;
        return;
    }
    if (w->stop.kind) return;
    w->conn.session_resumed = flags & 1;
    if (!w->conn.session_resumed) worker_forget_seen(w);
    if (w->args->adopt_client_id) {
        /* Adoption: no new subscription; unsubscribe so the broker stops
         * assigning the orphan a share, handle its backlog, end the session
         * (the retire path). */
        log_info("adopting the session of %s: %s", w->conn.client_id,
                 w->conn.session_resumed ? "resumed, handling what is queued for it" : "none left");
        if (!w->conn.session_resumed) w->exit_code = WORKER_EXIT_ADOPT_NONE;
        worker_begin_stop(w, STOP_RETIRE);
        errno = 0;
        return;
    }
    uint64_t subs = subscription_hash(w);
    held_subs held;
    held.n = rundir_read_filters(w->cfg->run_dir, w->args->slot, &held.filters, &held.ids);
    atomic_store(&w->shm->subs_refused, 0);
    w->conn.subs_pending = w->conn.nsubs = subscribe_all(w, &held);
    forget_stale_filters(w, &held);
    rundir_free_filters(held.filters, held.ids, held.n);
    if (w->conn.subs_pending == 0 || (w->conn.session_resumed && atomic_load(&w->shm->sub_hash) == subs)) mark_ready(w);
    atomic_store(&w->shm->sub_hash, subs);
    worker_pump(w);  /* what a previous worker left comes first (worker_replay_load) */
}

static void on_connect(struct mosquitto *m, void *ud, int rc, int flags, const mosquitto_property *props)
{
    connected(m, ud, rc, flags, props);
    errno = 0;  /* see worker_on_message */
}

static void on_disconnect(struct mosquitto *m, void *ud, int rc, const mosquitto_property *props)
{
    worker *w = ud;
    int err = errno;
    w->conn.connected = 0;
    w->conn.subs_pending = 0;
    atomic_store(&w->shm->connected, 0);
    /* A stop leaves at once, unless publishes still wait for the broker or
     * it drains a retiring session (the drain goes on after a reconnect). */
    if (w->stop.disconnect_sent || (w->stop.kind && w->stop.kind != STOP_RETIRE && !w->out.count)) {
        w->conn.connect_started_ns = 0;
        return;
    }
    atomic_store(&w->shm->state, SLOT_CONNECTING);
    if (w->cfg->tls_enabled && w->conn.connect_started_ns && rc != MOSQ_ERR_CONN_REFUSED &&
        !(rc == MOSQ_ERR_ERRNO && err == ECONNREFUSED)) {
        /* A TLS attempt that ended before its CONNACK: say why (worker_tls.c),
         * unless OpenSSL's reason was logged for it already. */
        w->conn.connect_started_ns = 0;
        worker_mqtt_schedule_reconnect(w);
        if (!worker_tls_failed(w)) worker_tls_closed(w, rc, err);
        worker_tls_failed(w);
        return;
    }
    errno = err;
    worker_connect_lost(w, rc);
}

/* libmosquitto's non-blocking connect (mosquitto_connect_bind_async) takes
 * no CONNECT properties; it sends those the last mosquitto_connect_bind_v5
 * stored. That call stores them before it validates the port, so an invalid
 * port stores them without connecting (libmosquitto 2.0, lib/connect.c). */
static int set_connect_properties(worker *w)
{
    if (w->cfg->protocol != 5) return 0;
    mosquitto_property *props = NULL;
    if (w->conn.persistent)
        mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, (uint32_t)w->cfg->session_expiry);
    /* The broker does not send us what the keep could not hold (worker_keep.c). */
    mosquitto_property_add_int32(&props, MQTT_PROP_MAXIMUM_PACKET_SIZE, worker_keep_max_message(w));
    int rc = mosquitto_connect_bind_v5(w->conn.mosq, w->cfg->broker, -1, w->cfg->keepalive, NULL, props);
    mosquitto_property_free_all(&props);
    if (rc != MOSQ_ERR_INVAL) {
        log_error("cannot set the session expiry for the connection: %s", mosquitto_strerror(rc));
        return -1;
    }
    return 0;
}

/* A slot keeps its session when it holds a qos >= 1 route (the broker
 * queues for it while it is away), and with MQTT 5 when it holds a route
 * that gets retained messages only on a new subscription (retained = "new"):
 * a session that ends with the connection makes every subscribe new. */
static int slot_is_persistent(worker *w)
{
    for (int i = 0; i < w->app.nroutes; i++) {
        const route_info *r = &w->app.routes[i];
        if (!app_slot_subscribes(r, w->args->slot)) continue;
        if (r->qos > 0 || (w->cfg->protocol == 5 && !r->shared && r->retain_handling == 1)) return 1;
    }
    return 0;
}

int worker_mqtt_setup(worker *w)
{
    const config *c = w->cfg;
    mosquitto_lib_init();
    snprintf(w->conn.client_id, sizeof w->conn.client_id, "%s-%s-%d", c->client_id, c->instance, w->args->slot);
    w->conn.persistent = slot_is_persistent(w);
    if (w->args->adopt_client_id) {
        snprintf(w->conn.client_id, sizeof w->conn.client_id, "%s", w->args->adopt_client_id);
        w->conn.persistent = 1;  /* resume the orphan's session, never start a clean one */
    }
    w->conn.subs = calloc((size_t)w->app.nroutes + 1, sizeof *w->conn.subs);
    if (!w->conn.subs) { log_error("cannot set up the subscriptions: out of memory"); return -1; }
    w->conn.mosq = mosquitto_new(w->conn.client_id, !w->conn.persistent, w);
    if (!w->conn.mosq) { log_error("cannot create the MQTT client: out of memory"); return -1; }
    mosquitto_int_option(w->conn.mosq, MOSQ_OPT_PROTOCOL_VERSION, c->protocol == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
    /* Queue every outgoing packet instead of writing it at once: PUBACKs then
     * leave from our loop after the handlers ran (and after the message was
     * kept in shared memory), never between receipt and keeping. */
    mosquitto_threaded_set(w->conn.mosq, true);
    /* The largest Receive Maximum: libmosquitto drops the connection as a
     * protocol error as soon as more QoS 2 messages are unfinished than we
     * announced, and mosquitto 2.0.11 (Debian 12) does not keep to it (each
     * PUBACK or PUBCOMP releases up to that many more: 10,344 QoS 1 messages
     * were outstanding to a worker that announced 100). At 100, a QoS 2 route
     * reconnected in a loop after ~250 messages of a burst. */
    mosquitto_int_option(w->conn.mosq, MOSQ_OPT_RECEIVE_MAXIMUM, 65535);
    if (c->username && mosquitto_username_pw_set(w->conn.mosq, c->username, c->password) != MOSQ_ERR_SUCCESS) {
        log_error("cannot set MQTT_USERNAME");
        return -1;
    }
    if (c->tls_enabled) {
        int rc = mosquitto_tls_set(w->conn.mosq, c->tls_ca_certs, NULL, c->tls_certfile, c->tls_keyfile, NULL);
        if (rc != MOSQ_ERR_SUCCESS) {
            log_error("MQTT_TLS_*: cannot set up TLS: %s", mosquitto_strerror(rc));
            return -1;
        }
        mosquitto_tls_insecure_set(w->conn.mosq, c->tls_insecure);
        worker_tls_attach(w);
    }
    mosquitto_connect_v5_callback_set(w->conn.mosq, on_connect);
    mosquitto_disconnect_v5_callback_set(w->conn.mosq, on_disconnect);
    mosquitto_subscribe_v5_callback_set(w->conn.mosq, on_subscribe);
    mosquitto_unsubscribe_v5_callback_set(w->conn.mosq, on_unsubscribe);
    mosquitto_message_v5_callback_set(w->conn.mosq, worker_on_message);
    mosquitto_publish_v5_callback_set(w->conn.mosq, worker_out_on_publish);
    w->conn.retry_delay = c->retry_min_delay;
    return set_connect_properties(w);
}

void worker_mqtt_connect(worker *w)
{
    worker_connect_start(w);
}

void worker_mqtt_disconnect(worker *w)
{
    if (!w->conn.mosq || mosquitto_socket(w->conn.mosq) < 0) return;
    mosquitto_property *props = NULL;
    /* Session expiry 0 on DISCONNECT ends the session (MQTT 5); with 3.1.1 the
     * slot has unsubscribed already (worker_mqtt_unsubscribe_all). */
    int end = w->stop.kind == STOP_RETIRE && w->stop.drained;
    if (end && w->cfg->protocol == 5 && w->conn.persistent)
        mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, 0);
    int rc = mosquitto_disconnect_v5(w->conn.mosq, 0, props);
    mosquitto_property_free_all(&props);
    w->stop.disconnect_sent = rc == MOSQ_ERR_SUCCESS;
    w->stop.session_ended = end && w->stop.disconnect_sent;
    worker_pubconn_disconnect(w);
}

/* The drain marker's topic: $-topics match no application filter ("#"
 * included), and the client id makes it ours alone. */
static void drain_topic(worker *w)
{
    int n = snprintf(w->stop.drain_topic, sizeof w->stop.drain_topic, "$routemq/drain/%s", w->conn.client_id);
    for (int i = 15; i < n && i < (int)sizeof w->stop.drain_topic; i++) {
        char c = w->stop.drain_topic[i];
        if (c == '+' || c == '#' || c == '/') w->stop.drain_topic[i] = '_';
    }
}

void worker_mqtt_unsubscribe_all(worker *w)
{
    w->conn.unsubs_pending = 0;
    w->stop.drained = 0;
    w->stop.unsubacked_ns = 0;
    if (!w->conn.mosq || !w->conn.connected) return;
    /* When the broker has stopped sending us messages is a condition, not a
     * guess: the marker, subscribed before the UNSUBSCRIBEs and published
     * after them, is queued in our session behind everything the broker
     * assigned us before it processed them (one connection: in order). */
    drain_topic(w);
    snprintf(w->stop.drain_nonce, sizeof w->stop.drain_nonce, "%d-%u", (int)getpid(), ++w->stop.drain_attempts);
    int marker = mosquitto_subscribe(w->conn.mosq, NULL, w->stop.drain_topic, 1) == MOSQ_ERR_SUCCESS;
    /* An adopted session may hold any of the routes (the orphan may have run other worker counts). */
    int all = w->args->adopt_client_id != NULL;
    for (int i = 0; i < w->app.nroutes; i++)
        if ((all || app_slot_subscribes(&w->app.routes[i], w->args->slot)) &&
            mosquitto_unsubscribe(w->conn.mosq, NULL, w->app.routes[i].sub) == MOSQ_ERR_SUCCESS)
            w->conn.unsubs_pending++;
    if (marker)
        marker = mosquitto_publish(w->conn.mosq, NULL, w->stop.drain_topic, (int)strlen(w->stop.drain_nonce),
                                   w->stop.drain_nonce, 1, false) == MOSQ_ERR_SUCCESS;
    if (!marker) log_warn("cannot publish the drain marker on %s; the drain ends after a quiet time", w->stop.drain_topic);
    if (!w->conn.unsubs_pending) w->stop.unsubacked_ns = shm_now_ns();
}

int worker_mqtt_drain_marker(worker *w, const struct mosquitto_message *msg)
{
    if (strncmp(msg->topic, "$routemq/drain/", 15)) return 0;
    size_t n = strlen(w->stop.drain_nonce);
    if (w->stop.kind == STOP_RETIRE && !strcmp(msg->topic, w->stop.drain_topic) && n &&
        msg->payloadlen == (int)n && !memcmp(msg->payload, w->stop.drain_nonce, n)) {
        if (!w->stop.drained) log_debug("the drain marker came back: the broker has nothing more queued for us");
        w->stop.drained = 1;
    }
    return 1;  /* a marker of an earlier connection: not an application message either */
}

void worker_mqtt_free(worker *w)
{
    if (w->conn.mosq) mosquitto_destroy(w->conn.mosq);
    w->conn.mosq = NULL;
    free(w->conn.subs);
    w->conn.subs = NULL;
    mosquitto_lib_cleanup();
}
