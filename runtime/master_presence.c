/* Presence (SPEC §8): the master's own light MQTT connection, never the
 * application's traffic. It keeps a retained record of this instance under
 * routemq/presence/<group>/<instance> (a will marks it lost if the master
 * vanishes) and follows the records of the whole group, so that a start can
 * refuse an identity that is live elsewhere, a stop can tell whether another
 * instance serves the same shared routes, and `status --cluster` can list them.
 *
 * <instance> is the identity of the instance's sessions: <MQTT_CLIENT_ID>-<host>
 * (slot i connects as <instance>-<i>). Like the workers, the connection is
 * non-blocking and driven by the master's epoll loop. */
#include "master.h"
#include "master_presence.h"
#include "master_presence_internal.h"
#include "log.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef ROUTEMQ_VERSION
#define ROUTEMQ_VERSION "0.0.0"
#endif

#define SETTLE_NS (300 * NS_PER_MS)    /* after SUBACK: the retained records have arrived */
#define START_WAIT_NS (2 * NS_PER_S)   /* workers start anyway when the broker does not answer */

static const char *presence_broker(const master *m)
{
    static char name[300];
    snprintf(name, sizeof name, "%s:%d", m->cfg->broker, m->cfg->port);
    return name;
}

/* The record of this instance in the given state. */
static void record_json(master *m, const char *state, strbuf *b)
{
    struct master_presence *p = m->presence;
    sb_puts(b, "{\"instance\":");
    sb_json_str(b, p->instance);
    sb_puts(b, ",\"host\":");
    sb_json_str(b, p->host);
    sb_printf(b, ",\"pid\":%d,\"version\":\"%s\",\"group\":", (int)m->pid, ROUTEMQ_VERSION);
    sb_json_str(b, m->cfg->group_name);
    sb_puts(b, ",\"clients\":[");
    /* The slots that run or ran: each may hold a session. */
    for (int i = 0; i < m->nslots; i++) {
        if (i >= m->P && !m->slots[i].generation) continue;
        char id[600];
        snprintf(id, sizeof id, "%s-%d", p->instance, i);
        if (i) sb_puts(b, ",");
        sb_json_str(b, id);
    }
    sb_puts(b, "],\"shared_routes\":[");
    int first = 1;
    for (int i = 0; m->app && i < m->app->def.nroutes; i++) {
        route_info *r = &m->app->def.routes[i];
        if (!r->shared) continue;
        if (!first) sb_puts(b, ",");
        first = 0;
        sb_json_str(b, r->sub);
    }
    sb_printf(b, "],\"workers\":%d,\"session_expiry\":%d,\"state\":\"%s\",\"sessions\":\"%s\",\"since\":%lld}",
              m->P, m->cfg->session_expiry, state, p->sessions_kept ? "kept" : "ended", (long long)p->since);
}

static void publish_record(master *m)
{
    struct master_presence *p = m->presence;
    if (!p->connected || !p->announced) return;
    strbuf b;
    sb_init(&b);
    if (!strcmp(p->state, "cleared")) {
        mosquitto_publish(p->mosq, &p->last_mid, p->topic, 0, NULL, 1, true);
    } else {
        record_json(m, p->state, &b);
        if (!b.oom) mosquitto_publish(p->mosq, &p->last_mid, p->topic, (int)b.len, b.p, 1, true);
    }
    sb_free(&b);
    p->published_p = m->P;
    p->published_gen = m->app_generation;
}

/* A string field of a record we (or another routemq) published; "" when absent. */
void presence_field_str(const char *json, const char *key, char *out, size_t n)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *s = json ? strstr(json, pat) : NULL;
    out[0] = 0;
    if (!s) return;
    s += strlen(pat);
    size_t k = 0;
    while (*s && *s != '"' && k + 1 < n) out[k++] = *s++;
    out[k] = 0;
}

long presence_field_long(const char *json, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *s = json ? strstr(json, pat) : NULL;
    return s ? strtol(s + strlen(pat), NULL, 10) : 0;
}

static peer *find_peer(struct master_presence *p, const char *instance)
{
    for (int i = 0; i < p->npeers; i++)
        if (!strcmp(p->peers[i].instance, instance)) return &p->peers[i];
    return NULL;
}

