/* The requests of the control socket: status [json], reload, stop,
 * scale N, ping. reload and stop leave the connection waiting for their
 * outcome (master_control_reload_done, master_control_close). */
#include "master_control.h"
#include "master_request.h"
#include "log.h"
#include "master_presence.h"

#include <stdlib.h>
#include <string.h>

static void do_status(master *m, control_conn *c, int json, int cluster)
{
    strbuf body;
    sb_init(&body);
    if (cluster && json) master_presence_json(m, &body);
    else if (cluster) master_presence_table(m, &body);
    else if (json) master_status_json(m, &body);
    else master_status_table(m, &body);
    if (body.oom) { sb_free(&body); control_reply(m, c, 1, "error out of memory"); return; }
    control_reply_body(m, c, &body);
    sb_free(&body);
}

static void do_reload(master *m, control_conn *c)
{
    if (m->stopping) { control_reply(m, c, 1, "error the master is stopping"); return; }
    log_info("reload requested (control socket)");
    c->wait = WAIT_RELOAD;
    c->want_seq = m->reload_seq + 1;
    control_reply(m, c, 0, ". reloading %s%s", m->cfg->app_dir,
          master_reloading(m) ? " after the reload in progress" : "");
    /* May answer at once (the application does not load): c is done then. */
    master_reload_request(m);
}

static void do_stop(master *m, control_conn *c, int sessions)
{
    log_info("stop requested (control socket)");
    if (!m->stopping && sessions) m->stop_sessions = sessions;
    c->wait = WAIT_STOP;
    control_reply(m, c, 0, ". stopping master %d (WORKER_STOP_TIMEOUT %g s)", (int)m->pid, m->cfg->stop_timeout);
    master_begin_stop(m, 0);
}

static void do_scale(master *m, control_conn *c, int n)
{
    if (m->stopping) { control_reply(m, c, 1, "error the master is stopping"); return; }
    if (master_reloading(m)) {
        m->scale_to_pending = n;
        control_reply(m, c, 1, "ok %d worker%s after the reload in progress", n, n == 1 ? "" : "s");
        return;
    }
    int old = m->P;
    master_scale_to(m, n, "routemq scale");
    const char *s = m->P == 1 ? "" : "s";
    if (m->P != n) control_reply(m, c, 1, "ok %d worker%s (was %d; at most %d)", m->P, s, old, m->nslots);
    else control_reply(m, c, 1, "ok %d worker%s (was %d)", m->P, s, old);
}

void control_command(master *m, control_conn *c, char *line)
{
    master_request r;
    master_request_parse(line, strlen(line), &r);
    switch (r.kind) {
    case REQ_STATUS: do_status(m, c, 0, 0); break;
    case REQ_STATUS_JSON: do_status(m, c, 1, 0); break;
    case REQ_STATUS_CLUSTER: do_status(m, c, 0, 1); break;
    case REQ_STATUS_CLUSTER_JSON: do_status(m, c, 1, 1); break;
    case REQ_RELOAD: do_reload(m, c); break;
    case REQ_STOP: do_stop(m, c, 0); break;
    case REQ_STOP_KEEP: do_stop(m, c, 1); break;
    case REQ_STOP_END: do_stop(m, c, 2); break;
    case REQ_SCALE: do_scale(m, c, r.scale); break;
    case REQ_PING: control_reply(m, c, 1, "ok pong"); break;
    case REQ_BAD_SCALE:
        control_reply(m, c, 1, "error scale: '%s' is not a whole number from 1 to 1024", r.shown);
        break;
    case REQ_UNKNOWN:
    default:
        log_debug("control socket: unknown request '%s'", r.shown);
        control_reply(m, c, 1, "error unknown request '%s' (status, status json, status cluster [json], reload, "
                      "stop [keep-sessions|end-sessions], scale N)", r.shown);
        break;
    }
}
