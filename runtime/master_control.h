/* Inside the control socket: its connections (master_control.c) and the
 * requests they carry (master_commands.c). Not for use elsewhere. */
#ifndef ROUTEMQ_MASTER_CONTROL_H
#define ROUTEMQ_MASTER_CONTROL_H

#include "master.h"

#define CONTROL_LINE_MAX 512

typedef enum { WAIT_NONE = 0, WAIT_RELOAD, WAIT_STOP } control_wait;

typedef struct control_conn {
    int fd;                  /* -1: free */
    int have_request;        /* the request line was read; more input is discarded */
    int eof;                 /* the client shut down its side */
    int done;                /* close once out is written */
    char in[CONTROL_LINE_MAX];
    size_t in_len;
    strbuf out;
    size_t out_off;
    control_wait wait;
    uint64_t want_seq;       /* WAIT_RELOAD: answered when reload_seq reaches it */
    uint32_t events;         /* what epoll watches for it */
    int64_t deadline_ns;     /* 0: none (waiting for an outcome) */
} control_conn;

/* Queues one answer line and writes what the socket takes; final: the last
 * line (the connection closes once it is written, unless it waits). c may be
 * closed on return (the client went away). */
void control_reply(master *m, control_conn *c, int final, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* "ok", then body: the final answer of a status request. */
void control_reply_body(master *m, control_conn *c, const strbuf *body);
/* Carries out one request line (master_commands.c). */
void control_command(master *m, control_conn *c, char *line);

#endif
