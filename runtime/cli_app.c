/* Commands that only load the application: check, routes, test. */
#include "app.h"
#include "cli.h"
#include "config.h"
#include "luavm.h"
#include "tls_files.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Loads configuration and application exactly as a worker does. */
static int load(cli_opts *o, config *cfg, app_def *a)
{
    char err[4096], tb[8192];
    luavm_paths paths;
    if (config_load(cfg, o->app, err, sizeof err)) {
        fprintf(stderr, "routemq: %s\n", err);
        config_free(cfg);
        return -1;
    }
    if (tls_check_files(cfg, err, sizeof err)) {
        config_locate_error(cfg->app_dir, err, sizeof err);
        fprintf(stderr, "routemq: %s\n", err);
        config_free(cfg);
        return -1;
    }
    if (luavm_find_paths(&paths, err, sizeof err)) {
        fprintf(stderr, "routemq: %s\n", err);
        config_free(cfg);
        return -1;
    }
    if (app_load_table(&paths, cfg, a, err, sizeof err, tb, sizeof tb)) {
        fprintf(stderr, "%s\n", err);
        if (tb[0] && getenv("ROUTEMQ_TRACEBACK")) fprintf(stderr, "%s\n", tb);
        config_free(cfg);
        return -1;
    }
    if (o->workers) app_override_workers(a, o->workers);
    else if (cfg->worker_count) app_override_workers(a, cfg->worker_count);
    return 0;
}

static void unload(config *cfg, app_def *a)
{
    app_free(a);
    config_free(cfg);
}

int cli_check(cli_opts *o)
{
    config cfg;
    app_def a;
    if (load(o, &cfg, &a)) return EXIT_USAGE;
    app_print_routes(&a, stdout, 0);
    if (a.nroutes == 0) fprintf(stderr, "routemq: warning: the application registers no routes\n");
    printf("ok: %d route%s, %d worker%s\n", a.nroutes, a.nroutes == 1 ? "" : "s",
           app_slot_count(&a), app_slot_count(&a) == 1 ? "" : "s");
    unload(&cfg, &a);
    return EXIT_OK;
}

int cli_routes(cli_opts *o)
{
    config cfg;
    app_def a;
    if (load(o, &cfg, &a)) return EXIT_USAGE;
    app_print_routes(&a, stdout, o->json);
    unload(&cfg, &a);
    return EXIT_OK;
}

/* Runs busted in the application root with routemq's modules on the paths. */
int cli_test(cli_opts *o)
{
    char err[1024];
    luavm_paths p;
    if (luavm_find_paths(&p, err, sizeof err)) { fprintf(stderr, "routemq: %s\n", err); return EXIT_USAGE; }
    if (chdir(o->app)) { perror(o->app); return EXIT_USAGE; }
    char lpath[3 * PATH_MAX], cpath[2 * PATH_MAX];
    const char *old = getenv("LUA_PATH"), *oldc = getenv("LUA_CPATH");
    snprintf(lpath, sizeof lpath, "%s/?.lua;%s/?/init.lua;./?.lua;./?/init.lua;%s", p.lua_dir, p.lua_dir,
             old ? old : ";");
    snprintf(cpath, sizeof cpath, "%s/?.so;%s", p.cmod_dir, oldc ? oldc : ";");
    setenv("LUA_PATH", lpath, 1);
    setenv("LUA_CPATH", cpath, 1);
    /* /usr/bin/busted starts under whatever `lua` is (often 5.2+) before it
     * switches to LuaJIT; those read LUA_PATH_5_x first. Keep them on their
     * own defaults: LuaJIT's paths (an installed /usr/share/lua/5.1) would
     * hand them 5.1 modules. */
    static const char *const newer[] = { "5_2", "5_3", "5_4" };
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "LUA_PATH_%s", newer[i]);
        setenv(name, ";;", 0);
        snprintf(name, sizeof name, "LUA_CPATH_%s", newer[i]);
        setenv(name, ";;", 0);
    }
    char **argv = calloc(o->argc + 3, sizeof *argv);
    if (!argv) return EXIT_USAGE;
    argv[0] = "busted";
    argv[1] = "--lua=luajit";
    for (int i = 0; i < o->argc; i++) argv[i + 2] = o->argv[i];
    execvp("busted", argv);
    fprintf(stderr, "routemq test: cannot run busted: install it with 'apt-get install lua-busted'\n");
    free(argv);
    return EXIT_USAGE;
}
