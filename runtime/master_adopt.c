/* Adoption of orphaned sessions (SPEC §8): for an instance that is lost, or
 * stopped with its sessions kept, and not back within ROUTEMQ_ADOPT_AFTER
 * (as the presence records of master_presence.c show), one live instance
 * forks one adoption worker per client id of the orphan. Each resumes that session, handles
 * what is queued through the application, and ends it (the retire path of
 * worker_mqtt.c). The workers live outside the slots: no restart, no
 * watchdog; each has its own small shared mapping for its counters. */
#include "master.h"
#include "master_presence.h"
#include "master_presence_internal.h"
#include "log.h"
#include "worker.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>

typedef struct adopter {
    int pid;
    int slot;
    char client_id[600];
    char instance[600];
    shm_area *shm;
    long long seq;            /* of the orphan's record */
} adopter;

static adopter *adopters;
static int nadopters;
static uint64_t sessions_total, messages_total;

/* Records left alone for good (routemq_adoptions_refused_total{reason}):
 * one whose sessions are not the group's, or whose adopter met a stranger's
 * message. Each (instance, seq) is refused, logged and counted once. */
enum { REFUSED_CLIENT_ID, REFUSED_ROUTE, REFUSED_MESSAGE, REFUSED_REASONS };
static const char *const refused_names[REFUSED_REASONS] = { "client_id", "route", "unexpected_message" };
static uint64_t refused_total[REFUSED_REASONS];
static struct refused { char *instance; long long seq; } *refused;
static int nrefused;

static int is_refused(const char *instance, long long seq)
{
    for (int i = 0; i < nrefused; i++)
        if (refused[i].seq == seq && !strcmp(refused[i].instance, instance)) return 1;
    return 0;
}

#define REFUSED_MAX 1024  /* remembered; a flood of forged records forgets the oldest (logged again) */

static void refuse(const char *instance, long long seq, int reason)
{
    refused_total[reason]++;
    if (is_refused(instance, seq)) return;
    if (nrefused == REFUSED_MAX) {
        free(refused[0].instance);
        memmove(refused, refused + 1, (size_t)--nrefused * sizeof *refused);
    }
    struct refused *nr = realloc(refused, (size_t)(nrefused + 1) * sizeof *nr);
    if (!nr) return;
    refused = nr;
    if ((refused[nrefused].instance = strdup(instance))) refused[nrefused++].seq = seq;
}

/* The slot number at the end of a client id (<instance>-<slot>), for the routes it held. */
static int slot_of_client(const char *id)
{
    const char *dash = strrchr(id, '-');
    return dash ? atoi(dash + 1) : 0;
}

int master_adopt_start(master *m, const char *instance, char **clients, int n)
{
    return master_adopt_start_routes(m, instance, 0, clients, n, NULL, 0);
}

int master_adopt_start_routes(master *m, const char *instance, long long seq, char **clients, int n,
                              char *const *routes, int nroutes)
{
    int started = 0;
    for (int i = 0; i < n; i++) {
        adopter *na = realloc(adopters, (size_t)(nadopters + 1) * sizeof *na);
        if (!na) break;
        adopters = na;
        adopter *a = &adopters[nadopters];
        memset(a, 0, sizeof *a);
        a->slot = slot_of_client(clients[i]);
        snprintf(a->client_id, sizeof a->client_id, "%s", clients[i]);
        snprintf(a->instance, sizeof a->instance, "%s", instance);
        a->seq = seq;
        if (!(a->shm = shm_create(1))) { log_error("adoption of %s: out of memory", a->client_id); break; }
        a->pid = master_spawn_adopter(m, a->slot, a->client_id, routes, nroutes, &a->shm->slots[0]);
        if (a->pid <= 0) { shm_destroy(a->shm); continue; }
        nadopters++;
        started++;
    }
    return started ? 0 : -1;
}

int master_adopt_running(const char *instance)
{
    for (int i = 0; i < nadopters; i++)
        if (!strcmp(adopters[i].instance, instance)) return 1;
    return 0;
}

