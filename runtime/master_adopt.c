/* Adoption of orphaned sessions (docs/deployment.md): for an instance that is lost, or
 * stopped with its sessions kept, and not back within ROUTEMQ_ADOPT_AFTER
 * (as the presence records of master_presence.c show), one live instance
 * forks one adoption worker per client id of the orphan. Each resumes that session, handles
 * what is queued through the application, and ends it (the retire path of
 * worker_mqtt.c). The workers live outside the slots, each with its own
 * small shared mapping, but are supervised like them: the watchdog
 * (heartbeat, route timeouts), a restart with backoff when one dies. An
 * instance that stops while adopting leaves the sessions, and the record,
 * for another instance to adopt. */
#include "master.h"
#include "master_policy.h"
#include "keep_file.h"
#include "master_presence.h"
#include "master_presence_internal.h"
#include "log.h"
#include "worker.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct adopter {
    master_slot ms;          /* the process, as the watchdog and the restart see it */
    int slot;
    char client_id[600];
    char instance[600];
    char who[640];           /* "adoption worker of <client id>" for the log */
    shm_area *shm;
    long long seq;           /* of the orphan's record */
    uint64_t counted;        /* messages already added to messages_total */
    char **routes;           /* the routes the orphan's record declares (each respawn gets them) */
    int nroutes;
} adopter;

/* Records left alone for good (routemq_adoptions_refused_total{reason}):
 * one whose sessions are not the group's, or whose adopter met a stranger's
 * message. Each (instance, seq) is refused, logged and counted once. */
enum { REFUSED_CLIENT_ID, REFUSED_ROUTE, REFUSED_MESSAGE, REFUSED_REASONS };
_Static_assert(REFUSED_REASONS == MASTER_ADOPT_REFUSED_REASONS, "master_adopt_state.refused_total");
static const char *const refused_names[REFUSED_REASONS] = { "client_id", "route", "unexpected_message" };
struct adopt_refused { char *instance; long long seq; };

static int is_refused(const master_adopt_state *s, const char *instance, long long seq)
{
    for (int i = 0; i < s->nrefused; i++)
        if (s->refused[i].seq == seq && !strcmp(s->refused[i].instance, instance)) return 1;
    return 0;
}

#define REFUSED_MAX 1024  /* remembered; a flood of forged records forgets the oldest (logged again) */

static void refuse(master_adopt_state *s, const char *instance, long long seq, int reason)
{
    s->refused_total[reason]++;
    if (is_refused(s, instance, seq)) return;
    if (s->nrefused == REFUSED_MAX) {
        free(s->refused[0].instance);
        memmove(s->refused, s->refused + 1, (size_t)--s->nrefused * sizeof *s->refused);
    }
    struct adopt_refused *nr = realloc(s->refused, (size_t)(s->nrefused + 1) * sizeof *nr);
    if (!nr) return;
    s->refused = nr;
    if ((s->refused[s->nrefused].instance = strdup(instance))) s->refused[s->nrefused++].seq = seq;
}

static void leave(master *m, adopter *a);

/* The slot number at the end of a client id (<instance>-<slot>), for the routes it held. */
static int slot_of_client(const char *id)
{
    const char *dash = strrchr(id, '-');
    return dash ? atoi(dash + 1) : 0;
}

/* The adopter's own copy of the record's routes: the record may change or
 * go while the adoption (and its restarts) go on. 0, or -1 out of memory. */
static int copy_routes(adopter *a, char *const *routes, int nroutes)
{
    if (!routes) return 0;
    if (!(a->routes = calloc((size_t)nroutes + 1, sizeof *a->routes))) return -1;
    for (int i = 0; i < nroutes; i++) {
        if (!(a->routes[i] = strdup(routes[i]))) return -1;
        a->nroutes = i + 1;
    }
    return 0;
}

static void free_routes(adopter *a)
{
    for (int i = 0; a->routes && i < a->nroutes; i++) free(a->routes[i]);
    free(a->routes);
    a->routes = NULL;
    a->nroutes = 0;
}