static void on_message(struct mosquitto *mosq, void *ud, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    master *m = ud;
    struct master_presence *p = m->presence;
    const char *inst = strrchr(msg->topic, '/');
    if (!inst || !inst[1]) return;
    inst++;
    peer *e = find_peer(p, inst);
    if (msg->payloadlen == 0) {  /* cleared */
        if (e) {
            free(e->instance);
            free(e->json);
            *e = p->peers[--p->npeers];
        }
        return;
    }
    char *json = strndup(msg->payload, (size_t)msg->payloadlen);
    if (!json) return;
    if (!e) {
        peer *np = realloc(p->peers, (size_t)(p->npeers + 1) * sizeof *np);
        char *name = strdup(inst);
        if (!np || !name) { free(json); free(name); if (np) p->peers = np; return; }
        p->peers = np;
        e = &p->peers[p->npeers++];
        memset(e, 0, sizeof *e);
        e->instance = name;
    }
    free(e->json);
    e->json = json;
    char state[16];
    presence_field_str(json, "state", state, sizeof state);
    if (strcmp(state, e->state)) {
        snprintf(e->state, sizeof e->state, "%s", state);
        e->state_seen_ns = shm_now_ns();
    }
}

static void on_connect(struct mosquitto *mosq, void *ud, int rc, int flags, const mosquitto_property *props)
{
    master *m = ud;
    struct master_presence *p = m->presence;
    p->connect_started_ns = 0;
    if (rc) {
        log_warn("presence: the broker %s refused the connection: %s", presence_broker(m),
                 m->cfg->protocol == 5 ? mosquitto_reason_string(rc) : mosquitto_connack_string(rc));
        return;
    }
    p->connected = 1;
    p->retry_delay = m->cfg->retry_min_delay;
    mosquitto_subscribe(mosq, NULL, p->filter, 1);
    publish_record(m);
    log_debug("presence: connected to %s as %s", presence_broker(m), p->client_id);
}

static void on_subscribe(struct mosquitto *mosq, void *ud, int mid, int n, const int *granted,
                         const mosquitto_property *props)
{
    master *m = ud;
    if (!m->presence->subacked_ns) m->presence->subacked_ns = shm_now_ns();
}

static void on_publish(struct mosquitto *mosq, void *ud, int mid, int rc, const mosquitto_property *props)
{
    master *m = ud;
    m->presence->acked_mid = mid;
}

static void on_unsubscribe(struct mosquitto *mosq, void *ud, int mid, const mosquitto_property *props)
{
    master *m = ud;
    m->presence->unsubacked = 1;
}

static void schedule(master *m)
{
    struct master_presence *p = m->presence;
    double d = p->retry_delay > 0 ? p->retry_delay : m->cfg->retry_min_delay;
    p->retry_delay = d * 2 > m->cfg->retry_max_delay ? m->cfg->retry_max_delay : d * 2;
    p->next_connect_ns = shm_now_ns() + (int64_t)(d * NS_PER_S);
}

static void on_disconnect(struct mosquitto *mosq, void *ud, int rc, const mosquitto_property *props)
{
    master *m = ud;
    struct master_presence *p = m->presence;
    if (p->connected && !m->stopping && !p->refreshing)
        log_warn("presence: lost the connection to %s", presence_broker(m));
    if (!p->connected) p->failed = 1;
    p->connected = 0;
    p->connect_started_ns = 0;
    if (p->refreshing) {
        p->refreshing = 0;
        p->next_connect_ns = shm_now_ns();
    }
    if (!p->next_connect_ns) schedule(m);
}

static void set_will(master *m)
{
    struct master_presence *p = m->presence;
    strbuf b;
    sb_init(&b);
    record_json(m, "lost", &b);
    if (!b.oom) mosquitto_will_set(p->mosq, p->topic, (int)b.len, b.p, 1, true);
    p->will_p = m->P;
    sb_free(&b);
}

static void connect_now(master *m)
{
    struct master_presence *p = m->presence;
    p->next_connect_ns = 0;
    set_will(m);
    int rc = mosquitto_connect_bind_async(p->mosq, m->cfg->broker, m->cfg->port, m->cfg->keepalive, NULL);
    if (rc != MOSQ_ERR_SUCCESS) { p->failed = 1; schedule(m); return; }
    p->connect_started_ns = shm_now_ns();
}

