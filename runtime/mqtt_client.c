/* What the epoll-driven MQTT clients share (mqtt_client.h). */
#include "mqtt_client.h"

#include <stdio.h>

void mqtt_client_sync_epoll(int epfd, int fd, uint32_t events, epoll_data_t data, int *sock, int *sock_events)
{
    if (fd != *sock) {
        if (*sock >= 0) epoll_ctl(epfd, EPOLL_CTL_DEL, *sock, NULL);  /* may be closed already */
        *sock = -1;
        if (fd >= 0) {
            struct epoll_event ev = { .events = events, .data = data };
            if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) == 0) { *sock = fd; *sock_events = (int)events; }
        }
    } else if (fd >= 0 && (int)events != *sock_events) {
        struct epoll_event ev = { .events = events, .data = data };
        if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) == 0) *sock_events = (int)events;
    }
}

const char *mqtt_client_broker(const config *c)
{
    static char name[300];
    snprintf(name, sizeof name, "%s:%d", c->broker, c->port);
    return name;
}
