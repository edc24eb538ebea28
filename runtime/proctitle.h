/* Process titles as `ps` and /proc/<pid>/cmdline show them: exactly the text
 * given, with nothing after it. */
#ifndef ROUTEMQ_PROCTITLE_H
#define ROUTEMQ_PROCTITLE_H

/* Call once, first, with main's arguments (the title reuses their memory). */
void proctitle_init(int argc, char **argv, char **envp);
/* Sets the title (printf-style). */
void proctitle_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
