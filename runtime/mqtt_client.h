/* What the MQTT clients driven from our own epoll loops share (the worker's
 * connection, its publishing connection, the master's presence client):
 * their socket's epoll registration and the broker's name in log lines.
 * Their reconnect backoff is backoff.h, their log rate limits log_limit.h. */
#ifndef ROUTEMQ_MQTT_CLIENT_H
#define ROUTEMQ_MQTT_CLIENT_H

#include <stdint.h>
#include <sys/epoll.h>

#include "config.h"

/* Keeps a client's epoll registration in step with libmosquitto: fd is its
 * socket now (-1: none; a new socket replaces the old one, which may be
 * closed already), events what to wait for on it, data what epoll reports
 * for it; *sock and *sock_events are what is registered (-1: nothing). A
 * failed epoll_ctl leaves the old state, so the next call tries again. */
void mqtt_client_sync_epoll(int epfd, int fd, uint32_t events, epoll_data_t data, int *sock, int *sock_events);

/* The broker as log lines name it, "host:port" (a static buffer). */
const char *mqtt_client_broker(const config *c);

#endif