static void write_list(strbuf *b, const char *name, char *const *v, int n)
{
    sb_printf(b, "\"%s\":[", name);
    for (int i = 0; i < n; i++) {
        if (i) sb_puts(b, ",");
        sb_json_str(b, v[i]);
    }
    sb_puts(b, "]");
}

/* "clients":[...],"shared_routes":[...],"routes":[...] of a record this
 * instance writes for an orphan (its claim, or its give-back). */
static void write_lists(strbuf *b, const presence_record *r, char *const *clients, int n)
{
    write_list(b, "clients", clients, n);
    sb_puts(b, ",");
    write_list(b, "shared_routes", r->shared_routes, r->nshared);
    sb_puts(b, ",");
    write_list(b, "routes", r->routes, r->nroutes);
}

static int spawn(master *m, adopter *a)
{
    int64_t now = shm_now_ns();
    a->ms.restart_at_ns = 0;
    a->ms.pid = master_spawn_adopter(m, a->slot, a->client_id, a->routes, a->nroutes, &a->shm->slots[0]);
    if (a->ms.pid <= 0) {
        a->ms.pid = 0;
        a->ms.restart_at_ns = now + NS_PER_S;
        return -1;
    }
    a->ms.generation++;
    a->ms.started_ns = now;
    a->ms.kill = KILL_NONE;
    a->ms.kill_detail[0] = 0;
    a->ms.stop = MSTOP_NONE;
    a->ms.stop_deadline_ns = 0;
    a->ms.busy_seen_ns = 0;
    master_app_unref(a->ms.app);
    a->ms.app = master_app_ref(m->app);
    return 0;
}

int master_adopt_start(master *m, const char *instance, char **clients, int n)
{
    return master_adopt_start_routes(m, instance, 0, clients, n, NULL, 0);
}

int master_adopt_start_routes(master *m, const char *instance, long long seq, char **clients, int n,
                              char *const *routes, int nroutes)
{
    master_adopt_state *s = &m->adopt;
    int started = 0;
    for (int i = 0; i < n; i++) {
        adopter *na = realloc(s->adopters, (size_t)(s->nadopters + 1) * sizeof *na);
        if (!na) break;
        s->adopters = na;
        adopter *a = &s->adopters[s->nadopters];
        memset(a, 0, sizeof *a);
        a->slot = slot_of_client(clients[i]);
        snprintf(a->client_id, sizeof a->client_id, "%s", clients[i]);
        snprintf(a->instance, sizeof a->instance, "%s", instance);
        a->seq = seq;
        snprintf(a->who, sizeof a->who, "adoption worker of %s", clients[i]);
        if (!(a->shm = shm_create(1))) { log_error("adoption of %s: out of memory", a->client_id); break; }
        /* No worker follows an adoption worker: it handles what it took before leaving. */
        atomic_store(&a->shm->slots[0].stopping_for_good, 1);
        if (copy_routes(a, routes, nroutes) || spawn(m, a)) {
            free_routes(a);
            shm_destroy(a->shm);
            continue;
        }
        s->nadopters++;
        started++;
    }
    return started ? 0 : -1;
}

int master_adopt_running(const master *m, const char *instance)
{
    const master_adopt_state *s = &m->adopt;
    for (int i = 0; i < s->nadopters; i++)
        if (!strcmp(s->adopters[i].instance, instance)) return 1;
    return 0;
}

int master_adopt_live(const master *m)
{
    const master_adopt_state *s = &m->adopt;
    int n = 0;
    for (int i = 0; i < s->nadopters; i++) n += s->adopters[i].ms.pid > 0;
    return n;
}

static peer *peer_of(master *m, const char *instance)
{
    struct master_presence *p = m->presence;
    for (int i = 0; p && i < p->npeers; i++)
        if (!strcmp(p->peers[i].instance, instance)) return &p->peers[i];
    return NULL;
}

/* The orphan is running again: its own workers take their sessions back. */
static int orphan_back(master *m, const char *instance)
{
    peer *e = peer_of(m, instance);
    return e && !strcmp(e->state, "running");
}

