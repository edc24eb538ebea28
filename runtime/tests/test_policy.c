/* Unit tests for the supervision rules (master_policy.c): restart delay and
 * backoff, death classification, worker planning. */
#include "test_util.h"
#include "master_policy.h"

#include <signal.h>
#include <string.h>

#define MS NS_PER_MS
#define S NS_PER_S

/* Wait statuses as waitpid reports them. */
static int exited(int code) { return (code & 0xff) << 8; }
static int killed(int sig) { return sig & 0x7f; }

static void test_backoff(void)
{
    int q = 0;
    int64_t max = 30 * S;
    /* First death: at once; then 100 ms doubling while it keeps dying young. */
    int64_t want[] = { 0, 100 * MS, 200 * MS, 400 * MS, 800 * MS, 1600 * MS, 3200 * MS, 6400 * MS,
                       12800 * MS, 25600 * MS, 30 * S, 30 * S, 30 * S };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        int64_t d = master_restart_delay(&q, RESTART_EXIT, 10 * MS, max);
        CHECK(d == want[i], "death %zu: delay %lld ms, want %lld ms", i + 1, (long long)(d / MS),
              (long long)(want[i] / MS));
    }
    CHECK(q == 13, "quick deaths counted: %d", q);
    /* A healthy run (1 s) resets it: the next death restarts at once. */
    CHECK(master_restart_delay(&q, RESTART_SIGNAL, S, max) == 0, "after a healthy run");
    CHECK(q == 0, "reset: %d", q);
    CHECK(master_restart_delay(&q, RESTART_SIGNAL, S - 1, max) == 0, "first young death after reset");
    CHECK(master_restart_delay(&q, RESTART_SIGNAL, 0, max) == 100 * MS, "second young death");
    /* Recycling is planned: never a crash loop, and it resets the count. */
    q = 5;
    CHECK(master_restart_delay(&q, RESTART_RECYCLE, 0, max) == 0 && q == 0, "recycle");
    q = 5;
    CHECK(master_restart_delay(&q, RESTART_RECYCLE_MEMORY, 0, max) == 0 && q == 0, "recycle memory");
    /* A worker that cannot load its application backs off like any crash. */
    q = 1;
    CHECK(master_restart_delay(&q, RESTART_APP_ERROR, 0, max) == 100 * MS, "app_error backs off");
    /* The cap is WORKER_RESTART_MAX_DELAY, even below the first step. */
    q = 1;
    CHECK(master_restart_delay(&q, RESTART_EXIT, 0, 50 * MS) == 50 * MS, "cap below 100 ms");
    q = 1000;
    CHECK(master_restart_delay(&q, RESTART_EXIT, 0, max) == max, "no overflow after many deaths");
}

static void test_classify(void)
{
    struct { kill_cause kill; stop_cause stop; int status; restart_reason want; const char *name; } c[] = {
        { KILL_NONE, MSTOP_NONE, exited(1), RESTART_EXIT, "exit" },
        { KILL_NONE, MSTOP_NONE, exited(0), RESTART_EXIT, "exit" },
        { KILL_NONE, MSTOP_NONE, killed(SIGSEGV), RESTART_SIGNAL, "signal" },
        { KILL_NONE, MSTOP_NONE, killed(SIGKILL), RESTART_SIGNAL, "signal" },
        { KILL_HANDLER_TIMEOUT, MSTOP_NONE, killed(SIGKILL), RESTART_HANDLER_TIMEOUT, "handler_timeout" },
        { KILL_HEARTBEAT, MSTOP_NONE, killed(SIGKILL), RESTART_HEARTBEAT, "heartbeat" },
        { KILL_STARTUP, MSTOP_NONE, killed(SIGKILL), RESTART_STARTUP, "startup" },
        { KILL_NONE, MSTOP_NONE, exited(WORKER_EXIT_RECYCLE), RESTART_RECYCLE, "recycle" },
        { KILL_NONE, MSTOP_RECYCLE_MEMORY, exited(0), RESTART_RECYCLE_MEMORY, "recycle_memory" },
        { KILL_NONE, MSTOP_RECYCLE_MEMORY, killed(SIGKILL), RESTART_RECYCLE_MEMORY, "recycle_memory" },
        { KILL_NONE, MSTOP_NONE, exited(WORKER_EXIT_APP), RESTART_APP_ERROR, "app_error" },
        /* The watchdog's kill explains the death even if the worker also asked to recycle. */
        { KILL_HEARTBEAT, MSTOP_NONE, exited(WORKER_EXIT_RECYCLE), RESTART_HEARTBEAT, "heartbeat" },
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        restart_reason r = master_classify_death(c[i].kill, c[i].stop, c[i].status);
        CHECK(r == c[i].want, "case %zu: reason %d, want %d", i, r, c[i].want);
        CHECK(!strcmp(master_restart_reason_name(r), c[i].name), "case %zu: name %s, want %s", i,
              master_restart_reason_name(r), c[i].name);
    }
    CHECK(!strcmp(master_restart_reason_name(RESTART_NREASONS), "unknown"), "out of range");
    char t[96];
    master_reason_text(RESTART_EXIT, exited(3), t, sizeof t);
    CHECK(!strcmp(t, "exit 3"), "text: %s", t);
    master_reason_text(RESTART_SIGNAL, killed(SIGKILL), t, sizeof t);
    CHECK(!strcmp(t, "signal 9 (SIGKILL)"), "text: %s", t);
    master_reason_text(RESTART_HEARTBEAT, killed(SIGKILL), t, sizeof t);
    CHECK(!strcmp(t, "watchdog: heartbeat"), "text: %s", t);
    master_reason_text(RESTART_APP_ERROR, exited(WORKER_EXIT_APP), t, sizeof t);
    CHECK(!strncmp(t, "app_error", 9), "text: %s", t);
}

