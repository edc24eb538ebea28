/* Adoption of orphaned sessions (SPEC §8): for an instance that is lost, or
 * stopped with its sessions kept, and not back within ROUTEMQ_ADOPT_AFTER
 * (as the presence records of master_presence.c show), one live instance
 * forks one adoption worker per client id of the orphan. Each resumes that session, handles
 * what is queued through the application, and ends it (the retire path of
 * worker_mqtt.c). The workers live outside the slots: no restart, no
 * watchdog; each has its own small shared mapping for its counters. */
#include "master.h"
#include "keep_file.h"
#include "master_presence.h"
#include "master_presence_internal.h"
#include "log.h"
#include "worker.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct adopter {
    int pid;
    int slot;
    char client_id[600];
    char instance[600];
    shm_area *shm;
} adopter;

static adopter *adopters;
static int nadopters;
static uint64_t sessions_total, messages_total;

/* The slot number at the end of a client id (<instance>-<slot>), for the routes it held. */
static int slot_of_client(const char *id)
{
    const char *dash = strrchr(id, '-');
    return dash ? atoi(dash + 1) : 0;
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
        if (!(a->shm = shm_create(1))) { log_error("adoption of %s: out of memory", a->client_id); break; }
        a->pid = master_spawn_adopter(m, a->slot, a->client_id, &a->shm->slots[0]);
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
    /* Each orphan's client id has a keep of its own (keep_file_path). */
    char path[4200];
    keep_file_path(path, sizeof path, m->cfg->run_dir, a.slot, a.client_id);
    if (left)
        log_warn("the adoption worker of %s left %u message%s unfinished, kept in %s: the next adoption of %s "
                 "handles them first", a.client_id, left, left == 1 ? "" : "s", path, a.client_id);
    else
        unlink(path);
    shm_destroy(a.shm);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    messages_total += handled;
    if (code == WORKER_EXIT_OK) {
        sessions_total++;
        log_info("adopted the session of %s: %llu message%s handled, session ended", a.client_id,
                 (unsigned long long)handled, handled == 1 ? "" : "s");
    } else if (code != WORKER_EXIT_ADOPT_NONE) {
        log_warn("the adoption of %s ended early (%s %d) after %llu messages", a.client_id,
                 WIFEXITED(status) ? "exit" : "signal", WIFEXITED(status) ? code : WTERMSIG(status),
                 (unsigned long long)handled);
    }
    if (!master_adopt_running(a.instance)) master_presence_adopted(m, a.instance);
    return 1;
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

/* An orphan: lost, or stopped with its sessions kept. */
static int orphaned(const peer *e)
{
    char sessions[16];
    presence_field_str(e->json, "sessions", sessions, sizeof sessions);
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
        if (!strcmp(e->instance, p->instance) || !orphaned(e) || master_adopt_running(e->instance)) continue;
        if (now - e->state_seen_ns < (int64_t)m->cfg->adopt_after * NS_PER_S) continue;
        char **clients;
        int n = record_clients(e->json, &clients);
        char host[256];
        presence_field_str(e->json, "host", host, sizeof host);
        log_info("adopting the sessions of instance %s (host %s, %s for %lld s; ROUTEMQ_ADOPT_AFTER=%d): %d client id%s",
                 e->instance, host, e->state, (long long)((now - e->state_seen_ns) / NS_PER_S),
                 m->cfg->adopt_after, n, n == 1 ? "" : "s");
        /* Claim it first: the record says adopted until the sessions are ended. */
        strbuf b;
        sb_init(&b);
        sb_puts(&b, "{\"instance\":");
        sb_json_str(&b, e->instance);
        sb_puts(&b, ",\"host\":");
        sb_json_str(&b, host);
        sb_printf(&b, ",\"pid\":%ld,\"state\":\"adopted\",\"adopted_by\":", presence_field_long(e->json, "pid"));
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
