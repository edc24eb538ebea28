/* Presence: the master's own MQTT connection and the group's retained
 * records routemq/presence/<group>/<instance> (master_presence.c, docs/deployment.md). */
#ifndef ROUTEMQ_MASTER_PRESENCE_H
#define ROUTEMQ_MASTER_PRESENCE_H

#include <stddef.h>
#include <stdint.h>
#include "strbuf.h"

struct master;

/* Creates the connection and starts connecting (never blocks); 0 or -1 (logged). */
int master_presence_start(struct master *m);
/* An epoll event on the presence socket (kind MEV_PRESENCE). */
void master_presence_event(struct master *m, uint32_t events);
/* Connect deadline, reconnects, keepalive, republishing when the worker count changed. */
void master_presence_tick(struct master *m, int64_t now);
/* 1 once the group's retained records have arrived, or the broker did not answer in time. */
int master_presence_settled(struct master *m, int64_t now);
/* 1 (reason in why) when this instance's identity is live elsewhere: do not start. */
int master_presence_conflict(struct master *m, char *why, size_t n);
/* Publishes this instance's record as running (after the conflict check) and keeps it so. */
void master_presence_announce(struct master *m);
/* 1 (its name in who) when another running instance serves every shared route of ours. */
int master_presence_peer_serves(struct master *m, char *who, size_t n);
/* The instance is stopping: the record says stopped (sessions kept) or is cleared (ended). */
void master_presence_set_stopping(struct master *m, int sessions_kept);
/* The group's records: JSON ({"group":..,"instances":[...]}) and a table for people. */
void master_presence_json(struct master *m, strbuf *out);
void master_presence_table(struct master *m, strbuf *out);
/* Sends what is pending, disconnects (no will) and frees everything. */
void master_presence_stop(struct master *m);
/* The adoption of instance's sessions ended: clears its record (master_adopt.c calls it). */
void master_presence_adopted(struct master *m, const char *instance);

/* master_adopt.c: the adoption workers, one per client id of an orphaned instance. */
/* Forks one adoption worker per client id; 0, or -1 when none could start. */
int master_adopt_start(struct master *m, const char *instance, char **clients, int n);
/* The same for the record with that seq; its workers stop, leaving the session as it
 * is, at a message none of routes[0..nroutes) matches (a stranger's session). */
int master_adopt_start_routes(struct master *m, const char *instance, long long seq, char **clients, int n,
                              char *const *routes, int nroutes);
/* routemq_adoptions_refused_total{reason}, in Prometheus text. */
void master_adopt_refused_metrics(const struct master *m, strbuf *b);
/* 1 while adoption workers of instance run. */
int master_adopt_running(const struct master *m, const char *instance);
/* 1 when pid was an adoption worker (its exit is accounted for here). */
int master_adopt_reaped(struct master *m, int pid, int status);
/* Adoption workers alive (the master's stop waits for them). */
int master_adopt_live(const struct master *m);
/* The instance stops: adoption workers leave their sessions (and the records) for another instance. */
void master_adopt_stop(struct master *m);
/* SIGKILLs every adoption worker (a stop at once). */
void master_adopt_kill_all(struct master *m);
/* Watchdog and delayed restarts of the adoption workers, on every tick. */
void master_adopt_watchdog(struct master *m, int64_t now);
/* Kills and reaps what is left and frees everything (the master exits). */
void master_adopt_teardown(struct master *m);
/* routemq_adopted_sessions_total and routemq_adopted_messages_total. */
void master_adopt_totals(const struct master *m, uint64_t *sessions, uint64_t *messages);


#endif
