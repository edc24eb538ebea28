/* The master's supervision rules as pure functions: how long to wait before
 * restarting a worker, what a worker's death is called, and how many workers
 * an application gets. No process, clock or I/O in here, so
 * runtime/tests/test_policy.c checks them directly. */
#ifndef ROUTEMQ_MASTER_POLICY_H
#define ROUTEMQ_MASTER_POLICY_H

#include "master.h"

#define POLICY_HEALTHY_NS   NS_PER_S           /* lived this long: the backoff resets */
#define POLICY_BACKOFF_MIN_NS (100 * NS_PER_MS)

/* Why a worker ended, from what the master did to it (kill, stop) and its
 * wait status. */
restart_reason master_classify_death(kill_cause kill, stop_cause stop, int status);

/* The restart reason as people read it in the log ("watchdog: heartbeat",
 * "exit 3", "signal 9 (SIGKILL)"). */
void master_reason_text(restart_reason r, int status, char *out, size_t n);

/* "exit 3" or "signal 9 (SIGKILL)". */
void master_describe_status(int status, char *out, size_t n);

/* Delay before restarting a worker that ended for r after living `lived` ns:
 * 0 for the first death and for any after a healthy run; then 100 ms, 200 ms,
 * ... up to max_delay while it keeps dying young. Planned recycling is never
 * a crash loop. *quick_deaths is the slot's count of young deaths in a row. */
int64_t master_restart_delay(int *quick_deaths, restart_reason r, int64_t lived, int64_t max_delay);

/* How many workers an application gets, and the worker_count override that
 * every shared route is set to (0: as routed; applied to def).
 *   base_override: --workers / WORKER_COUNT (0: none)
 *   keep:          with auto-scale, the count the scaler chose and a reload keeps (0: none)
 *   nslots:        slots of the shared memory, the most there can be (0: no cap yet)
 * *wanted is the count before the nslots cap. */
int master_plan_workers(app_def *def, int base_override, const config *cfg, int keep, int nslots,
                        int *override, int *wanted);

/* Shared-memory slots to create at start for `workers` workers: room to scale
 * up to WORKER_MAX_COUNT and at least min_slots, never above SHM_MAX_SLOTS. */
int master_plan_slots(int workers, int max_count, int min_slots);

#endif
