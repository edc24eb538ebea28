/* A private mosquitto for development: loopback only, no persistence, and no
 * queue limit so QoS 1 messages for restarting workers are kept. */
#include "devbroker.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t broker_pid;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

static int port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0) close(fd);
    return ok;
}

static const char *find_mosquitto(void)
{
    static const char *const places[] = { "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto",
                                          "/usr/bin/mosquitto", "/usr/local/bin/mosquitto" };
    for (size_t i = 0; i < sizeof places / sizeof *places; i++)
        if (access(places[i], X_OK) == 0) return places[i];
    return "mosquitto";  /* execvp searches PATH */
}

static char pid_file[4096];

/* mosquitto drops root for its own user, which clears PR_SET_PDEATHSIG: a
 * master killed with -9 leaves its broker running. The run directory is
 * ours (its pid lock is held), so a broker recorded there still running on
 * our configuration is such a leftover: stop it. */
static void stop_leftover(const char *conf)
{
    FILE *f = fopen(pid_file, "r");
    int pid = 0;
    if (!f) return;
    if (fscanf(f, "%d", &pid) != 1) pid = 0;
    fclose(f);
    unlink(pid_file);
    if (pid <= 1 || kill(pid, 0)) return;
    char path[64], cmd[4096 + 64] = "";
    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, cmd, sizeof cmd - 1);
    close(fd);
    for (ssize_t i = 0; i < n; i++) if (!cmd[i]) cmd[i] = ' ';
    if (n <= 0 || !strstr(cmd, "mosquitto") || !strstr(cmd, conf)) return;
    kill(pid, SIGTERM);
    log_warn("routemq dev: stopped the private mosquitto (pid %d) a previous routemq dev left running", pid);
}

/* The run directory's files are 0600 (rundir.c), whatever the umask. */
static FILE *create_private(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (fd >= 0 && !f) close(fd);
    return f;
}

int devbroker_start(config *cfg)
{
    char conf[4096], logf[4096];
    mkdir(cfg->run_dir, 0700);
    snprintf(conf, sizeof conf, "%s/mosquitto.conf", cfg->run_dir);
    snprintf(logf, sizeof logf, "%s/mosquitto.log", cfg->run_dir);
    snprintf(pid_file, sizeof pid_file, "%s/mosquitto.pid", cfg->run_dir);
    stop_leftover(conf);
    for (int attempt = 0; attempt < 5; attempt++) {
        int port = free_port();
        FILE *f = create_private(conf);
        if (port < 0 || !f) {
            if (f) fclose(f);
            log_error("routemq dev: cannot prepare a private broker in %s: %s", cfg->run_dir, strerror(errno));
            return -1;
        }
        fprintf(f, "# written by routemq dev\nlistener %d 127.0.0.1\nallow_anonymous true\n"
                   "persistence false\nmax_queued_messages 1000000\nset_tcp_nodelay true\nlog_dest stderr\n", port);
        fclose(f);
        const char *exe = find_mosquitto();
        pid_t pid = fork();
        if (pid < 0) { log_error("routemq dev: fork: %s", strerror(errno)); return -1; }
        if (pid == 0) {
            /* Its own process group: a terminal's Ctrl-C must not stop the broker
             * before the workers have said goodbye to it. */
            setpgid(0, 0);
            prctl(PR_SET_PDEATHSIG, SIGTERM);  /* never outlive a master killed with -9 */
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL);
            int fd = open(logf, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); }
            execlp(exe, "mosquitto", "-c", conf, (char *)NULL);
            _exit(127);
        }
        broker_pid = pid;
        FILE *pf = create_private(pid_file);
        if (pf) { fprintf(pf, "%d\n", (int)pid); fclose(pf); }
        for (int i = 0; i < 100; i++) {  /* up to 5 s */
            if (port_open(port)) {
                free(cfg->broker);
                cfg->broker = strdup("127.0.0.1");
                cfg->port = port;
                log_info("private mosquitto on 127.0.0.1:%d (pid %d, log %s)", port, (int)pid, logf);
                fprintf(stderr, "\n  publish to it:  mosquitto_pub -p %d -t sensors/42/data -m '{\"temp\": 91}'\n"
                                "  watch replies:  mosquitto_sub -p %d -t 'alerts/#' -v\n\n", port, port);
                return cfg->broker ? 0 : -1;
            }
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) { broker_pid = 0; break; }  /* lost the port race */
            struct timespec ts = { 0, 50000000 };
            nanosleep(&ts, NULL);
        }
        devbroker_stop();
    }
    log_error("routemq dev: cannot start mosquitto (is the 'mosquitto' package installed?); see %s", logf);
    return -1;
}

void devbroker_stop(void)
{
    if (broker_pid <= 0) return;
    if (pid_file[0]) unlink(pid_file);
    kill(broker_pid, SIGTERM);
    for (int i = 0; i < 40; i++) {
        if (waitpid(broker_pid, NULL, WNOHANG) == broker_pid) { broker_pid = 0; return; }
        struct timespec ts = { 0, 50000000 };
        nanosleep(&ts, NULL);
    }
    kill(broker_pid, SIGKILL);
    waitpid(broker_pid, NULL, 0);
    broker_pid = 0;
}

int devbroker_owns(pid_t pid)
{
    if (pid <= 0 || pid != broker_pid) return 0;
    broker_pid = 0;
    return 1;
}
