/* Adoption of orphaned sessions (SPEC §8): for an instance that is lost, or
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

typedef struct adopter {
    master_slot ms;          /* the process, as the watchdog and the restart see it */
    int slot;
    char client_id[600];
    char instance[600];
    char who[640];           /* "adoption worker of <client id>" for the log */
    shm_area *shm;
    uint64_t counted;        /* messages already added to messages_total */
} adopter;

static adopter *adopters;
static int nadopters;
static uint64_t sessions_total, messages_total;

static void leave(master *m, adopter *a);

/* The slot number at the end of a client id (<instance>-<slot>), for the routes it held. */
static int slot_of_client(const char *id)
{
    const char *dash = strrchr(id, '-');
    return dash ? atoi(dash + 1) : 0;
}

static int spawn(master *m, adopter *a)
{
    int64_t now = shm_now_ns();
    a->ms.restart_at_ns = 0;
    a->ms.pid = master_spawn_adopter(m, a->slot, a->client_id, &a->shm->slots[0]);
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
        snprintf(a->who, sizeof a->who, "adoption worker of %s", clients[i]);
        if (!(a->shm = shm_create(1))) { log_error("adoption of %s: out of memory", a->client_id); break; }
        /* No worker follows an adoption worker: it handles what it took before leaving. */
        atomic_store(&a->shm->slots[0].stopping_for_good, 1);
        if (spawn(m, a)) { shm_destroy(a->shm); continue; }
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

int master_adopt_live(void)
{
    int n = 0;
    for (int i = 0; i < nadopters; i++) n += adopters[i].ms.pid > 0;
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
    if (on_cpu < 0 || on_cpu >= SHM_RECS || a->ms.kill == KILL_STOP_TIMEOUT) return;
    if (!WIFSIGNALED(status) && WEXITSTATUS(status) == WORKER_EXIT_OK) return;
    shm_rec *r = &sh->keep.rec[on_cpu];
    if (atomic_load(&r->state) != REC_RUNNING) return;
    r->attempts++;
    if (a->ms.kill == KILL_HANDLER_TIMEOUT && a->ms.kill_detail[0]) snprintf(r->reason, sizeof r->reason, "%s", a->ms.kill_detail);
    else if (WIFSIGNALED(status)) snprintf(r->reason, sizeof r->reason, "adoption worker killed by signal %d", WTERMSIG(status));
    else snprintf(r->reason, sizeof r->reason, "adoption worker exited with code %d", WEXITSTATUS(status));
    log_warn("%s died handling a message (attempt %u of %d): %s", a->who, r->attempts, m->cfg->poison_attempts,
             r->reason);
}

/* Forgets adopter k; clears the orphan's record once its last adopter ended
 * its session (not when the instance stops or the orphan came back). */
static void finish(master *m, int k, int clear)
{
    adopter a = adopters[k];
    adopters[k] = adopters[--nadopters];
    uint32_t left = atomic_load(&a.shm->slots[0].kept);
    if (left)
        log_warn("the adoption worker of %s left %u message%s unfinished; nobody can handle them now", a.client_id,
                 left, left == 1 ? "" : "s");
    shm_keep_unlink_all(&a.shm->slots[0].keep, (int)m->pid, SHM_ADOPT_SLOT_BASE + a.slot);
    shm_destroy(a.shm);
    master_app_unref(a.ms.app);
    if (clear && !master_adopt_running(a.instance)) master_presence_adopted(m, a.instance);
}

int master_adopt_reaped(master *m, int pid, int status)
{
    int k = -1;
    for (int i = 0; i < nadopters && k < 0; i++)
        if (adopters[i].ms.pid == pid) k = i;
    if (k < 0) return 0;
    adopter *a = &adopters[k];
    int64_t lived = shm_now_ns() - a->ms.started_ns;
    a->ms.pid = 0;
    uint64_t all = atomic_load(&a->shm->slots[0].messages);
    uint64_t handled = all - a->counted;
    a->counted = all;
    messages_total += handled;
    atomic_store(&a->shm->slots[0].pid, 0);
    atomic_store(&a->shm->slots[0].in_progress, 0);
    atomic_store(&a->shm->slots[0].connected, 0);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code == WORKER_EXIT_OK) {
        sessions_total++;
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
    for (int i = 0; i < nadopters; i++) {
        adopter *a = &adopters[i];
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
    peer *e = peer_of(m, instance);
    if (!p || !p->connected) return;
    char host[256];
    presence_field_str(e ? e->json : NULL, "host", host, sizeof host);
    strbuf b;
    sb_init(&b);
    sb_puts(&b, "{\"instance\":");
    sb_json_str(&b, instance);
    sb_puts(&b, ",\"host\":");
    sb_json_str(&b, host);
    sb_printf(&b, ",\"pid\":%ld,\"clients\":[", presence_field_long(e ? e->json : NULL, "pid"));
    int first = 1;
    for (int i = 0; i < nadopters; i++) {
        if (strcmp(adopters[i].instance, instance)) continue;
        if (!first) sb_puts(&b, ",");
        first = 0;
        sb_json_str(&b, adopters[i].client_id);
    }
    sb_puts(&b, "],\"state\":\"lost\",\"sessions\":\"kept\",\"left_by\":");
    sb_json_str(&b, p->instance);
    sb_printf(&b, ",\"since\":%lld}", (long long)time(NULL));
    char topic[1200];
    snprintf(topic, sizeof topic, "routemq/presence/%s/%s", m->cfg->group_name, instance);
    if (!b.oom) mosquitto_publish(p->mosq, &p->last_mid, topic, (int)b.len, b.p, 1, true);
    sb_free(&b);
    log_info("this instance stops during the adoption of instance %s: its record says lost again, for another "
             "instance to adopt the rest after ROUTEMQ_ADOPT_AFTER", instance);
}

void master_adopt_stop(master *m)
{
    for (int i = 0; i < nadopters; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = !strcmp(adopters[j].instance, adopters[i].instance);
        if (!seen) give_back(m, adopters[i].instance);
    }
    for (int i = 0; i < nadopters;) {
        adopter *a = &adopters[i];
        if (a->ms.pid > 0) { leave(m, a); i++; continue; }
        log_info("left the adoption of %s: this instance stops, its session stays for another instance to adopt",
                 a->client_id);
        finish(m, i, 0);  /* waiting for its restart: nothing runs */
    }
}

void master_adopt_kill_all(master *m)
{
    for (int i = 0; i < nadopters; i++) {
        adopter *a = &adopters[i];
        if (a->ms.pid <= 0 || a->ms.kill != KILL_NONE) continue;
        kill(a->ms.pid, SIGKILL);
        a->ms.kill = KILL_ALL;
    }
}

void master_adopt_teardown(master *m)
{
    while (nadopters) {
        adopter *a = &adopters[0];
        if (a->ms.pid > 0) {
            kill(a->ms.pid, SIGKILL);
            while (waitpid(a->ms.pid, NULL, 0) < 0 && errno == EINTR) {}
            a->ms.pid = 0;
        }
        finish(m, 0, 0);
    }
    free(adopters);
    adopters = NULL;
}

void master_adopt_totals(uint64_t *sessions, uint64_t *messages)
{
    *sessions = sessions_total;
    *messages = messages_total;
}

/* The client ids listed in a record; returns how many (free with free_list). */
static int record_clients(const char *json, char ***out)
{
    *out = NULL;
    const char *s = strstr(json, "\"clients\":[");
    if (!s) return 0;
    s += 11;
    int n = 0;
    char **list = NULL;
    while (*s && *s != ']') {
        if (*s != '"') { s++; continue; }
        const char *end = strchr(s + 1, '"');
        if (!end) break;
        char **nl = realloc(list, (size_t)(n + 1) * sizeof *nl);
        if (!nl) break;
        list = nl;
        if (!(list[n] = strndup(s + 1, (size_t)(end - s - 1)))) break;
        n++;
        s = end + 1;
    }
    *out = list;
    return n;
}

static void free_list(char **l, int n)
{
    for (int i = 0; i < n; i++) free(l[i]);
    free(l);
}

/* An orphan: lost, or stopped with its sessions kept; or adopted by an
 * instance that has since been lost (or stopped) itself for
 * ROUTEMQ_ADOPT_AFTER, leaving the rest of the sessions. */
static int orphaned(master *m, const peer *e, int64_t now)
{
    char sessions[16];
    presence_field_str(e->json, "sessions", sessions, sizeof sessions);
    if (!strcmp(e->state, "adopted")) {
        char by[600];
        presence_field_str(e->json, "adopted_by", by, sizeof by);
        /* A graceful stop gives the record back (give_back); this is for an
         * adopter that was lost in the middle. */
        const peer *a = peer_of(m, by);
        return a && strcmp(a->state, "running") && now - a->state_seen_ns >= (int64_t)m->cfg->adopt_after * NS_PER_S;
    }
    return !strcmp(e->state, "lost") || (!strcmp(e->state, "stopped") && !strcmp(sessions, "kept"));
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
        if (!strcmp(e->instance, p->instance) || !orphaned(m, e, now) || master_adopt_running(e->instance)) continue;
        int readopt = !strcmp(e->state, "adopted");
        if (!readopt && now - e->state_seen_ns < (int64_t)m->cfg->adopt_after * NS_PER_S) continue;
        char **clients;
        int n = record_clients(e->json, &clients);
        char host[256];
        presence_field_str(e->json, "host", host, sizeof host);
        if (readopt) {
            char by[600];
            presence_field_str(e->json, "adopted_by", by, sizeof by);
            log_info("adopting the sessions of instance %s (host %s, left by %s, which is no longer running): "
                     "%d client id%s", e->instance, host, by, n, n == 1 ? "" : "s");
        } else {
            log_info("adopting the sessions of instance %s (host %s, %s for %lld s; ROUTEMQ_ADOPT_AFTER=%d): %d "
                     "client id%s", e->instance, host, e->state, (long long)((now - e->state_seen_ns) / NS_PER_S),
                     m->cfg->adopt_after, n, n == 1 ? "" : "s");
        }
        /* Claim it first: the record says adopted until the sessions are ended. */
        strbuf b;
        sb_init(&b);
        sb_puts(&b, "{\"instance\":");
        sb_json_str(&b, e->instance);
        sb_puts(&b, ",\"host\":");
        sb_json_str(&b, host);
        sb_printf(&b, ",\"pid\":%ld,\"clients\":[", presence_field_long(e->json, "pid"));
        /* The client ids stay in the claim: if this instance stops before
         * the sessions are ended, the next adopter needs them. */
        for (int k = 0; k < n; k++) {
            if (k) sb_puts(&b, ",");
            sb_json_str(&b, clients[k]);
        }
        sb_puts(&b, "],\"state\":\"adopted\",\"adopted_by\":");
        sb_json_str(&b, p->instance);
        sb_printf(&b, ",\"since\":%lld}", (long long)time(NULL));
        char topic[1200];
        snprintf(topic, sizeof topic, "routemq/presence/%s/%s", m->cfg->group_name, e->instance);
        if (!b.oom) mosquitto_publish(p->mosq, NULL, topic, (int)b.len, b.p, 1, true);
        sb_free(&b);
        snprintf(e->state, sizeof e->state, "adopted");
        e->state_seen_ns = now;
        if (n == 0 || master_adopt_start(m, e->instance, clients, n)) master_presence_adopted(m, e->instance);
        free_list(clients, n);
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
