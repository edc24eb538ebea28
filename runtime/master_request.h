/* One request line of the control socket, parsed. Pure: no master, no I/O,
 * so the fuzzer and the unit tests call it directly. */
#ifndef ROUTEMQ_MASTER_REQUEST_H
#define ROUTEMQ_MASTER_REQUEST_H

#include <stddef.h>

typedef enum {
    REQ_UNKNOWN = 0,
    REQ_BAD_SCALE,     /* "scale X" where X is not 1..1024 */
    REQ_STATUS,
    REQ_STATUS_JSON,
    REQ_STATUS_CLUSTER,
    REQ_STATUS_CLUSTER_JSON,
    REQ_RELOAD,
    REQ_STOP,
    REQ_STOP_KEEP,     /* stop keep-sessions */
    REQ_STOP_END,      /* stop end-sessions */
    REQ_SCALE,
    REQ_PING,
} master_request_kind;

#define REQUEST_SHOWN_MAX 48

typedef struct {
    master_request_kind kind;
    int scale;                      /* REQ_SCALE: 1..1024 */
    char shown[REQUEST_SHOWN_MAX];  /* REQ_UNKNOWN, REQ_BAD_SCALE: the request (or the argument),
                                       printable ASCII only, cut short */
} master_request;

/* Parses line[0..len) (trailing CR and spaces ignored; a NUL ends it). Never fails:
 * what it does not know is REQ_UNKNOWN. */
void master_request_parse(const char *line, size_t len, master_request *r);

#endif
