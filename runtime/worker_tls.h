/* TLS to the broker: every failed handshake of a worker logged with
 * OpenSSL's reason and retried (the files are checked by tls_files.h). */
#ifndef ROUTEMQ_WORKER_TLS_H
#define ROUTEMQ_WORKER_TLS_H

#include <stddef.h>

#include "config.h"

struct worker;


/* Installs libmosquitto's log callback on w->mosq: its TLS errors, which it
 * logs nowhere we see and after which it closes the socket without calling
 * on_disconnect, become one rate-limited line naming the broker and the
 * reason, and a reconnect with the backoff. */
void worker_tls_attach(struct worker *w);
/* 1 when the last connect attempt failed in TLS and that was logged. */
int worker_tls_failed(struct worker *w);
/* The connection closed before CONNACK (rc and errno as on_disconnect saw
 * them): logged like a failed handshake, unless it was one and is logged. */
void worker_tls_closed(struct worker *w, int rc, int err);
/* The connection is up: reports failed attempts not logged, resets. */
void worker_tls_connected(struct worker *w);

#endif
