/* The run directory. The pid file is locked with flock() rather than trusted
 * for its contents: the lock dies with the master however it dies, so a
 * stale file never blocks a start, and a pid reused by another process never
 * passes for a live master. */
#include "rundir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int rundir_socket_path(const char *dir, char *out, size_t n)
{
    size_t max = sizeof(((struct sockaddr_un *)0)->sun_path);
    int k = snprintf(out, n, "%s/%s", dir, RUNDIR_SOCKET);
    return k < 0 || (size_t)k >= n || (size_t)k >= max ? -1 : 0;
}

pid_t rundir_read_pid(const char *dir)
{
    char path[4096];
    long pid = 0;
    snprintf(path, sizeof path, "%s/%s", dir, RUNDIR_PID_FILE);
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    if (fscanf(f, "%ld", &pid) != 1 || pid <= 0) pid = 0;
    fclose(f);
    return (pid_t)pid;
}

/* mkdir -p; 1 when the last component was created, 0 when it existed, -1. */
static int make_dirs(const char *dir)
{
    char *p = strdup(dir);
    if (!p) return -1;
    for (char *s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = 0;
        if (mkdir(p, 0755) && errno != EEXIST) { free(p); return -1; }
        *s = '/';
    }
    free(p);
    if (mkdir(dir, 0700) == 0) return 1;
    struct stat st;
    if (errno != EEXIST || stat(dir, &st) || !S_ISDIR(st.st_mode)) {
        if (errno == 0 || errno == EEXIST) errno = ENOTDIR;
        return -1;
    }
    return 0;
}

/* The run directory holds the control socket and files about messages: it
 * must be ours and closed to everyone else, as ssh wants of ~/.ssh. We fix
 * nothing silently: a looser directory is somebody's decision to look at. */
static int check_private(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(dir, &st)) {
        snprintf(err, errlen, "cannot use the run directory %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "the run directory %s is not a directory (a symbolic link or a file); "
                 "ROUTEMQ_RUN_DIR must name a directory of its own", dir);
        return -1;
    }
    if (st.st_uid != geteuid()) {
        snprintf(err, errlen, "the run directory %s belongs to uid %u, not to this user (uid %u): it holds the control "
                 "socket and files about messages; use a directory of your own (ROUTEMQ_RUN_DIR)", dir,
                 (unsigned)st.st_uid, (unsigned)geteuid());
        return -1;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen, "the run directory %s has mode %04o: it holds the control socket and files about "
                 "messages, so it must be 0700 (other users may not enter it); fix it with `chmod 0700 %s`", dir,
                 (unsigned)(st.st_mode & 07777), dir);
        return -1;
    }
    return 0;
}

/* Opens path for writing, created 0600 whatever the umask. */
static FILE *create_private(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return NULL;
    fchmod(fd, 0600);  /* a leftover from an older version may be looser */
    FILE *f = fdopen(fd, "w");
    if (!f) close(fd);
    return f;
}

/* 1 when something accepts connections on the socket at path. */
static int socket_alive(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    int alive = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0) close(fd);
    return alive;
}

static int take_pid_file(rundir *rd, const char *app_dir, char *err, size_t errlen)
{
    rd->pid_fd = open(rd->pid_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (rd->pid_fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", rd->pid_path, strerror(errno));
        return -1;
    }
    fchmod(rd->pid_fd, 0600);
    /* A master whose pid file was deleted under it still answers on its socket. */
    if (flock(rd->pid_fd, LOCK_EX | LOCK_NB) || socket_alive(rd->sock_path)) {
        pid_t pid = rundir_read_pid(rd->dir);
        snprintf(err, errlen, "a master is already running for %s (pid %d, run directory %s); stop it with "
                 "`routemq stop`, or give this one its own ROUTEMQ_RUN_DIR", app_dir, (int)pid, rd->dir);
        close(rd->pid_fd);
        rd->pid_fd = -1;
        return -1;
    }
    char line[32];
    int n = snprintf(line, sizeof line, "%d\n", (int)getpid());
    if (ftruncate(rd->pid_fd, 0) || pwrite(rd->pid_fd, line, (size_t)n, 0) != n) {
        snprintf(err, errlen, "cannot write %s: %s", rd->pid_path, strerror(errno));
        return -1;
    }
    return 0;
}

static int listen_control(rundir *rd, char *err, size_t errlen)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof a.sun_path, "%s", rd->sock_path);
    unlink(rd->sock_path);  /* a crashed master's; we hold the lock */
    rd->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (rd->listen_fd < 0) goto fail;
    /* The mode is set at bind time: no moment where others could connect. */
    mode_t old = umask(0177);
    int rc = bind(rd->listen_fd, (struct sockaddr *)&a, sizeof a);
    umask(old);
    if (rc || chmod(rd->sock_path, 0600) || listen(rd->listen_fd, 64)) goto fail;
    return 0;
fail:
    snprintf(err, errlen, "cannot listen on %s: %s", rd->sock_path, strerror(errno));
    return -1;
}

