/* The application as C sees it: its route table, loaded through routemq.app,
 * and the plan of which worker slot subscribes to which route (docs/guide.md, "Which worker subscribes what"). */
#ifndef ROUTEMQ_APP_H
#define ROUTEMQ_APP_H

#include <stdio.h>
#include <stdint.h>
#include <lua.h>
#include "config.h"
#include "luavm.h"
#include "app_snapshot.h"

/* MQTT 5 subscription identifiers of routes (app_load): from the
 * subscription itself, in [APP_SUB_ID_MIN, APP_SUB_ID_MAX]. Below the range
 * are the position-based identifiers earlier versions used, so a message
 * the broker queued for one of those is never taken for a current route. */
#define APP_SUB_ID_MIN 65536
#define APP_SUB_ID_MAX 268435455

typedef struct route_info {
    int index;              /* 1-based, as in Lua */
    char *pattern, *filter, *sub, *group, *name, *source;
    int qos, shared, worker_count;
    int retain_handling;    /* MQTT 5 subscription option: 0 always, 1 new subscriptions only, 2 never */
    uint32_t sub_id;        /* MQTT 5 subscription identifier */
    double timeout;
    int ordered;            /* ordered = true: a topic's messages one after the other (also across retries) */
    int nwild;
    char **names;           /* per wildcard level, NULL for a raw + or # */
} route_info;

typedef struct app_def {
    int nroutes;
    route_info *routes;
    int *by_sub_id;         /* route indexes (1-based) sorted by sub_id (app_route_by_sub_id) */
    int app_ref;            /* registry ref of the Lua app table, LUA_NOREF in none */
    char *jobs_text;        /* timers, init and health functions, one line each, for people */
    app_snapshot *snap;     /* the code this table was loaded from (app_load_table), owned; NULL else */
} app_def;

/* Loads the application of cfg->app_dir into L (routemq.app.load) and fills
 * a: from app_snapshot_current() when this process has one (a worker), else
 * from disk. 0 ok; -1 with "file:line: reason" in err and the traceback in tb. */
int app_load(lua_State *L, const config *cfg, app_def *a, char *err, size_t errlen, char *tb, size_t tblen);
/* Reads the application's code once (a->snap) and loads it from that
 * snapshot in a fresh Lua state, closed again: only the C route table and
 * the snapshot stay (the master and the commands that just check). Same
 * results as app_load. */
int app_load_table(const luavm_paths *paths, const config *cfg, app_def *a, char *err, size_t errlen,
                   char *tb, size_t tblen);
/* Gives every route its subscription identifier (sub_id, from its
 * subscription: filter with share group, QoS, retain handling) and indexes
 * them (app_subid.c). 0, or -1 out of memory. */
int app_assign_sub_ids(app_def *a);
/* The route (1-based index) whose subscription identifier is id; 0 when no
 * route of this application has it. */
int app_route_by_sub_id(const app_def *a, uint32_t id);
/* With MQTT 3.1.1, logs once the routes whose retained = "new" the protocol
 * cannot give (they get retained messages at every subscribe). */
void app_note_protocol(const app_def *a, int protocol);
/* Releases the route table (not the Lua state). */
void app_free(app_def *a);
/* Worker planning, defined in master_policy.c with the other supervision rules. */
/* Sets every shared route's worker_count to n (--workers / WORKER_COUNT). */
void app_override_workers(app_def *a, int n);
/* P: the number of worker slots the application needs (at least 1). */
int app_slot_count(const app_def *a);
/* 1 when worker slot `slot` subscribes to route r. */
int app_slot_subscribes(const route_info *r, int slot);
/* Prints the route table for people (json = 0) or scripts (json = 1). */
void app_print_routes(const app_def *a, FILE *out, int json);

#endif