/* A death while a handler ran counts against its message, as in a slot
 * (master_reap.c): a message that kills adoption workers is dead-lettered
 * after ROUTEMQ_POISON_ATTEMPTS. */
static void record_death(master *m, adopter *a, int status)
{
    shm_slot *sh = &a->shm->slots[0];
    int on_cpu = atomic_load(&sh->handler_start_ns) ? atomic_load(&sh->handler_rec) : -1;
    if (on_cpu < 0 || a->ms.kill == KILL_STOP_TIMEOUT) return;
    if (!WIFSIGNALED(status) && WEXITSTATUS(status) == WORKER_EXIT_OK) return;
    char path[4200];
    keep_file_path(path, sizeof path, m->cfg->run_dir, a->slot, a->client_id);
    keep_map km;
    if (keep_file_map(&km, path)) return;
    shm_rec *r = (uint32_t)on_cpu < km.h->max_recs ? &km.rec[on_cpu] : NULL;
    if (r && atomic_load(&r->state) == REC_RUNNING) {
        r->attempts++;
        if (a->ms.kill == KILL_HANDLER_TIMEOUT && a->ms.kill_detail[0])
            snprintf(r->reason, sizeof r->reason, "%s", a->ms.kill_detail);
        else if (WIFSIGNALED(status))
            snprintf(r->reason, sizeof r->reason, "adoption worker killed by signal %d", WTERMSIG(status));
        else
            snprintf(r->reason, sizeof r->reason, "adoption worker exited with code %d", WEXITSTATUS(status));
        log_warn("%s died handling a message (attempt %u of %d): %s", a->who, r->attempts, m->cfg->poison_attempts,
                 r->reason);
    }
    keep_file_unmap(&km);
}

/* Forgets adopter k; clears the orphan's record once its last adopter ended
 * its session (not when the instance stops or the orphan came back). */
static void finish(master *m, int k, int clear)
{
    master_adopt_state *s = &m->adopt;
    adopter a = s->adopters[k];
    s->adopters[k] = s->adopters[--s->nadopters];
    uint32_t left = atomic_load(&a.shm->slots[0].kept);
    /* Each orphan's client id has a keep of its own (keep_file_path). */
    char path[4200];
    keep_file_path(path, sizeof path, m->cfg->run_dir, a.slot, a.client_id);
    if (left)
        log_warn("the adoption worker of %s left %u message%s unfinished, kept in %s: the next adoption of %s "
                 "handles them first", a.client_id, left, left == 1 ? "" : "s", path, a.client_id);
    else
        unlink(path);
    shm_destroy(a.shm);
    free_routes(&a);
    master_app_unref(a.ms.app);
    if (clear && !master_adopt_running(m, a.instance)) master_presence_adopted(m, a.instance);
}

