/* proctitle: what the kernel shows in /proc/<pid>/cmdline is the title and
 * its NUL, whatever the lengths of the original arguments. libbsd and Linux
 * each treat a few lengths specially (a title as long as argv[0], one ending
 * at the area's last byte), and the length of argv[0] is the install path's:
 * so every length around the title's is tried, each in a child process this
 * program execs with arguments made to measure. */
#include "../proctitle.h"
#include "test_util.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define TITLE "routemq: worker 0 gen 1"

/* The child: set the title, say so on stdout, wait until stdin closes. */
static int child(int argc, char **argv)
{
    proctitle_init(argc, argv, environ);
    proctitle_set("%s", TITLE);
    char c = 'x';
    if (write(1, &c, 1) != 1) return 1;
    while (read(0, &c, 1) > 0) {}
    return 0;
}

/* Runs a child with argv[0] of n0 bytes and, when n1 >= 0, a second
 * argument of n1 bytes; checks its cmdline once the title is set. */
static void check_lengths(int n0, int n1)
{
    char a0[128], a1[128];
    memset(a0, 'a', (size_t)n0); a0[n0] = 0;
    memset(a1, 'b', n1 > 0 ? (size_t)n1 : 0); a1[n1 > 0 ? n1 : 0] = 0;
    char *args[] = { a0, n1 >= 0 ? a1 : NULL, NULL };
    int up[2], down[2];
    if (pipe(up) || pipe(down)) { CHECK(0, "pipe"); return; }
    pid_t pid = fork();
    if (pid == 0) {
        dup2(up[1], 1); dup2(down[0], 0);
        close(up[0]); close(up[1]); close(down[0]); close(down[1]);
        char *env[] = { "PROCTITLE_CHILD=1", NULL };
        execve("/proc/self/exe", args, env);
        _exit(127);
    }
    close(up[1]); close(down[0]);
    char c, path[64], got[256];
    ssize_t n = 0;
    if (read(up[0], &c, 1) == 1) {
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
        FILE *f = fopen(path, "r");
        if (f) { n = (ssize_t)fread(got, 1, sizeof got, f); fclose(f); }
    }
    close(down[1]); close(up[0]);
    int st;
    waitpid(pid, &st, 0);
    CHECK(n == (ssize_t)sizeof TITLE && memcmp(got, TITLE, sizeof TITLE) == 0,
          "argv[0] of %d bytes, second argument %d: cmdline of %zd bytes \"%.*s\"",
          n0, n1, n, (int)(n > 0 ? n : 0), got);
}

int main(int argc, char **argv)
{
    if (getenv("PROCTITLE_CHILD")) return child(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    int len = (int)strlen(TITLE);
    for (int n0 = len - 4; n0 <= len + 4; n0++)
        for (int n1 = -1; n1 <= 4; n1++) check_lengths(n0, n1);
    return TEST_SUMMARY("test_proctitle");
}