int master_adopt_reaped(master *m, int pid, int status)
{
    int k = -1;
    for (int i = 0; i < nadopters && k < 0; i++)
        if (adopters[i].pid == pid) k = i;
    if (k < 0) return 0;
    adopter a = adopters[k];
    adopters[k] = adopters[--nadopters];
    uint64_t handled = atomic_load(&a.shm->slots[0].messages);
    uint32_t left = atomic_load(&a.shm->slots[0].kept);
    if (left)
        log_warn("the adoption worker of %s left %u message%s unfinished; nobody can handle them now", a.client_id,
                 left, left == 1 ? "" : "s");
    shm_keep_unlink_all(&a.shm->slots[0].keep, (int)m->pid, SHM_ADOPT_SLOT_BASE + a.slot);
    shm_destroy(a.shm);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    messages_total += handled;
    if (code == WORKER_EXIT_ADOPT_REFUSED) {
        /* The worker logged the message; its session is as it was. */
        log_warn("suspicious presence record of instance %s: the session of %s holds messages outside the routes "
                 "the record declares; it is left untouched and the record is not tried again", a.instance,
                 a.client_id);
        refuse(a.instance, a.seq, REFUSED_MESSAGE);
    } else if (code == WORKER_EXIT_OK) {
        sessions_total++;
        log_info("adopted the session of %s: %llu message%s handled, session ended", a.client_id,
                 (unsigned long long)handled, handled == 1 ? "" : "s");
    } else if (code != WORKER_EXIT_ADOPT_NONE) {
        log_warn("the adoption of %s ended early (%s %d) after %llu messages", a.client_id,
                 WIFEXITED(status) ? "exit" : "signal", WIFEXITED(status) ? code : WTERMSIG(status),
                 (unsigned long long)handled);
    }
    /* A refused record keeps our claim ("adopted"): nobody tries it again. */
    if (!master_adopt_running(a.instance) && !is_refused(a.instance, a.seq)) master_presence_adopted(m, a.instance);
    return 1;
}

void master_adopt_totals(uint64_t *sessions, uint64_t *messages)
{
    *sessions = sessions_total;
    *messages = messages_total;
}

void master_adopt_refused_metrics(strbuf *b)
{
    sb_puts(b, "# HELP routemq_adoptions_refused_total Orphaned sessions left alone: client ids or routes not the "
               "group's, or a message outside the record's routes.\n# TYPE routemq_adoptions_refused_total counter\n");
    for (int i = 0; i < REFUSED_REASONS; i++)
        sb_printf(b, "routemq_adoptions_refused_total{reason=\"%s\"} %llu\n", refused_names[i],
                  (unsigned long long)refused_total[i]);
}

/* An orphan: lost, or stopped with its sessions kept. */
static int orphaned(const peer *e)
{
    const char *sessions = e->rec.sessions ? e->rec.sessions : "";
    return e->json && (!strcmp(e->state, "lost") || (!strcmp(e->state, "stopped") && !strcmp(sessions, "kept")));
}

/* 1 when id is <instance>-<slot>: a slot number, no sign, no leading zero. */
static int slot_client_id(const char *id, const char *instance)
{
    size_t n = strlen(instance);
    if (strncmp(id, instance, n) || id[n] != '-') return 0;
    const char *d = id + n + 1;
    if (!*d || (d[0] == '0' && d[1]) || strlen(d) > 4) return 0;
    for (; *d; d++)
        if (*d < '0' || *d > '9') return 0;
    return 1;
}

/* Without a cluster key anyone who may publish under routemq/presence/ can
 * write a record: adopt only what this group's instances own by construction
 * (client ids <MQTT_CLIENT_ID>-<instance>-<slot>, routes this application
 * serves). 1 when e passes; else 0, logged and counted once. */
static int adoptable(master *m, const peer *e)
{
    struct master_presence *p = m->presence;
    if (p->nkeys) return 1;  /* a valid MAC: written by a holder of the group's key */
    const presence_record *r = &e->rec;
    size_t n = strlen(m->cfg->client_id);
    const char *bad = NULL;
    if (strncmp(r->instance, m->cfg->client_id, n) || r->instance[n] != '-' || !r->instance[n + 1])
        bad = r->nclients ? r->clients[0] : r->instance;
    for (int i = 0; !bad && i < r->nclients; i++)
        if (!slot_client_id(r->clients[i], r->instance)) bad = r->clients[i];
    if (bad) {
        if (!is_refused(r->instance, r->seq)) {
            char t[LOG_TOPIC_BUF];
            log_warn("not adopting the sessions of instance %s (client id %s is not one of the group's: "
                     "%s-<instance>-<slot>)", e->instance, log_topic(t, sizeof t, bad, strlen(bad)), m->cfg->client_id);
            refuse(r->instance, r->seq, REFUSED_CLIENT_ID);
        }
        return 0;
    }
    const char *route = NULL;
    for (int i = 0; !route && i < r->nshared + r->nroutes; i++) {
        const char *want = i < r->nshared ? r->shared_routes[i] : r->routes[i - r->nshared];
        int served = 0;
        for (int k = 0; !served && m->app && k < m->app->def.nroutes; k++) served = !strcmp(m->app->def.routes[k].sub, want);
        if (!served) route = want;
    }
    if (route) {
        if (!is_refused(r->instance, r->seq)) {
            char t[LOG_TOPIC_BUF];
            log_warn("not adopting the sessions of instance %s (route %s is not one this application serves)",
                     e->instance, log_topic(t, sizeof t, route, strlen(route)));
            refuse(r->instance, r->seq, REFUSED_ROUTE);
        }
        return 0;
    }
    return 1;
}

