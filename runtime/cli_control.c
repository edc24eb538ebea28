/* Commands that talk to a running master: status, reload, stop, scale. The
 * master is found through the application's run directory (--app DIR, its
 * configuration, ROUTEMQ_RUN_DIR) and spoken to over its control socket:
 * one request line, then ". progress" lines and a final "ok ..." (followed
 * by the body for status) or "error ..." (master_control.c). */
#include "cli.h"
#include "config.h"
#include "rundir.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define STATUS_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS 30000

typedef struct reply {
    char *buf;        /* everything read so far */
    size_t len, cap;
    size_t parsed;    /* bytes of complete progress lines already handled */
    int final;        /* 0 none yet, 1 ok, -1 error */
    size_t final_at;  /* where the final line's text starts */
    int progress;     /* a ". " line was seen */
} reply;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int connect_master(const char *path)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    size_t n = strlen(path);
    if (n >= sizeof a.sun_path) { errno = ENAMETOOLONG; return -1; }
    memcpy(a.sun_path, path, n + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

/* Handles the complete lines before the final one: progress goes to stdout. */
static void parse_lines(reply *r)
{
    while (!r->final) {
        char *start = r->buf + r->parsed;
        char *nl = memchr(start, '\n', r->len - r->parsed);
        if (!nl) return;
        size_t n = (size_t)(nl - start);
        if (n >= 2 && !strncmp(start, ". ", 2)) {
            printf("%.*s\n", (int)(n - 2), start + 2);
            fflush(stdout);
            r->progress = 1;
        } else if (!strncmp(start, "ok", 2) && (n == 2 || start[2] == ' ')) {
            r->final = 1;
            r->final_at = r->parsed + (n > 2 ? 3 : n + 1);
        } else if (!strncmp(start, "error", 5) && (n == 5 || start[5] == ' ')) {
            r->final = -1;
            r->final_at = r->parsed + (n > 5 ? 6 : n + 1);
        }
        r->parsed += n + 1;
    }
}

/* Reads until EOF or the deadline (-1: none); 0 at EOF, -1 on timeout or error. */
static int read_reply(int fd, reply *r, long long deadline)
{
    for (;;) {
        if (r->cap - r->len < 4096) {
            size_t cap = r->cap ? r->cap * 2 : 16384;
            char *p = realloc(r->buf, cap);
            if (!p) return -1;
            r->buf = p;
            r->cap = cap;
        }
        int wait = deadline < 0 ? -1 : (int)(deadline - now_ms());
        if (deadline >= 0 && wait <= 0) return -1;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int k = poll(&p, 1, wait);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        ssize_t n = read(fd, r->buf + r->len, r->cap - r->len - 1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) return 0;
        r->len += (size_t)n;
        r->buf[r->len] = 0;
        parse_lines(r);
    }
}

/* A zombie counts as gone: it has exited, its parent just has not looked. */
static int process_alive(pid_t pid)
{
    char path[64], st[512];
    if (pid <= 0 || (kill(pid, 0) && errno == ESRCH)) return 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    size_t n = fread(st, 1, sizeof st - 1, f);
    fclose(f);
    st[n] = 0;
    char *paren = strrchr(st, ')');
    return !(paren && paren[1] == ' ' && paren[2] == 'Z');
}

static int wait_gone(pid_t pid, long long deadline)
{
    while (process_alive(pid)) {
        if (now_ms() >= deadline) return -1;
        usleep(20000);
    }
    return 0;
}

static void request_line(cli_opts *o, const char *cmd, char *out, size_t n)
{
    if (!strcmp(cmd, "status")) snprintf(out, n, "status%s%s\n", o->cluster ? " cluster" : "", o->json ? " json" : "");
    else if (!strcmp(cmd, "stop") && o->sessions)
        snprintf(out, n, "stop %s\n", o->sessions == 1 ? "keep-sessions" : "end-sessions");
    else if (!strcmp(cmd, "scale")) snprintf(out, n, "scale %d\n", o->scale_to);
    else snprintf(out, n, "%s\n", cmd);
}

/* Talks to the master at sock; returns the exit code. */
static int converse(cli_opts *o, const char *cmd, const config *cfg, const char *sock)
{
    int is_stop = !strcmp(cmd, "stop"), is_reload = !strcmp(cmd, "reload");
    pid_t pid = rundir_read_pid(cfg->run_dir);
    int fd = connect_master(sock);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT || e == ECONNREFUSED)
            fprintf(stderr, "routemq: no master running for %s (%s: %s)\n", cfg->app_dir, sock, strerror(e));
        else
            fprintf(stderr, "routemq: cannot reach the master for %s (%s: %s)\n", cfg->app_dir, sock, strerror(e));
        return EXIT_UNREACHABLE;
    }
    char line[64];
    request_line(o, cmd, line, sizeof line);
    /* A refusal (busy, permission) arrives as a reply even if this fails. */
    ssize_t w = send(fd, line, strlen(line), MSG_NOSIGNAL);
    (void)w;
    long long start = now_ms();
    long long deadline = is_reload ? -1 : start + (is_stop ? STOP_TIMEOUT_MS : STATUS_TIMEOUT_MS);
    reply r = { 0 };
    int rc = read_reply(fd, &r, deadline);
    close(fd);
    int code = EXIT_OK;
    if (r.final == 1) {
        fputs(r.buf + r.final_at, stdout);
    } else if (r.final == -1) {
        fprintf(stderr, "routemq %s: %s", cmd, r.buf + r.final_at);
        code = EXIT_USAGE;
    } else if (!(is_stop && r.progress)) {
        fprintf(stderr, "routemq %s: %s\n", cmd,
                rc ? "no answer from the master in time" : "the master closed the connection without an answer");
        code = EXIT_UNREACHABLE;
    }
    if (is_stop && code == EXIT_OK && wait_gone(pid, start + STOP_TIMEOUT_MS)) {
        fprintf(stderr, "routemq stop: the master (pid %d) is still running after %d s\n", (int)pid,
                STOP_TIMEOUT_MS / 1000);
        code = EXIT_USAGE;
    }
    free(r.buf);
    return code;
}

int cli_control(cli_opts *o, const char *cmd)
{
    config cfg;
    char err[4096], sock[4096];
    if (config_load(&cfg, o->app, err, sizeof err)) {
        fprintf(stderr, "routemq: %s\n", err);
        config_free(&cfg);
        return EXIT_USAGE;
    }
    int code;
    if (rundir_socket_path(cfg.run_dir, sock, sizeof sock)) {
        fprintf(stderr, "routemq: ROUTEMQ_RUN_DIR: '%s' is too long for a UNIX socket path\n", cfg.run_dir);
        code = EXIT_USAGE;
    } else {
        code = converse(o, cmd, &cfg, sock);
    }
    config_free(&cfg);
    return code;
}
