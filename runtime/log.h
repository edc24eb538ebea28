/* Logging: one line per event on stderr, tagged with the process (master / worker N). */
#ifndef ROUTEMQ_LOG_H
#define ROUTEMQ_LOG_H

#include <stddef.h>

typedef enum { LOGL_DEBUG = 0, LOGL_INFO, LOGL_WARN, LOGL_ERROR } log_level;

/* Extra structured fields of one log line; any of them may be NULL. */
typedef struct log_fields {
    const char *route;
    const char *topic;
    const char *error;
    const char *traceback;
} log_fields;

/* Sets the minimum level and the output format (json != 0: JSON lines). */
void log_setup(log_level min, int json);
/* Sets the process tag: slot < 0 is the master, otherwise "worker <slot>". */
void log_set_process(int slot);
/* Parses "debug|info|warn|warning|error"; returns -1 when unknown. */
int log_level_parse(const char *s);
/* 1 when a line at this level would be written. */
int log_enabled(log_level lvl);

#define LOG_RENDER_MIN 256  /* the smallest line log_render fills */

/* Formats one line (text, or JSON when json != 0) into line[0..cap), cap >= LOG_RENDER_MIN;
 * returns its length. Always one whole line: a JSON object, ending in '\n',
 * fields cut short when they do not fit. */
size_t log_render(char *line, size_t cap, log_level lvl, const log_fields *f, const char *msg, int json);

void log_msg(log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_with(log_level lvl, const log_fields *f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(...) do { if (log_enabled(LOGL_DEBUG)) log_msg(LOGL_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...) log_msg(LOGL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOGL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOGL_ERROR, __VA_ARGS__)

#endif
