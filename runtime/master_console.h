/* What the admin endpoint serves beyond status and metrics: the web console
 * (its files embedded in the binary), the per-second history behind /stats,
 * the latest handler errors behind /errors, and the actions (POST /reload,
 * POST /scale). master_http.c routes requests here after master_auth.c
 * has let them in.
 *
 * master_console.c  the console's files and the actions
 * master_history.c  one-second samples per route and per worker (/stats)
 * master_errors.c   the latest handler errors, copied from the slots (/errors)
 */
#ifndef ROUTEMQ_MASTER_CONSOLE_H
#define ROUTEMQ_MASTER_CONSOLE_H

#include <stddef.h>
#include <stdint.h>

#include "master.h"
#include "strbuf.h"

#define MASTER_HISTORY_SECONDS 300   /* the longest /stats window */
#define MASTER_ERRORS_KEPT 100       /* /errors: the latest this many */

typedef struct console_file {
    const char *path;   /* URL path */
    const char *type;   /* Content-Type */
    const char *data;
    size_t len;
} console_file;

/* master_console.c */
/* The console file served at path, or NULL. */
const console_file *master_console_file(const char *path);
/* Runs the action at path (/reload, /scale) with its JSON body; writes a
 * JSON answer to out and returns the HTTP status. */
unsigned master_console_action(master *m, const char *path, const char *body, size_t len, strbuf *out);
/* The outcome of reload seq (called by master_reload.c), kept for POST /reload's answer. */
void master_console_reload_done(master *m, uint64_t seq, int ok, const char *msg);

/* master_history.c */
/* Once a second: takes one sample of every route and slot. */
void master_history_tick(master *m, int64_t now);
/* /stats?window=seconds (1 .. MASTER_HISTORY_SECONDS): the busiest `limit`
 * routes, the first `top` of them with their series. */
void master_history_json(master *m, int window, int top, int limit, strbuf *out);
/* Allocates m->history (the admin endpoint starts); 0 ok, -1 out of memory. */
int master_history_start(master *m);
/* Frees m->history (the master's teardown); NULL is fine. */
void master_history_free(master *m);

/* master_errors.c */
/* Allocates m->errors (the admin endpoint starts); 0 ok, -1 out of memory. */
int master_errors_start(master *m);
/* Frees m->errors (the master's teardown); NULL is fine. */
void master_errors_free(master *m);
/* Copies the errors the workers recorded since the last call. */
void master_errors_collect(master *m);
/* /errors: the latest errors, newest first. */
void master_errors_json(master *m, strbuf *out);

#endif
