/* A generation of the application as the master holds it: the route table
 * and code snapshot, loaded once, shared by reference between the master
 * (m->app) and each slot started with it (master_slot.app), freed with the
 * last reference. Its own file: spawning and reloading both use it. */
#include "master.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

int master_load_app(const luavm_paths *paths, const config *cfg, app_def *out, char *err, size_t errlen)
{
    char tb[8192];
    int rc = app_load_table(paths, cfg, out, err, errlen, tb, sizeof tb);
    if (rc && tb[0] && getenv("ROUTEMQ_TRACEBACK")) log_error("%s", tb);
    return rc;
}

master_app *master_app_new(app_def *def, uint32_t generation)
{
    master_app *a = calloc(1, sizeof *a);
    if (!a) {
        app_free(def);
        return NULL;
    }
    a->def = *def;
    a->refs = 1;
    a->generation = generation;
    memset(def, 0, sizeof *def);
    return a;
}

master_app *master_app_ref(master_app *a)
{
    if (a) a->refs++;
    return a;
}

void master_app_unref(master_app *a)
{
    if (!a || --a->refs > 0) return;
    app_free(&a->def);
    free(a);
}
