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
/* Sets a process tag of its own ("adopt <client id>"), kept until the process ends. */
void log_set_label(const char *label);
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

/* Bytes of a topic that log_topic shows; a longer topic is shortened. */
#define LOG_TOPIC_MAX 120
/* A buffer that always holds log_topic's result whole. */
#define LOG_TOPIC_BUF (LOG_TOPIC_MAX * 4 + 64)

/* A topic (len bytes, NULs allowed) as it may appear in a log line or an
 * error: backslash and control bytes escaped ("\\", "\0", "\n", "\t",
 * "\xNN"), and a topic longer than LOG_TOPIC_MAX bytes cut to its first
 * LOG_TOPIC_MAX bytes followed by "... (N bytes)", so that what follows it
 * in the line (the reason) is never crowded out. Writes into buf (size
 * bytes, best LOG_TOPIC_BUF, never a cut escape) and returns buf. Use it
 * wherever a topic from the broker or a handler is logged. */
const char *log_topic(char *buf, size_t size, const char *topic, size_t len);

#define log_debug(...) do { if (log_enabled(LOGL_DEBUG)) log_msg(LOGL_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...) log_msg(LOGL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOGL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOGL_ERROR, __VA_ARGS__)

#endif
