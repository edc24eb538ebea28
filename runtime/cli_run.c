/* `routemq run` and `routemq dev`: load and check the configuration and the
 * application exactly like `routemq check`, then become the master. */
#include "cli.h"
#include "config.h"
#include "devbroker.h"
#include "log.h"
#include "master.h"
#include "master_policy.h"
#include "proctitle.h"
#include "rundir.h"
#include "tls_files.h"

#include <bsd/unistd.h>
#include <stdio.h>
#include <string.h>

#define MIN_SLOTS 64  /* shared memory cannot grow after the first fork: room to scale */

/* P and the worker_count override at start. */
static int plan_workers(cli_opts *o, const config *cfg, master_params *p)
{
    int wanted;
    p->base_override = o->workers ? o->workers : cfg->worker_count;
    p->workers = master_plan_workers(&p->app, p->base_override, cfg, 0, 0, &p->override, &wanted);
    if (p->workers > SHM_MAX_SLOTS) {
        fprintf(stderr, "routemq: %d workers wanted; at most %d are supported\n", p->workers, SHM_MAX_SLOTS);
        return -1;
    }
    p->nslots = master_plan_slots(p->workers, cfg->max_count, MIN_SLOTS);
    return 0;
}

/* Everything that can fail because of the user's input, before any fork. */
static int prepare(cli_opts *o, config *cfg, master_params *p)
{
    char err[4096];
    if (config_load(cfg, o->app, err, sizeof err)) {
        fprintf(stderr, "routemq: %s\n", err);
        return -1;
    }
    if (tls_check_files(cfg, err, sizeof err)) {
        config_locate_error(cfg->app_dir, err, sizeof err);
        fprintf(stderr, "routemq: %s\n", err);
        return -1;
    }
    log_setup((log_level)cfg->log_level, cfg->log_json);
    p->cfg = cfg;
    p->restart_max_delay_ns = NS_FROM_S(cfg->restart_max_delay);
    if (luavm_find_paths(&p->paths, err, sizeof err)) {
        fprintf(stderr, "routemq: %s\n", err);
        return -1;
    }
    if (master_load_app(&p->paths, cfg, &p->app, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    if (p->app.nroutes == 0)
        log_warn("the application in %s registers no routes (no router.on in app/routers/*.lua): its worker "
                 "connects and subscribes to nothing", cfg->app_dir);
    if (plan_workers(o, cfg, p)) {
        app_free(&p->app);
        return -1;
    }
    return 0;
}

/* Slots that existed in the last run and not in this one keep their
 * persistent sessions, and the broker keeps queueing their share of shared
 * routes until MQTT_SESSION_EXPIRY: say so, with the way to hand it over. */
static void warn_fewer_workers(const config *cfg, int workers)
{
    int last = rundir_read_workers(cfg->run_dir);
    if (last <= workers) return;
    log_warn("the last run here had %d workers and this one has %d: the sessions of slots %d..%d keep the "
             "messages queued for them until MQTT_SESSION_EXPIRY (%d s). To hand them over, run with "
             "--workers %d, then `routemq scale %d`", last, workers, workers, last - 1, cfg->session_expiry,
             last, workers);
}

int cli_run(cli_opts *o, int dev)
{
    config cfg;
    master_params p;
    rundir rd;
    char err[4096];
    memset(&p, 0, sizeof p);
    if (prepare(o, &cfg, &p)) {
        config_free(&cfg);
        return EXIT_USAGE;
    }
    /* Before the private broker: a second master for this run directory
     * fails here, having started nothing. */
    if (rundir_acquire(&rd, cfg.run_dir, cfg.app_dir, err, sizeof err)) {
        fprintf(stderr, "routemq: %s\n", err);
        app_free(&p.app);
        config_free(&cfg);
        return EXIT_USAGE;
    }
    p.control_fd = rd.listen_fd;
    warn_fewer_workers(&cfg, p.workers);
    /* The password leaves the environment block before anything can show it. */
    config_scrub_environ(o->envp);
    proctitle_init(o->orig_argc, o->orig_argv, o->envp);
    proctitle_set("routemq: master %s", cfg.app_dir);
    p.dev_watch = dev;
    int own_broker = dev && !cfg.broker_from_env;
    if (own_broker && devbroker_start(&cfg)) {
        rundir_release(&rd);
        app_free(&p.app);
        config_free(&cfg);
        return EXIT_UNREACHABLE;
    }
    int rc = master_run(&p);  /* takes over p.app */
    rundir_release(&rd);
    if (own_broker) devbroker_stop();
    config_free(&cfg);
    return rc;
}