/* Once a second: the orphans not back within ROUTEMQ_ADOPT_AFTER are adopted
 * by one live instance, the running one with the smallest name (every
 * instance sees the same records, so they agree; if two ever disagree, the
 * broker's client id takeover leaves one connection per session). */
void master_adopt_orphans(master *m, int64_t now)
{
    struct master_presence *p = m->presence;
    if (!p->announced || !p->connected || m->stopping || m->cfg->adopt_after <= 0) return;
    for (int i = 0; i < p->npeers; i++)
        if (!strcmp(p->peers[i].state, "running") && strcmp(p->peers[i].instance, p->instance) < 0) return;
    for (int i = 0; i < p->npeers; i++) {
        peer *e = &p->peers[i];
        if (!strcmp(e->instance, p->instance) || !orphaned(e) || master_adopt_running(e->instance)) continue;
        if (now - e->state_seen_ns < (int64_t)m->cfg->adopt_after * NS_PER_S) continue;
        if (is_refused(e->instance, e->rec.seq) || !adoptable(m, e)) continue;
        char **clients = e->rec.clients;
        int n = e->rec.nclients;
        const char *host = e->rec.host ? e->rec.host : "";
        long long seq = e->rec.seq;
        log_info("adopting the sessions of instance %s (host %s, %s for %lld s; ROUTEMQ_ADOPT_AFTER=%d): %d client id%s",
                 e->instance, host, e->state, (long long)((now - e->state_seen_ns) / NS_PER_S),
                 m->cfg->adopt_after, n, n == 1 ? "" : "s");
        /* Claim it first: the record says adopted until the sessions are
         * ended; its seq follows the orphan's, so it supersedes it. */
        strbuf b;
        sb_init(&b);
        sb_puts(&b, "{\"instance\":");
        sb_json_str(&b, e->instance);
        sb_puts(&b, ",\"host\":");
        sb_json_str(&b, host);
        sb_puts(&b, ",\"group\":");
        sb_json_str(&b, m->cfg->group_name);
        sb_printf(&b, ",\"pid\":%lld,\"state\":\"adopted\",\"adopted_by\":", e->rec.pid);
        sb_json_str(&b, p->instance);
        sb_printf(&b, ",\"since\":%lld", (long long)time(NULL));
        presence_seal(m, &b, seq + 1);
        char topic[1200];
        snprintf(topic, sizeof topic, "routemq/presence/%s/%s", m->cfg->group_name, e->instance);
        if (!b.oom) mosquitto_publish(p->mosq, NULL, topic, (int)b.len, b.p, 1, true);
        sb_free(&b);
        snprintf(e->state, sizeof e->state, "adopted");
        e->state_seen_ns = now;
        /* The adopters accept only messages of the routes the record declares. */
        int nr = e->rec.nshared + e->rec.nroutes;
        char **routes = malloc((size_t)(nr + 1) * sizeof *routes);
        for (int k = 0; routes && k < nr; k++)
            routes[k] = k < e->rec.nshared ? e->rec.shared_routes[k] : e->rec.routes[k - e->rec.nshared];
        if (n == 0 || !routes || master_adopt_start_routes(m, e->instance, seq, clients, n, routes, nr))
            master_presence_adopted(m, e->instance);
        free(routes);
    }
}

void master_presence_adopted(master *m, const char *instance)
{
    struct master_presence *p = m->presence;
    if (!p) return;
    char topic[1200];
    snprintf(topic, sizeof topic, "routemq/presence/%s/%s", m->cfg->group_name, instance);
    mosquitto_publish(p->mosq, NULL, topic, 0, NULL, 1, true);
    log_info("the sessions of instance %s are adopted and ended; its presence record is cleared", instance);
}
