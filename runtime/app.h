/* The application as C sees it: its route table, loaded through routemq.app,
 * and the plan of which worker slot subscribes to which route (docs/guide.md, "Which worker subscribes what"). */
#ifndef ROUTEMQ_APP_H
#define ROUTEMQ_APP_H

#include <stdio.h>
#include <lua.h>
#include "config.h"
#include "luavm.h"
#include "app_snapshot.h"

typedef struct route_info {
    int index;              /* 1-based, as in Lua */
    char *pattern, *filter, *sub, *group, *name, *source;
    int qos, shared, worker_count;
    double timeout;
    int nwild;
    char **names;           /* per wildcard level, NULL for a raw + or # */
} route_info;

typedef struct app_def {
    int nroutes;
    route_info *routes;
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
