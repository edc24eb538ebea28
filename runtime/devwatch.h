/* File watching for `routemq dev`: a change under the application's app/
 * directory (or its .env) asks the master for a reload. */
#ifndef ROUTEMQ_DEVWATCH_H
#define ROUTEMQ_DEVWATCH_H

#include <stdint.h>

typedef struct devwatch devwatch;

/* Watches app_dir/app recursively and app_dir/.env; NULL after logging why. */
devwatch *devwatch_open(const char *app_dir);
/* The fd to poll for readability. */
int devwatch_fd(const devwatch *w);
/* Reads pending events; returns 1 when a relevant file changed (new
 * directories are watched as they appear). */
int devwatch_read(devwatch *w);
/* Releases it. */
void devwatch_close(devwatch *w);

#endif