/* A route table: shared routes with these worker counts, plus one non-shared route. */
static app_def table(route_info *r, const int *counts, int n)
{
    memset(r, 0, sizeof *r * (size_t)(n + 1));
    for (int i = 0; i < n; i++) r[i] = (route_info){ .index = i + 1, .shared = 1, .worker_count = counts[i] };
    r[n] = (route_info){ .index = n + 1, .shared = 0, .worker_count = 1 };
    return (app_def){ .nroutes = n + 1, .routes = r };
}

static void test_planning(void)
{
    route_info r[4];
    config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.min_count = 1;
    cfg.max_count = 8;
    int ov, wanted;

    /* The routes decide: the largest worker_count of the shared routes. */
    app_def d = table(r, (int[]){ 2, 3 }, 2);
    CHECK(master_plan_workers(&d, 0, &cfg, 0, 0, &ov, &wanted) == 3 && ov == 0, "as routed: ov %d", ov);
    CHECK(r[0].worker_count == 2 && r[1].worker_count == 3, "routes untouched without override");
    CHECK(app_slot_subscribes(&r[0], 1) && !app_slot_subscribes(&r[0], 2), "slot 2 skips a 2-worker route");
    CHECK(app_slot_subscribes(&r[2], 0) && !app_slot_subscribes(&r[2], 1), "non-shared: slot 0 only");

    /* No shared route: one worker. */
    app_def none = { .nroutes = 0, .routes = NULL };
    CHECK(master_plan_workers(&none, 0, &cfg, 0, 0, &ov, &wanted) == 1, "no routes: one worker");

    /* --workers / WORKER_COUNT set every shared route. */
    d = table(r, (int[]){ 2, 3 }, 2);
    CHECK(master_plan_workers(&d, 5, &cfg, 0, 0, &ov, &wanted) == 5 && ov == 5, "override 5: ov %d", ov);
    CHECK(r[0].worker_count == 5 && r[1].worker_count == 5 && r[2].worker_count == 1, "override applied");

    /* Auto-scale clamps to WORKER_MIN_COUNT..WORKER_MAX_COUNT. */
    cfg.auto_scale = 1;
    cfg.min_count = 2;
    cfg.max_count = 4;
    d = table(r, (int[]){ 1 }, 1);
    CHECK(master_plan_workers(&d, 0, &cfg, 0, 0, &ov, &wanted) == 2 && ov == 2, "raised to min: ov %d", ov);
    d = table(r, (int[]){ 9 }, 1);
    CHECK(master_plan_workers(&d, 0, &cfg, 0, 0, &ov, &wanted) == 4 && ov == 4, "cut to max: ov %d", ov);
    d = table(r, (int[]){ 3 }, 1);
    CHECK(master_plan_workers(&d, 0, &cfg, 0, 0, &ov, &wanted) == 3 && ov == 0, "within bounds: as routed");
    /* A reload keeps the count the scaler chose. */
    d = table(r, (int[]){ 2 }, 1);
    CHECK(master_plan_workers(&d, 0, &cfg, 3, 0, &ov, &wanted) == 3 && ov == 3, "reload keeps 3: ov %d", ov);
    d = table(r, (int[]){ 2 }, 1);
    CHECK(master_plan_workers(&d, 0, &cfg, 7, 0, &ov, &wanted) == 4, "kept count still clamped");
    /* Without auto-scale a reload takes the routes' counts (SIGTTIN adjustments drop). */
    cfg.auto_scale = 0;
    d = table(r, (int[]){ 2 }, 1);
    CHECK(master_plan_workers(&d, 0, &cfg, 3, 0, &ov, &wanted) == 2 && ov == 0, "no auto-scale: as routed");

    /* The slots of the shared memory cap a reload. */
    d = table(r, (int[]){ 80 }, 1);
    int p = master_plan_workers(&d, 0, &cfg, 0, 64, &ov, &wanted);
    CHECK(p == 64 && ov == 64 && wanted == 80 && r[0].worker_count == 64, "capped: p %d ov %d wanted %d", p, ov,
          wanted);

    /* Slots at start: room to scale. */
    CHECK(master_plan_slots(3, 8, 64) == 64, "at least the minimum");
    CHECK(master_plan_slots(100, 8, 64) == 100, "as many as the workers");
    CHECK(master_plan_slots(3, 200, 64) == 200, "up to WORKER_MAX_COUNT");
    CHECK(master_plan_slots(3, 100000, 64) == SHM_MAX_SLOTS, "never above SHM_MAX_SLOTS");
}

int main(void)
{
    test_backoff();
    test_classify();
    test_planning();
    return TEST_SUMMARY("test_policy");
}
