/* Reconnect backoff shared by the MQTT clients (the worker's two
 * connections, the master's presence client): each failure waits twice as
 * long as the one before, up to a ceiling (MQTT_RETRY_MIN/MAX_DELAY). */
#ifndef ROUTEMQ_BACKOFF_H
#define ROUTEMQ_BACKOFF_H

/* The wait before the next attempt, seconds: *delay (min when not set yet,
 * <= 0), which is doubled, up to max, for the failure after. */
static inline double backoff_next(double *delay, double min, double max)
{
    double d = *delay > 0 ? *delay : min;
    *delay = d * 2 > max ? max : d * 2;
    return d;
}

#endif
