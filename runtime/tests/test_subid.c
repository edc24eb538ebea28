/* Unit tests for the routes' MQTT 5 subscription identifiers (app_subid.c):
 * they follow the subscription, not the route's position, stay in range,
 * and collisions are resolved the same way whatever the route order. */
#include "test_util.h"
#include "app.h"

#include <stdlib.h>
#include <string.h>

/* An app of n routes whose subscriptions are subs[order[i]] (qos 1, retain handling 1). */
static app_def make(char **subs, const int *order, int n)
{
    app_def a;
    memset(&a, 0, sizeof a);
    a.nroutes = n;
    a.routes = calloc((size_t)n, sizeof *a.routes);
    for (int i = 0; i < n; i++) {
        a.routes[i].index = i + 1;
        a.routes[i].sub = subs[order ? order[i] : i];
        a.routes[i].qos = 1;
        a.routes[i].retain_handling = 1;
    }
    return a;
}

static void drop(app_def *a)
{
    free(a->routes);
    free(a->by_sub_id);
}

static uint32_t id_of(const app_def *a, const char *sub)
{
    for (int i = 0; i < a->nroutes; i++)
        if (!strcmp(a->routes[i].sub, sub)) return a->routes[i].sub_id;
    return 0;
}

static void test_identity(void)
{
    char *subs[] = { "in/+", "aaa/+", "$share/g/in/+", "sensors/#" };
    int fwd[] = { 0, 3, 2 }, other[] = { 1, 2, 3, 0 };
    app_def a = make(subs, fwd, 3), b = make(subs, other, 4);
    CHECK(app_assign_sub_ids(&a) == 0 && app_assign_sub_ids(&b) == 0, "assigned");
    /* A route that sorts first was added: in/+ keeps its identifier. */
    for (int i = 0; i < 3; i++)
        CHECK(id_of(&a, subs[fwd[i]]) == id_of(&b, subs[fwd[i]]), "%s: %u then %u", subs[fwd[i]],
              id_of(&a, subs[fwd[i]]), id_of(&b, subs[fwd[i]]));
    CHECK(id_of(&a, "in/+") != id_of(&a, "$share/g/in/+"), "the share group is part of the subscription");
    for (int i = 0; i < 4; i++) {
        uint32_t id = b.routes[i].sub_id;
        CHECK(id >= APP_SUB_ID_MIN && id <= APP_SUB_ID_MAX, "%u in range", id);
        CHECK(app_route_by_sub_id(&b, id) == i + 1, "lookup of %u", id);
    }
    CHECK(app_route_by_sub_id(&b, 1) == 0 && app_route_by_sub_id(&b, 2) == 0, "old position-based ids are unknown");
    /* The options are part of the subscription. */
    uint32_t before = id_of(&b, "in/+");
    for (int i = 0; i < 4; i++) b.routes[i].qos = !strcmp(b.routes[i].sub, "in/+") ? 0 : 1;
    free(b.by_sub_id);
    CHECK(app_assign_sub_ids(&b) == 0 && id_of(&b, "in/+") != before, "QoS changes the identifier");
    drop(&a);
    drop(&b);
}

/* Enough subscriptions that some hash alike (about 18 pairs expected among
 * 100,000 in 268 million values): all distinct, each found, and the same in
 * reverse order. */
static void test_collisions(void)
{
    enum { N = 100000 };
    char **subs = malloc(N * sizeof *subs);
    int *rev = malloc(N * sizeof *rev);
    for (int i = 0; i < N; i++) {
        subs[i] = malloc(32);
        snprintf(subs[i], 32, "t/%d/+", i);
        rev[i] = N - 1 - i;
    }
    app_def a = make(subs, NULL, N), b = make(subs, rev, N);
    CHECK(app_assign_sub_ids(&a) == 0 && app_assign_sub_ids(&b) == 0, "assigned");
    int wrong = 0, moved = 0, differ = 0;
    for (int i = 0; i < N; i++) {
        if (app_route_by_sub_id(&a, a.routes[i].sub_id) != i + 1) wrong++;
        if (b.routes[N - 1 - i].sub_id != a.routes[i].sub_id) differ++;
        /* Alone, a route gets its first hash: those that differ were resolved collisions. */
        app_def one = make(subs, &i, 1);
        app_assign_sub_ids(&one);
        if (one.routes[0].sub_id != a.routes[i].sub_id) moved++;
        drop(&one);
    }
    CHECK(wrong == 0, "%d identifiers not found or shared", wrong);
    CHECK(differ == 0, "%d routes got another identifier in reverse order", differ);
    CHECK(moved > 0, "no collision among %d subscriptions: the test proves nothing", N);
    printf("  %d subscriptions: %d collisions resolved\n", N, moved);
    drop(&a);
    drop(&b);
    for (int i = 0; i < N; i++) free(subs[i]);
    free(subs);
    free(rev);
}

int main(void)
{
    test_identity();
    test_collisions();
    return TEST_SUMMARY("test_subid");
}
