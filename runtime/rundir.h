/* The run directory of a master (ROUTEMQ_RUN_DIR, default <app>/.routemq):
 * routemq.pid, locked for as long as the master lives, and control.sock,
 * the UNIX socket `routemq status/reload/stop/scale` talk to. */
#ifndef ROUTEMQ_RUNDIR_H
#define ROUTEMQ_RUNDIR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define RUNDIR_PID_FILE "routemq.pid"
#define RUNDIR_SOCKET "control.sock"

typedef struct rundir {
    char *dir;
    char *pid_path, *sock_path;
    int pid_fd;       /* holds the flock: a second master for this run dir is refused */
    int listen_fd;    /* the control socket, listening, non-blocking */
    int created_dir;  /* we made dir: removed again when empty */
} rundir;

/* Creates the directory (0700); refuses one that is not a directory of this
 * user's with mode 0700 (nothing wider); takes the pid file (a live master
 * holding it is an error; a stale one is taken over) and listens on the
 * control socket (0600). Every file it writes there is 0600. 0 ok; -1 with
 * the reason in err, nothing left behind. */
int rundir_acquire(rundir *rd, const char *dir, const char *app_dir, char *err, size_t errlen);
/* Removes the socket and the pid file and releases the lock. Idempotent. */
void rundir_release(rundir *rd);
/* <dir>/control.sock into out; -1 when it does not fit a UNIX socket address. */
int rundir_socket_path(const char *dir, char *out, size_t n);
/* The worker count recorded by the last master of this run directory, 0 when unknown. */
int rundir_read_workers(const char *dir);
/* Records the current worker count in <dir>/workers (best effort, atomic rename). */
void rundir_write_workers(const char *dir, int n);
/* The filters slot `slot` subscribed at its last connect (<dir>/slot-<n>.filters)
 * and their subscription identifiers (0: unknown); returns how many, the
 * lists in *out and *ids (free with rundir_free_filters). */
int rundir_read_filters(const char *dir, int slot, char ***out, uint32_t **ids);
void rundir_free_filters(char **list, uint32_t *ids, int n);
/* Records the filters slot `slot` subscribes now with their identifiers
 * (best effort, atomic rename). */
void rundir_write_filters(const char *dir, int slot, const char *const *filters, const uint32_t *ids, int n);
/* The pid in <dir>/routemq.pid, or 0. */
pid_t rundir_read_pid(const char *dir);

#endif