int master_adopt_reaped(master *m, int pid, int status)
{
    master_adopt_state *s = &m->adopt;
    int k = -1;
    for (int i = 0; i < s->nadopters && k < 0; i++)
        if (s->adopters[i].ms.pid == pid) k = i;
    if (k < 0) return 0;
    adopter *a = &s->adopters[k];
    int64_t lived = shm_now_ns() - a->ms.started_ns;
    a->ms.pid = 0;
    uint64_t all = atomic_load(&a->shm->slots[0].messages);
    uint64_t handled = all - a->counted;
    a->counted = all;
    s->messages_total += handled;
    atomic_store(&a->shm->slots[0].pid, 0);
    atomic_store(&a->shm->slots[0].in_progress, 0);
    atomic_store(&a->shm->slots[0].connected, 0);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code == WORKER_EXIT_ADOPT_REFUSED) {
        /* The worker logged the message; its session is as it was. Our claim
         * ("adopted") stays on the record: nobody tries it again. */
        log_warn("suspicious presence record of instance %s: the session of %s holds messages outside the routes "
                 "the record declares; it is left untouched and the record is not tried again", a->instance,
                 a->client_id);
        refuse(s, a->instance, a->seq, REFUSED_MESSAGE);
        finish(m, k, 0);
        return 1;
    }
    if (code == WORKER_EXIT_OK) {
        s->sessions_total++;
        log_info("adopted the session of %s: %llu message%s handled, session ended", a->client_id,
                 (unsigned long long)all, all == 1 ? "" : "s");
        finish(m, k, !m->stopping);
        return 1;
    }
    if (code == WORKER_EXIT_ADOPT_NONE) { finish(m, k, !m->stopping); return 1; }
    if (orphan_back(m, a->instance)) {
        log_info("the adoption of %s ended after %llu messages: instance %s is back and resumes its session",
                 a->client_id, (unsigned long long)all, a->instance);
        finish(m, k, 0);
        return 1;
    }
    if (m->stopping) {
        /* Our record leaves the group; the orphan's says adopted by us, which
         * another instance takes as an orphan again (master_adopt_orphans). */
        log_info("left the adoption of %s after %llu messages: this instance stops, its session stays for "
                 "another instance to adopt", a->client_id, (unsigned long long)all);
        finish(m, k, 0);
        return 1;
    }
    record_death(m, a, status);
    char why[96];
    restart_reason r = master_classify_death(a->ms.kill, a->ms.stop, status);
    master_reason_text(r, status, why, sizeof why);
    if (code == WORKER_EXIT_SESSION_KEPT) snprintf(why, sizeof why, "left its session");
    int64_t delay = master_restart_delay(&a->ms.quick_deaths, r, lived, m->restart_max_delay_ns);
    a->ms.restarts++;
    log_warn("%s (pid %d) ended: %s after %llu messages; restarting it%s", a->who, pid, why, (unsigned long long)all,
             delay ? " with backoff" : "");
    if (delay) a->ms.restart_at_ns = shm_now_ns() + delay;
    else spawn(m, a);
    return 1;
}

void master_adopt_watchdog(master *m, int64_t now)
{
    master_adopt_state *s = &m->adopt;
    for (int i = 0; i < s->nadopters; i++) {
        adopter *a = &s->adopters[i];
        if (a->ms.pid > 0) {
            /* The orphan is back (its record says running before its workers
             * connect): its adoption workers leave before they would take
             * the sessions back after a takeover (they reconnect after 0.5 s). */
            if (!m->stopping && a->ms.stop == MSTOP_NONE && orphan_back(m, a->instance)) {
                log_info("instance %s is back: the adoption worker of %s leaves the session to it", a->instance,
                         a->client_id);
                leave(m, a);
            }
            master_watchdog_process(m, &a->ms, &a->shm->slots[0], a->who, now);
        } else if (a->ms.restart_at_ns && now >= a->ms.restart_at_ns && !m->stopping) {
            if (!orphan_back(m, a->instance)) { spawn(m, a); continue; }
            log_info("the adoption of %s ends: instance %s is back and resumes its session", a->client_id, a->instance);
            finish(m, i--, 0);
        }
    }
}

/* Tells adoption worker a to leave its session (the instance stops, or the orphan is back). */
static void leave(master *m, adopter *a)
{
    if (a->ms.pid <= 0 || a->ms.stop != MSTOP_NONE) return;
    atomic_store(&a->shm->slots[0].stop_signal_ns, shm_now_ns());
    if (kill(a->ms.pid, SIGTERM) && errno != ESRCH) return;
    a->ms.stop = MSTOP_SHUTDOWN;
    a->ms.stop_deadline_ns = shm_now_ns() + (int64_t)(m->cfg->stop_timeout * NS_PER_S);
}

/* The record of an orphan this instance leaves unfinished says lost again
 * (with its client ids), so that another instance adopts it after
 * ROUTEMQ_ADOPT_AFTER, by which time our adoption workers have left (they
 * have WORKER_STOP_TIMEOUT): never two adopters at once. */