int rundir_acquire(rundir *rd, const char *dir, const char *app_dir, char *err, size_t errlen)
{
    char sock[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
    memset(rd, 0, sizeof *rd);
    rd->pid_fd = rd->listen_fd = -1;
    if (rundir_socket_path(dir, sock, sizeof sock)) {
        snprintf(err, errlen, "ROUTEMQ_RUN_DIR: '%s' is too long for a UNIX socket path (at most %zu bytes with "
                 "/" RUNDIR_SOCKET ")", dir, sizeof sock - 2);
        return -1;
    }
    rd->dir = strdup(dir);
    rd->sock_path = strdup(sock);
    if (!rd->dir || !rd->sock_path || asprintf(&rd->pid_path, "%s/%s", dir, RUNDIR_PID_FILE) < 0) {
        rd->pid_path = NULL;
        snprintf(err, errlen, "out of memory");
        rundir_release(rd);
        return -1;
    }
    int made = make_dirs(dir);
    if (made < 0) {
        snprintf(err, errlen, "cannot create the run directory %s: %s", dir, strerror(errno));
        rundir_release(rd);
        return -1;
    }
    rd->created_dir = made;
    if (check_private(dir, err, errlen)) {
        rundir_release(rd);
        return -1;
    }
    if (take_pid_file(rd, app_dir, err, errlen) || listen_control(rd, err, errlen)) {
        int ours = rd->pid_fd >= 0;  /* only the holder of the lock may remove the files */
        if (!ours) { free(rd->pid_path); rd->pid_path = NULL; free(rd->sock_path); rd->sock_path = NULL; }
        rundir_release(rd);
        return -1;
    }
    return 0;
}

void rundir_release(rundir *rd)
{
    if (rd->listen_fd >= 0) close(rd->listen_fd);
    if (rd->sock_path && rd->pid_fd >= 0) unlink(rd->sock_path);
    /* Unlinked while still locked, so nobody takes over a file about to vanish. */
    if (rd->pid_path && rd->pid_fd >= 0) unlink(rd->pid_path);
    if (rd->pid_fd >= 0) close(rd->pid_fd);
    if (rd->created_dir && rd->dir) rmdir(rd->dir);  /* fails harmlessly when not empty */
    free(rd->dir);
    free(rd->pid_path);
    free(rd->sock_path);
    memset(rd, 0, sizeof *rd);
    rd->pid_fd = rd->listen_fd = -1;
}

/* The worker count survives the master so that the next start can tell when
 * slots disappeared: their persistent sessions keep a share of the messages. */
int rundir_read_workers(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/workers", dir);
    FILE *f = fopen(path, "r");
    int n = 0;
    if (!f) return 0;
    if (fscanf(f, "%d", &n) != 1 || n < 0) n = 0;
    fclose(f);
    return n;
}

void rundir_write_workers(const char *dir, int n)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/workers", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = create_private(tmp);
    if (!f) return;
    int ok = fprintf(f, "%d\n", n) > 0;
    if (fclose(f) == 0 && ok) rename(tmp, path);
    else unlink(tmp);
}

/* The filters a slot subscribed to survive its process: a resumed session
 * still holds them after a reload or restart changed the routes, and the
 * next worker of the slot unsubscribes those no route uses any more. With
 * each its MQTT 5 subscription identifier: the next worker knows which
 * queued copies name its routes. The file starts with FILTERS_V2, which is
 * no valid filter; a file without it (an earlier version) lists bare
 * filters, whose identifiers are unknown (0). */
#define FILTERS_V2 "#2"

static void filters_path(char *out, size_t n, const char *dir, int slot)
{
    snprintf(out, n, "%s/slot-%d.filters", dir, slot);
}

int rundir_read_filters(const char *dir, int slot, char ***out, uint32_t **ids)
{
    char path[4096], line[65600];
    filters_path(path, sizeof path, dir, slot);
    *out = NULL;
    *ids = NULL;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int n = 0, cap = 0, v2 = 0, first = 1;
    char **list = NULL;
    uint32_t *idl = NULL;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (first && !strcmp(line, FILTERS_V2)) { v2 = 1; first = 0; continue; }
        first = 0;
        if (!*line) continue;
        char *filter = line;
        unsigned long id = 0;
        if (v2) {
            id = strtoul(line, &filter, 10);
            if (*filter != ' ') continue;
            filter++;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            char **nl = realloc(list, (size_t)cap * sizeof *list);
            if (nl) list = nl;
            uint32_t *ni = realloc(idl, (size_t)cap * sizeof *idl);
            if (ni) idl = ni;
            if (!nl || !ni) break;
        }
        if (!(list[n] = strdup(filter))) break;
        idl[n] = (uint32_t)id;
        n++;
    }
    fclose(f);
    *out = list;
    *ids = idl;
    return n;
}

void rundir_free_filters(char **list, uint32_t *ids, int n)
{
    for (int i = 0; i < n; i++) free(list[i]);
    free(list);
    free(ids);
}

void rundir_write_filters(const char *dir, int slot, const char *const *filters, const uint32_t *ids, int n)
{
    char path[4096], tmp[4200];
    filters_path(path, sizeof path, dir, slot);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = create_private(tmp);
    if (!f) return;
    int ok = fprintf(f, "%s\n", FILTERS_V2) >= 0;
    for (int i = 0; i < n && ok; i++)
        if (!strchr(filters[i], '\n')) ok = fprintf(f, "%u %s\n", ids[i], filters[i]) >= 0;
    if (fclose(f) == 0 && ok) rename(tmp, path);
    else unlink(tmp);
}
