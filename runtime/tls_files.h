/* The configuration's TLS files, checked at start (tls_files.c). */
#ifndef ROUTEMQ_TLS_FILES_H
#define ROUTEMQ_TLS_FILES_H

#include <stddef.h>

#include "config.h"

/* Checks MQTT_TLS_CA_CERTS, MQTT_TLS_CERTFILE and MQTT_TLS_KEYFILE (when TLS
 * is enabled): each exists, is readable and parses as PEM certificates /
 * a private key. 0 ok; -1 with "VARIABLE: path: reason" in err. */
int tls_check_files(const config *c, char *err, size_t errlen);

#endif