int master_presence_start(master *m)
{
    /* ROUTEMQ_PRESENCE=false: a broker that allows one connection per
     * instance, or a single instance that wants none; nothing is adopted. */
    if (!m->cfg->presence) return 0;
    struct master_presence *p = calloc(1, sizeof *p);
    if (!p) return -1;
    m->presence = p;
    p->sock = -1;
    p->state = "running";
    p->sessions_kept = 1;
    p->since = time(NULL);
    p->started_ns = shm_now_ns();
    gethostname(p->host, sizeof p->host - 1);
    snprintf(p->instance, sizeof p->instance, "%s-%s", m->cfg->client_id, m->cfg->instance);
    snprintf(p->client_id, sizeof p->client_id, "%s-presence-%d", p->instance, (int)m->pid);
    snprintf(p->topic, sizeof p->topic, "routemq/presence/%s/%s", m->cfg->group_name, p->instance);
    snprintf(p->filter, sizeof p->filter, "routemq/presence/%s/+", m->cfg->group_name);
    mosquitto_lib_init();
    p->mosq = mosquitto_new(p->client_id, true, m);
    if (!p->mosq) { log_error("presence: cannot create the MQTT client: out of memory"); return -1; }
    const config *c = m->cfg;
    mosquitto_int_option(p->mosq, MOSQ_OPT_PROTOCOL_VERSION, c->protocol == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
    mosquitto_threaded_set(p->mosq, true);  /* queue writes: our loop writes when the socket is ready */
    if (c->username) mosquitto_username_pw_set(p->mosq, c->username, c->password);
    if (c->tls_enabled && mosquitto_tls_set(p->mosq, c->tls_ca_certs, NULL, c->tls_certfile, c->tls_keyfile, NULL) == 0)
        mosquitto_tls_insecure_set(p->mosq, c->tls_insecure);
    mosquitto_connect_v5_callback_set(p->mosq, on_connect);
    mosquitto_disconnect_v5_callback_set(p->mosq, on_disconnect);
    mosquitto_subscribe_v5_callback_set(p->mosq, on_subscribe);
    mosquitto_message_v5_callback_set(p->mosq, on_message);
    mosquitto_publish_v5_callback_set(p->mosq, on_publish);
    mosquitto_unsubscribe_v5_callback_set(p->mosq, on_unsubscribe);
    p->retry_delay = c->retry_min_delay;
    connect_now(m);
    return 0;
}

static void update_socket(master *m)
{
    struct master_presence *p = m->presence;
    int fd = mosquitto_socket(p->mosq);
    int events = EPOLLIN | (fd >= 0 && mosquitto_want_write(p->mosq) ? EPOLLOUT : 0);
    if (fd != p->sock) {
        if (p->sock >= 0) epoll_ctl(m->epfd, EPOLL_CTL_DEL, p->sock, NULL);
        p->sock = -1;
        if (fd >= 0) {
            struct epoll_event ev = { .events = (uint32_t)events, .data.u64 = MEV(MEV_PRESENCE, 0) };
            if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, fd, &ev) == 0) { p->sock = fd; p->sock_events = events; }
        }
    } else if (fd >= 0 && events != p->sock_events) {
        struct epoll_event ev = { .events = (uint32_t)events, .data.u64 = MEV(MEV_PRESENCE, 0) };
        if (epoll_ctl(m->epfd, EPOLL_CTL_MOD, fd, &ev) == 0) p->sock_events = events;
    }
}

void master_presence_event(master *m, uint32_t events)
{
    struct master_presence *p = m->presence;
    if (!p || mosquitto_socket(p->mosq) < 0) return;
    if (events & EPOLLOUT) mosquitto_loop_write(p->mosq, 1);
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        for (int i = 0; i < 64 && mosquitto_socket(p->mosq) >= 0; i++) {
            errno = 0;
            if (mosquitto_loop_read(p->mosq, 1) != MOSQ_ERR_SUCCESS || errno == EAGAIN) break;
        }
    }
    if (mosquitto_socket(p->mosq) >= 0 && mosquitto_want_write(p->mosq)) mosquitto_loop_write(p->mosq, 1);
    update_socket(m);
}

