/* The private mosquitto that `routemq dev` starts when MQTT_BROKER is unset. */
#ifndef ROUTEMQ_DEVBROKER_H
#define ROUTEMQ_DEVBROKER_H

#include <sys/types.h>
#include "config.h"

/* Starts mosquitto on a free 127.0.0.1 port and points cfg at it. 0 ok; -1
 * after logging why. */
int devbroker_start(config *cfg);
/* Stops it (SIGTERM, then SIGKILL after 2 s) and reaps it. Safe to call twice. */
void devbroker_stop(void);
/* 1 when pid is the broker (the master's SIGCHLD loop reaped it). */
int devbroker_owns(pid_t pid);

#endif
