/* Presence (docs/deployment.md): the master's own light MQTT connection, never the
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
#include "backoff.h"
#include "mqtt_client.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
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

void presence_seal(master *m, strbuf *b, long long seq)
{
    struct master_presence *p = m->presence;
    sb_printf(b, ",\"seq\":%lld", seq);
    if (p->nkeys && !b->oom) {
        /* The MAC covers every byte before ,"mac": the record as written. */
        char sig[PRESENCE_SIGS_LEN];
        presence_sign_all(p->keys, p->nkeys, b->p, b->len, sig);
        sb_printf(b, ",\"mac\":\"%s\"", sig);
    }
    sb_puts(b, "}");
}

/* seq of the next record of this connection: <epoch ms><3 digits>, the
 * will's (PRESENCE_SEQ_WILL) above them all. */
static long long next_seq(struct master_presence *p, int will)
{
    if (will) return p->epoch_ms * 1000 + PRESENCE_SEQ_WILL;
    if (p->seq_n < PRESENCE_SEQ_WILL - 1) p->seq_n++;
    return p->epoch_ms * 1000 + p->seq_n;
}

/* The record of this instance in the given state. */
static void record_json(master *m, const char *state, strbuf *b, long long seq)
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
    /* The other routes too: an adopter accepts only messages of the routes a record declares. */
    sb_puts(b, "],\"routes\":[");
    first = 1;
    for (int i = 0; m->app && i < m->app->def.nroutes; i++) {
        route_info *r = &m->app->def.routes[i];
        if (r->shared) continue;
        if (!first) sb_puts(b, ",");
        first = 0;
        sb_json_str(b, r->sub);
    }
    sb_printf(b, "],\"workers\":%d,\"session_expiry\":%d,\"state\":\"%s\",\"sessions\":\"%s\",\"since\":%lld",
              m->P, m->cfg->session_expiry, state, p->sessions_kept ? "kept" : "ended", (long long)p->since);
    presence_seal(m, b, seq);
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
        record_json(m, p->state, &b, next_seq(p, 0));
        if (!b.oom) mosquitto_publish(p->mosq, &p->last_mid, p->topic, (int)b.len, b.p, 1, true);
        presence_record r;
        char err[256];
        if (!b.oom && presence_record_parse(b.p, b.len, &r, err, sizeof err))
            log_warn("presence: the group cannot read this instance's record (%s); it ignores it", err);
        else if (!b.oom) presence_record_free(&r);
    }
    sb_free(&b);
    p->published_p = m->P;
    p->published_gen = m->app_generation;
}

/* Kept for callers that hold only the bytes: every field goes through the one parser. */
void presence_field_str(const char *json, const char *key, char *out, size_t n)
{
    presence_record r;
    out[0] = 0;
    if (!json || presence_record_parse(json, strlen(json), &r, NULL, 0)) return;
    const char *names[] = { "instance", "host", "version", "group", "state", "sessions", "adopted_by" };
    const char *vals[] = { r.instance, r.host, r.version, r.group, r.state, r.sessions, r.adopted_by };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(key, names[i]) && vals[i]) snprintf(out, n, "%s", vals[i]);
    presence_record_free(&r);
}

long presence_field_long(const char *json, const char *key)
{
    presence_record r;
    if (!json || presence_record_parse(json, strlen(json), &r, NULL, 0)) return 0;
    long long v = !strcmp(key, "pid") ? r.pid : !strcmp(key, "workers") ? r.workers : !strcmp(key, "since") ? r.since
                : !strcmp(key, "session_expiry") ? r.session_expiry : !strcmp(key, "seq") ? r.seq : 0;
    presence_record_free(&r);
    return (long)v;
}

/* Records refused are logged once a minute per topic: a client that
 * republishes one in a loop must not flood the log. */