void master_presence_tick(master *m, int64_t now)
{
    struct master_presence *p = m->presence;
    if (!p) return;
    if (p->connect_started_ns && now - p->connect_started_ns > (int64_t)(m->cfg->connect_timeout * NS_PER_S)) {
        /* Bounded like the workers' attempts: cut it, on_disconnect schedules the next. */
        int fd = mosquitto_socket(p->mosq);
        if (fd >= 0) shutdown(fd, SHUT_RDWR);
        mosquitto_loop_read(p->mosq, 1);
        if (p->connect_started_ns) { p->connect_started_ns = 0; schedule(m); }
        p->failed = 1;
    }
    if (p->next_connect_ns && now >= p->next_connect_ns && strcmp(p->state, "cleared")) connect_now(m);
    if ((uint64_t)now >= p->next_misc_ns) {
        p->next_misc_ns = (uint64_t)(now + NS_PER_S);
        if (mosquitto_socket(p->mosq) >= 0) mosquitto_loop_misc(p->mosq);
        /* Scaling and reloads change the slots and the shared routes of the record. */
        if (p->connected && (p->published_p != m->P || p->published_gen != m->app_generation)) publish_record(m);
        /* The will must list the slots' client ids too; MQTT sets it only at CONNECT. */
        if (p->connected && p->announced && p->will_p < m->P && !m->stopping && !p->refreshing) {
            p->refreshing = 1;
            mosquitto_disconnect(p->mosq);
        }
        master_adopt_orphans(m, now);
    }
    if (mosquitto_socket(p->mosq) >= 0 && mosquitto_want_write(p->mosq)) mosquitto_loop_write(p->mosq, 1);
    update_socket(m);
}

int master_presence_settled(master *m, int64_t now)
{
    struct master_presence *p = m->presence;
    if (!p) return 1;
    if (p->subacked_ns) return now - p->subacked_ns >= SETTLE_NS;
    /* No broker to ask: the workers retry on their own, and so does presence. */
    return p->failed || now - p->started_ns >= START_WAIT_NS;
}

/* 1 when pid on this host is a routemq master. */
static int local_master_alive(long pid)
{
    char path[64], cmd[64] = "";
    if (pid <= 0 || (kill((pid_t)pid, 0) && errno == ESRCH)) return 0;
    snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    size_t n = fread(cmd, 1, sizeof cmd - 1, f);
    fclose(f);
    cmd[n] = 0;
    return !strncmp(cmd, "routemq: master", 15);
}

int master_presence_conflict(master *m, char *why, size_t n)
{
    struct master_presence *p = m->presence;
    peer *e = p ? find_peer(p, p->instance) : NULL;
    if (!e) return 0;
    char state[32], host[256];
    presence_field_str(e->json, "state", state, sizeof state);
    presence_field_str(e->json, "host", host, sizeof host);
    long pid = presence_field_long(e->json, "pid");
    if (strcmp(state, "running")) return 0;
    if (!strcmp(host, p->host) && (pid == (long)m->pid || !local_master_alive(pid))) return 0;
    snprintf(why, n, "the identity %s is live on host %s (pid %ld) according to %s: its workers would take "
             "each other's sessions over. Give this instance its own ROUTEMQ_INSTANCE (or MQTT_CLIENT_ID), "
             "or stop the other one first", p->instance, host, pid, p->topic);
    return 1;
}

int master_presence_peer_serves(master *m, char *who, size_t n)
{
    struct master_presence *p = m->presence;
    if (!p) return 0;
    for (int i = 0; i < p->npeers; i++) {
        peer *e = &p->peers[i];
        char state[32];
        presence_field_str(e->json, "state", state, sizeof state);
        if (!strcmp(e->instance, p->instance) || strcmp(state, "running")) continue;
        int all = 1;
        for (int k = 0; all && m->app && k < m->app->def.nroutes; k++) {
            route_info *r = &m->app->def.routes[k];
            if (!r->shared) continue;
            strbuf q;
            sb_init(&q);
            sb_json_str(&q, r->sub);
            all = !q.oom && strstr(e->json, q.p) != NULL;
            sb_free(&q);
        }
        if (all) { snprintf(who, n, "%s", e->instance); return 1; }
    }
    return 0;
}

