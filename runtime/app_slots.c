/* Worker planning from the route table (declared in app.h): how many slots
 * an application gets and which slot subscribes which route. Pure, so the
 * master, the CLI and runtime/tests/test_policy.c share it. */
#include "app.h"

void app_override_workers(app_def *a, int n)
{
    for (int i = 0; i < a->nroutes; i++)
        if (a->routes[i].shared) a->routes[i].worker_count = n;
}

int app_slot_count(const app_def *a)
{
    int p = 1;
    for (int i = 0; i < a->nroutes; i++)
        if (a->routes[i].shared && a->routes[i].worker_count > p) p = a->routes[i].worker_count;
    return p;
}

int app_slot_subscribes(const route_info *r, int slot)
{
    return r->shared ? slot < r->worker_count : slot == 0;
}