static void log_ignored(struct master_presence *p, const char *topic, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void log_ignored(struct master_presence *p, const char *topic, const char *fmt, ...)
{
    presence_ignored *seen = p->ignored;
    uint64_t h = 1469598103934665603ull;
    for (const char *c = topic; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
    int64_t now = shm_now_ns();
    int k = 0;
    for (int i = 0; i < PRESENCE_IGNORED_TOPICS; i++) {
        if (seen[i].hash == h) { k = i; break; }
        if (seen[i].at < seen[k].at) k = i;
    }
    if (seen[k].hash == h && now - seen[k].at < 60 * NS_PER_S) return;
    seen[k].hash = h;
    seen[k].at = now;
    char why[400], t[LOG_TOPIC_BUF];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    log_warn("presence: ignoring the record on %s: %s", log_topic(t, sizeof t, topic, strlen(topic)), why);
}

static void peer_clear(peer *e)
{
    free(e->json);
    e->json = NULL;
    presence_record_free(&e->rec);
}

static peer *find_peer(struct master_presence *p, const char *instance)
{
    for (int i = 0; i < p->npeers; i++)
        if (!strcmp(p->peers[i].instance, instance)) return &p->peers[i];
    return NULL;
}

/* Our own topic holds a record we did not publish on this connection (a
 * replay, a forgery, a retained one of an earlier connection): ours goes
 * out again at the next tick (at most once a second), so the broker keeps
 * the right one. seq -1: not a record we can believe at all. The echoes of
 * this connection's records are newer, so this never loops. */
static void own_overwritten(master *m, const char *inst, long long seq)
{
    struct master_presence *p = m->presence;
    if (strcmp(inst, p->instance) || !p->announced || !strcmp(p->state, "cleared") || seq >= p->epoch_ms * 1000) return;
    p->republish = 1;
}

/* A record is believed only if it parses (presence_record_parse), names the
 * instance of its topic and our group, carries a MAC by one of our keys when
 * we have keys, and is not older than one already seen (a replay). Anything
 * else is ignored for every decision and logged. */
static void on_message(struct mosquitto *mosq, void *ud, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    master *m = ud;
    struct master_presence *p = m->presence;
    const char *inst = strrchr(msg->topic, '/');
    if (!inst || !inst[1]) return;
    inst++;
    peer *e = find_peer(p, inst);
    if (msg->payloadlen == 0) {  /* cleared: the seq seen stays, against replays */
        if (!e) return;
        peer_clear(e);
        /* A change of state like any other: an adoption left by this
         * instance waits ROUTEMQ_ADOPT_AFTER from now, not from when its
         * record last changed (that would be at once). */
        presence_peer_set_state(e->state, &e->state_seen_ns, "", shm_now_ns());
        return;
    }
    presence_record r;
    char err[256];
    const char *why = NULL;
    if (presence_record_parse(msg->payload, (size_t)msg->payloadlen, &r, err, sizeof err)) {
        log_ignored(p, msg->topic, "not a presence record (%s)", err);
        own_overwritten(m, inst, -1);
        return;
    }
    if (strcmp(r.instance, inst) || (r.group && strcmp(r.group, m->cfg->group_name))) {
        log_ignored(p, msg->topic, "it is the record of %s%s%s, not of this topic", r.instance, r.group ? " in group " : "",
                    r.group ? r.group : "");
        own_overwritten(m, inst, -1);
        presence_record_free(&r);
        return;
    }
    if (p->nkeys && !presence_verify(p->keys, p->nkeys, msg->payload, &r, &why)) {
        if (r.nmacs) log_ignored(p, msg->topic, "%s (key id %s%s%s; ours: %s%s%s)", why, r.kid[0], r.nmacs > 1 ? ", " : "",
                                 r.nmacs > 1 ? r.kid[1] : "", p->keys[0].kid, p->nkeys > 1 ? ", " : "",
                                 p->nkeys > 1 ? p->keys[1].kid : "");
        else log_ignored(p, msg->topic, "it is not signed, and ROUTEMQ_CLUSTER_KEY is set");
        own_overwritten(m, inst, -1);
        presence_record_free(&r);
        return;
    }
    if (e && r.seq < e->seq) {
        /* A record of this very process from its previous presence connection
         * may come after the new one's echo: not worth a warning. */
        if (!strcmp(inst, p->instance) && r.pid == (long long)m->pid)
            log_debug("presence: our record of an earlier connection came back on %s; ours goes out again", p->topic);
        else
            log_ignored(p, msg->topic, "a replay: seq %lld is older than %lld, seen already", r.seq, e->seq);
        own_overwritten(m, inst, r.seq);
        presence_record_free(&r);
        return;
    }
    char *json = strndup(msg->payload, (size_t)msg->payloadlen);
    if (!json) { presence_record_free(&r); return; }
    if (!e) {
        peer *np = realloc(p->peers, (size_t)(p->npeers + 1) * sizeof *np);
        char *name = strdup(inst);
        if (!np || !name) { free(json); free(name); presence_record_free(&r); if (np) p->peers = np; return; }
        p->peers = np;
        e = &p->peers[p->npeers++];
        memset(e, 0, sizeof *e);
        e->instance = name;
    }
    free(e->json);
    presence_record_free(&e->rec);
    e->json = json;
    e->rec = r;
    e->seq = r.seq;
    presence_peer_set_state(e->state, &e->state_seen_ns, r.state, shm_now_ns());
    own_overwritten(m, inst, e->rec.seq);
}

static void on_connect(struct mosquitto *mosq, void *ud, int rc, int flags, const mosquitto_property *props)
{
    master *m = ud;
    struct master_presence *p = m->presence;
    p->connect_started_ns = 0;
    if (rc) {
        log_warn("presence: the broker %s refused the connection: %s", mqtt_client_broker(m->cfg),
                 m->cfg->protocol == 5 ? mosquitto_reason_string(rc) : mosquitto_connack_string(rc));
        return;
    }
    p->connected = 1;
    p->retry_delay = m->cfg->retry_min_delay;
    mosquitto_subscribe(mosq, NULL, p->filter, 1);
    publish_record(m);
    log_debug("presence: connected to %s as %s", mqtt_client_broker(m->cfg), p->client_id);
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
    double d = backoff_next(&p->retry_delay, m->cfg->retry_min_delay, m->cfg->retry_max_delay);
    p->next_connect_ns = shm_now_ns() + (int64_t)(d * NS_PER_S);
}

static void on_disconnect(struct mosquitto *mosq, void *ud, int rc, const mosquitto_property *props)
{
    master *m = ud;
    struct master_presence *p = m->presence;
    if (p->connected && !m->stopping && !p->refreshing)
        log_warn("presence: lost the connection to %s", mqtt_client_broker(m->cfg));
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
    record_json(m, "lost", &b, next_seq(p, 1));
    if (!b.oom) mosquitto_will_set(p->mosq, p->topic, (int)b.len, b.p, 1, true);
    p->will_p = m->P;
    p->will_gen = m->app_generation;
    sb_free(&b);
}

static void connect_now(master *m)
{
    struct master_presence *p = m->presence;
    p->next_connect_ns = 0;
    /* A new connection, a new will: its records sort after every earlier one. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    p->epoch_ms = ms > p->epoch_ms ? ms : p->epoch_ms + 1;
    p->seq_n = 0;
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
    if (c->cluster_key) {
        presence_key_init(&p->keys[p->nkeys++], c->cluster_key, strlen(c->cluster_key));
        if (c->cluster_key_previous)
            presence_key_init(&p->keys[p->nkeys++], c->cluster_key_previous, strlen(c->cluster_key_previous));
        log_info("presence: records are signed with key id %s%s%s; records without a valid MAC by one of them are ignored",
                 p->keys[0].kid, p->nkeys > 1 ? ", key id " : "", p->nkeys > 1 ? p->keys[1].kid : "");
    } else {
        log_info("presence: no ROUTEMQ_CLUSTER_KEY, so adoption trusts the broker's ACLs on routemq/presence/%s/+: "
                 "only sessions named like this group's (%s-<instance>-<slot>) are ever adopted", c->group_name,
                 c->client_id);
    }
    connect_now(m);
    return 0;
}

static void update_socket(master *m)
{
    struct master_presence *p = m->presence;
    int fd = mosquitto_socket(p->mosq);
    int events = EPOLLIN | (fd >= 0 && mosquitto_want_write(p->mosq) ? EPOLLOUT : 0);
    mqtt_client_sync_epoll(m->epfd, fd, (uint32_t)events, (epoll_data_t){ .u64 = MEV(MEV_PRESENCE, 0) }, &p->sock,
                           &p->sock_events);
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
        /* The will must list the slots' client ids too, and the routes (an
         * adopter accepts only messages of the routes the will declares);
         * MQTT sets it only at CONNECT. The new connection publishes the
         * record too. */
        if (p->connected && p->announced && (p->will_p < m->P || p->will_gen != m->app_generation) && !m->stopping &&
            !p->refreshing) {
            p->refreshing = 1;
            mosquitto_disconnect(p->mosq);
        } else if (p->connected &&
                   (p->republish || p->published_p != m->P || p->published_gen != m->app_generation)) {
            /* Scaling and reloads change the slots and the shared routes of the record. */
            p->republish = 0;
            publish_record(m);
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
    if (!e || !e->json) return 0;
    char host[256];
    snprintf(host, sizeof host, "%s", e->rec.host ? e->rec.host : "");
    long pid = (long)e->rec.pid;
    if (strcmp(e->state, "running")) return 0;
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
        if (!e->json || !strcmp(e->instance, p->instance) || strcmp(e->state, "running")) continue;
        int all = 1;
        for (int k = 0; all && m->app && k < m->app->def.nroutes; k++) {
            route_info *r = &m->app->def.routes[k];
            if (!r->shared) continue;
            all = 0;
            for (int j = 0; !all && j < e->rec.nshared; j++) all = !strcmp(e->rec.shared_routes[j], r->sub);
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
    int first = 1;
    for (int i = 0; p && i < p->npeers; i++) {
        if (!p->peers[i].json) continue;
        if (!first) sb_puts(out, ",");
        first = 0;
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
        const presence_record *r = &p->peers[i].rec;
        if (!p->peers[i].json) continue;
        char since[32] = "";
        time_t t = (time_t)r->since;
        struct tm tm;
        if (gmtime_r(&t, &tm)) strftime(since, sizeof since, "%Y-%m-%dT%H:%M:%SZ", &tm);
        sb_printf(out, "%-40s %-20s %8lld %-9s %s\n", p->peers[i].instance, r->host ? r->host : "", r->pid, r->state,
                  since);
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
    for (int i = 0; i < p->npeers; i++) {
        peer_clear(&p->peers[i]);
        free(p->peers[i].instance);
    }
    free(p->peers);
    free(p);
    m->presence = NULL;
}
