/* One read() per batch of packets on the worker's connection. libmosquitto 2.0 reads each
 * packet with three read() calls (its type byte, its length byte by byte, then its body),
 * so a stream of small messages cost three system calls per message; reading the socket
 * into a buffer of our own serves those calls from memory (mqtt_readbuf.c). */
#ifndef ROUTEMQ_MQTT_READBUF_H
#define ROUTEMQ_MQTT_READBUF_H

#include <stddef.h>

/* Buffers reads of fd from now on (-1: none); bytes buffered for another descriptor are
 * dropped. A close() of the buffered descriptor ends its buffering and drops its bytes, so
 * a new socket that gets the same number never sees the old connection's data. */
void mqtt_readbuf_attach(int fd);

/* Bytes of fd read from the socket and not yet handed to libmosquitto. epoll cannot see
 * them: a reader that stops before libmosquitto's read says EAGAIN must come back for
 * them without waiting for the socket. */
size_t mqtt_readbuf_pending(int fd);

/* Bytes read from fd's socket since it was attached (0 for another descriptor): what a
 * reader compares before and after reading to learn how much one wake-up brought. */
unsigned long long mqtt_readbuf_socket_bytes(int fd);

#endif
