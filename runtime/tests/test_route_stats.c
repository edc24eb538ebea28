/* Unit tests for route_stats: every route of a large application gets its own
 * counters, the same pattern keeps its entry across binds (a new worker, a
 * reload), and what no longer fits goes to the one "_other" entry. */
#include "test_util.h"
#include "../route_stats.c"

#include <stdlib.h>

static app_def make_app(int n, const char *fmt)
{
    app_def a = { .nroutes = n, .routes = calloc((size_t)n, sizeof(route_info)) };
    for (int i = 0; i < n; i++) {
        a.routes[i].index = i + 1;
        if (asprintf(&a.routes[i].pattern, fmt, i + 1) < 0) abort();
    }
    return a;
}

static void free_app(app_def *a)
{
    for (int i = 0; i < a->nroutes; i++) free(a->routes[i].pattern);
    free(a->routes);
}

int main(void)
{
    shm_slot *sh = calloc(1, sizeof *sh);
    static int16_t map[SHM_ROUTE_STATS + 1];
    app_def a = make_app(20000, "r/%d/{x}");
    CHECK(route_stats_bind_app(sh, &a, map, SHM_ROUTE_STATS + 1) == 0, "20000 routes fit");
    CHECK(map[20000] == 19999 && !strcmp(sh->route_stats[map[20000]].pattern, "r/20000/{x}"),
          "last route: %d", map[20000]);
    CHECK(map[0] == -1 && map[20001] == -1, "unused indexes unbound");
    /* The next worker of the slot finds the same entries. */
    CHECK(route_stats_bind_app(sh, &a, map, SHM_ROUTE_STATS + 1) == 0, "rebind");
    CHECK(atomic_load(&sh->nroute_stats) == 20000 && map[1] == 0, "no new entries: %u", atomic_load(&sh->nroute_stats));
    /* A reload with 20000 other patterns: 12766 fit, the rest share "_other". */
    app_def b = make_app(20000, "s/%d/{y}");
    CHECK(route_stats_bind_app(sh, &b, map, SHM_ROUTE_STATS + 1) == 20000 - (SHM_ROUTE_TABLE - 1 - 20000),
          "missed routes");
    CHECK(atomic_load(&sh->nroute_stats) == SHM_ROUTE_TABLE, "table full");
    CHECK(map[12766] == SHM_ROUTE_TABLE - 2 && map[12767] == SHM_ROUTE_TABLE - 1 && map[20000] == SHM_ROUTE_TABLE - 1,
          "overflow to _other: %d %d", map[12766], map[12767]);
    CHECK(!strcmp(sh->route_stats[SHM_ROUTE_TABLE - 1].pattern, SHM_ROUTE_OTHER), "_other entry");
    CHECK(route_stats_bind(sh, "r/5/{x}") == 4 && route_stats_bind(sh, "t/new") == SHM_ROUTE_TABLE - 1, "bind one");
    free_app(&a);
    free_app(&b);
    free(sh);
    return TEST_SUMMARY("route_stats");
}
