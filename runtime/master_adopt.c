/* Adoption of orphaned sessions (SPEC §8): for an instance that is lost, or
 * stopped with its sessions kept, and not back within ROUTEMQ_ADOPT_AFTER,
 * the chosen live instance (master_presence.c decides) forks one adoption
 * worker per client id of the orphan. Each resumes that session, handles
 * what is queued through the application, and ends it (the retire path of
 * worker_mqtt.c). The workers live outside the slots: no restart, no
 * watchdog; each has its own small shared mapping for its counters. */
#include "master.h"
#include "master_presence.h"
#include "log.h"
#include "worker.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

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
