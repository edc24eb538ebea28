/* Commands that only load the application: check, routes, test. */
#include "app.h"
#include "cli.h"
#include "config.h"
#include "luavm.h"
#include "tls_files.h"

#include <limits.h>
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

/* Finds NAME in $PATH into OUT; 0 when found. */
static int find_in_path(const char *name, char *out, size_t n)
{
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t len = strcspn(path, ":");
        if (len && (size_t)snprintf(out, n, "%.*s/%s", (int)len, path, name) < n && access(out, X_OK) == 0)
            return 0;
        path += len + (path[len] == ':');
    }
    return -1;
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
    /* /usr/bin/busted is a Lua script. Its own --lua=luajit restarts it
     * through a shell with the arguments joined by blanks, which splits
     * `--filter "two words"`; so it starts under LuaJIT here, told not to
     * switch again. */
    char busted[PATH_MAX];
    if (find_in_path("busted", busted, sizeof busted)) {
        fprintf(stderr, "routemq test: busted is not on PATH: install it with 'apt-get install lua-busted'\n");
        return EXIT_USAGE;
    }
    char **argv = calloc(o->argc + 4, sizeof *argv);
    if (!argv) return EXIT_USAGE;
    argv[0] = "luajit";
    argv[1] = busted;
    argv[2] = "--ignore-lua";
    for (int i = 0; i < o->argc; i++) argv[i + 3] = o->argv[i];
    execvp("luajit", argv);
    fprintf(stderr, "routemq test: cannot run luajit: install it with 'apt-get install luajit'\n");
    free(argv);
    return EXIT_USAGE;
}
