/* libbsd's setproctitle writes the title over argv (and environ) but leaves
 * the byte that ended the original argv[0] as '.', and the end of the
 * original argument area NUL. Linux then shows the whole argument area, NULs
 * as spaces: "routemq: worker 0 gen 1      .". When that last byte is not
 * NUL, Linux instead shows the text up to the first NUL, which is the title
 * alone; so after setting the title, that byte is made non-NUL (it lies past
 * the title's own NUL, or inside a title longer than the arguments).
 * runtime/tests/test_proctitle.c tries every length around the title's. */
#include "proctitle.h"

#include <bsd/unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static char *arg_first; /* where the title is written: the original argv[0] */
static char *arg_last;  /* the last byte of the original argument area */

void proctitle_init(int argc, char **argv, char **envp)
{
    if (argc > 0 && argv[argc - 1]) arg_last = argv[argc - 1] + strlen(argv[argc - 1]);
    if (argc > 0) arg_first = argv[0];
    setproctitle_init(argc, argv, envp);
}

void proctitle_set(const char *fmt, ...)
{
    char title[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(title, sizeof title, fmt, ap);
    va_end(ap);
    setproctitle("-%s", title);
    if (!arg_first) return;
    /* A title exactly as long as the original argv[0] gets a blank from
     * libbsd where that argument's NUL was (for kernels that show the whole
     * area): with the last byte set below, it would show as a trailing blank. */
    size_t want = strlen(title), len = strlen(arg_first);
    if (len == want + 1 && arg_first[want] == ' ') {
        arg_first[want] = 0;
        len = want;
    }
    /* A title that ends exactly at the area's last byte has its own NUL
     * there: Linux then shows it alone already, and a blank would show. */
    if (arg_last && *arg_last == 0 && arg_last != arg_first + len) *arg_last = ' ';
}