void master_presence_announce(master *m)
{
    struct master_presence *p = m->presence;
    if (!p) return;
    p->announced = 1;
    publish_record(m);
}

void master_presence_set_stopping(master *m, int sessions_kept)
{
    struct master_presence *p = m->presence;
    if (!p) return;
    p->sessions_kept = sessions_kept;
    p->since = time(NULL);
    /* Sessions ended: nothing is left for anyone to adopt, so no record. */
    p->state = sessions_kept ? "stopped" : "cleared";
    publish_record(m);
}

void master_presence_json(master *m, strbuf *out)
{
    struct master_presence *p = m->presence;
    sb_puts(out, "{\"group\":");
    sb_json_str(out, m->cfg->group_name);
    sb_printf(out, ",\"connected\":%s,\"instances\":[", p && p->connected ? "true" : "false");
    for (int i = 0; p && i < p->npeers; i++) {
        if (i) sb_puts(out, ",");
        sb_puts(out, p->peers[i].json);
    }
    sb_puts(out, "]}\n");
}

void master_presence_table(master *m, strbuf *out)
{
    struct master_presence *p = m->presence;
    sb_printf(out, "group %s (presence %s)\n", m->cfg->group_name, p && p->connected ? "connected" : "not connected");
    sb_printf(out, "%-40s %-20s %8s %-9s %s\n", "INSTANCE", "HOST", "PID", "STATE", "SINCE");
    for (int i = 0; p && i < p->npeers; i++) {
        char state[32], host[256], since[32] = "";
        presence_field_str(p->peers[i].json, "state", state, sizeof state);
        presence_field_str(p->peers[i].json, "host", host, sizeof host);
        time_t t = (time_t)presence_field_long(p->peers[i].json, "since");
        struct tm tm;
        if (gmtime_r(&t, &tm)) strftime(since, sizeof since, "%Y-%m-%dT%H:%M:%SZ", &tm);
        sb_printf(out, "%-40s %-20s %8ld %-9s %s\n", p->peers[i].instance, host, presence_field_long(p->peers[i].json, "pid"),
                  state, since);
    }
}

void master_presence_stop(master *m)
{
    struct master_presence *p = m->presence;
    if (!p) return;
    if (p->connected) {
        /* The loop is over; a short bounded wait is fine. First the broker
         * acknowledges the final record and stops sending us records: a
         * socket closed with unread data sends a reset, and the broker may
         * then drop our last packets and publish the will ("lost"). Then
         * the DISCONNECT, so that the will is discarded. */
        p->unsubacked = 0;
        mosquitto_unsubscribe(p->mosq, NULL, p->filter);
        int64_t until = shm_now_ns() + NS_PER_S;
        int disconnecting = 0;
        while (mosquitto_socket(p->mosq) >= 0 && shm_now_ns() < until) {
            if (!disconnecting && p->unsubacked && p->acked_mid == p->last_mid) {
                mosquitto_disconnect(p->mosq);
                disconnecting = 1;
            }
            struct pollfd pf = { .fd = mosquitto_socket(p->mosq),
                                 .events = POLLIN | (mosquitto_want_write(p->mosq) ? POLLOUT : 0) };
            if (poll(&pf, 1, 50) <= 0) continue;
            if (pf.revents & POLLOUT) mosquitto_loop_write(p->mosq, 1);
            if (mosquitto_socket(p->mosq) >= 0 && (pf.revents & (POLLIN | POLLHUP | POLLERR)))
                mosquitto_loop_read(p->mosq, 1);
        }
    }
    if (p->sock >= 0) epoll_ctl(m->epfd, EPOLL_CTL_DEL, p->sock, NULL);
    mosquitto_destroy(p->mosq);
    mosquitto_lib_cleanup();
    for (int i = 0; i < p->npeers; i++) { free(p->peers[i].instance); free(p->peers[i].json); }
    free(p->peers);
    free(p);
    m->presence = NULL;
}