static void give_back(master *m, const char *instance)
{
    struct master_presence *p = m->presence;
    const master_adopt_state *s = &m->adopt;
    peer *e = peer_of(m, instance);
    if (!p || !p->connected) return;
    char **clients = calloc((size_t)s->nadopters + 1, sizeof *clients);
    const adopter *first = NULL;
    int n = 0;
    for (int i = 0; clients && i < s->nadopters; i++) {
        if (strcmp(s->adopters[i].instance, instance)) continue;
        if (!first) first = &s->adopters[i];
        clients[n++] = s->adopters[i].client_id;
    }
    if (!clients || !first) { free(clients); return; }
    /* Our claim's seq is the orphan's + 1 (its echo may be in e already): this one supersedes it. */
    long long seq = first->seq + 1;
    if (e && e->json && e->rec.seq > seq) seq = e->rec.seq;
    presence_record routes = { 0 };
    routes.routes = first->routes;
    routes.nroutes = first->nroutes;
    strbuf b;
    sb_init(&b);
    sb_puts(&b, "{\"instance\":");
    sb_json_str(&b, instance);
    sb_puts(&b, ",\"host\":");
    sb_json_str(&b, e && e->json && e->rec.host ? e->rec.host : "");
    sb_puts(&b, ",\"group\":");
    sb_json_str(&b, m->cfg->group_name);
    sb_printf(&b, ",\"pid\":%lld,", e && e->json ? e->rec.pid : 0LL);
    write_lists(&b, e && e->json ? &e->rec : &routes, clients, n);
    sb_puts(&b, ",\"state\":\"lost\",\"sessions\":\"kept\",\"left_by\":");
    sb_json_str(&b, p->instance);
    sb_printf(&b, ",\"since\":%lld", (long long)time(NULL));
    presence_seal(m, &b, seq + 1);
    free(clients);
    char topic[1200];
    snprintf(topic, sizeof topic, "routemq/presence/%s/%s", m->cfg->group_name, instance);
    if (!b.oom) mosquitto_publish(p->mosq, &p->last_mid, topic, (int)b.len, b.p, 1, true);
    sb_free(&b);
    log_info("this instance stops during the adoption of instance %s: its record says lost again, for another "
             "instance to adopt the rest after ROUTEMQ_ADOPT_AFTER", instance);
}

void master_adopt_stop(master *m)
{
    master_adopt_state *s = &m->adopt;
    for (int i = 0; i < s->nadopters; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = !strcmp(s->adopters[j].instance, s->adopters[i].instance);
        if (!seen) give_back(m, s->adopters[i].instance);
    }
    for (int i = 0; i < s->nadopters;) {
        adopter *a = &s->adopters[i];
        if (a->ms.pid > 0) { leave(m, a); i++; continue; }
        log_info("left the adoption of %s: this instance stops, its session stays for another instance to adopt",
                 a->client_id);
        finish(m, i, 0);  /* waiting for its restart: nothing runs */
    }
}

void master_adopt_kill_all(master *m)
{
    master_adopt_state *s = &m->adopt;
    for (int i = 0; i < s->nadopters; i++) {
        adopter *a = &s->adopters[i];
        if (a->ms.pid <= 0 || a->ms.kill != KILL_NONE) continue;
        kill(a->ms.pid, SIGKILL);
        a->ms.kill = KILL_ALL;
    }
}

void master_adopt_teardown(master *m)
{
    master_adopt_state *s = &m->adopt;
    while (s->nadopters) {
        adopter *a = &s->adopters[0];
        if (a->ms.pid > 0) {
            kill(a->ms.pid, SIGKILL);
            while (waitpid(a->ms.pid, NULL, 0) < 0 && errno == EINTR) {}
            a->ms.pid = 0;
        }
        finish(m, 0, 0);
    }
    free(s->adopters);
    s->adopters = NULL;
    for (int i = 0; i < s->nrefused; i++) free(s->refused[i].instance);
    free(s->refused);
    s->refused = NULL;
    s->nrefused = 0;
}

void master_adopt_totals(const master *m, uint64_t *sessions, uint64_t *messages)
{
    *sessions = m->adopt.sessions_total;
    *messages = m->adopt.messages_total;
}

void master_adopt_refused_metrics(const master *m, strbuf *b)
{
    sb_puts(b, "# HELP routemq_adoptions_refused_total Orphaned sessions left alone: client ids or routes not the "
               "group's, or a message outside the record's routes.\n# TYPE routemq_adoptions_refused_total counter\n");
    for (int i = 0; i < REFUSED_REASONS; i++)
        sb_printf(b, "routemq_adoptions_refused_total{reason=\"%s\"} %llu\n", refused_names[i],
                  (unsigned long long)m->adopt.refused_total[i]);
}

/* Whether e is to be adopted now (presence_peer_adopt): lost, or stopped
 * with its sessions kept, for ROUTEMQ_ADOPT_AFTER; or adopted by an instance
 * that has since been lost (or stopped) itself for ROUTEMQ_ADOPT_AFTER,
 * leaving the rest of the sessions. */
static presence_adopt orphaned(master *m, const peer *e, int64_t now)
{
    if (!e->json) return PRESENCE_ADOPT_NOT;
    const peer *a = peer_of(m, e->rec.adopted_by ? e->rec.adopted_by : "");
    return presence_peer_adopt(e->state, e->rec.sessions, e->state_seen_ns, a ? a->state : NULL,
                               a ? a->state_seen_ns : 0, now, (int64_t)m->cfg->adopt_after * NS_PER_S);
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
        if (!is_refused(&m->adopt, r->instance, r->seq)) {
            char t[LOG_TOPIC_BUF];
            log_warn("not adopting the sessions of instance %s (client id %s is not one of the group's: "
                     "%s-<instance>-<slot>)", e->instance, log_topic(t, sizeof t, bad, strlen(bad)), m->cfg->client_id);
            refuse(&m->adopt, r->instance, r->seq, REFUSED_CLIENT_ID);
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
        if (!is_refused(&m->adopt, r->instance, r->seq)) {
            char t[LOG_TOPIC_BUF];
            log_warn("not adopting the sessions of instance %s (route %s is not one this application serves)",
                     e->instance, log_topic(t, sizeof t, route, strlen(route)));
            refuse(&m->adopt, r->instance, r->seq, REFUSED_ROUTE);
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
        if (!strcmp(e->instance, p->instance) || master_adopt_running(m, e->instance)) continue;
        presence_adopt why = orphaned(m, e, now);
        if (why == PRESENCE_ADOPT_NOT) continue;
        int readopt = why == PRESENCE_ADOPT_LEFT;
        if (is_refused(&m->adopt, e->instance, e->rec.seq) || !adoptable(m, e)) continue;
        char **clients = e->rec.clients;
        int n = e->rec.nclients;
        const char *host = e->rec.host ? e->rec.host : "";
        long long seq = e->rec.seq;
        if (readopt)
            log_info("adopting the sessions of instance %s (host %s, left by %s, which is no longer running): "
                     "%d client id%s", e->instance, host, e->rec.adopted_by, n, n == 1 ? "" : "s");
        else
            log_info("adopting the sessions of instance %s (host %s, %s for %lld s; ROUTEMQ_ADOPT_AFTER=%d): %d "
                     "client id%s", e->instance, host, e->state, (long long)((now - e->state_seen_ns) / NS_PER_S),
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
        sb_printf(&b, ",\"pid\":%lld,", e->rec.pid);
        /* The client ids and routes stay in the claim: if this instance
         * stops before the sessions are ended, the next adopter needs them. */
        write_lists(&b, &e->rec, clients, n);
        sb_puts(&b, ",\"state\":\"adopted\",\"adopted_by\":");
        sb_json_str(&b, p->instance);
        sb_printf(&b, ",\"since\":%lld", (long long)time(NULL));
        presence_seal(m, &b, seq + 1);
        char topic[1200];
        snprintf(topic, sizeof topic, "routemq/presence/%s/%s", m->cfg->group_name, e->instance);
        if (!b.oom) mosquitto_publish(p->mosq, NULL, topic, (int)b.len, b.p, 1, true);
        sb_free(&b);
        presence_peer_set_state(e->state, &e->state_seen_ns, "adopted", now);
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
