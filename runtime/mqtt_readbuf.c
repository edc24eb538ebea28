/* The buffer behind mqtt_readbuf.h. libmosquitto has no hook for its socket reads: it
 * calls read() (and close()) through the dynamic linker, so the executable's own read()
 * and close() below are the ones it gets. Every other descriptor, and every caller in the
 * process, goes straight to the system call. One buffered descriptor per process: a
 * worker has one connection that carries the message stream. */
#include "mqtt_readbuf.h"

#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define READBUF_SIZE 32768 /* ~400 small messages per read() */

static struct {
    int fd;
    size_t start, end;
    unsigned long long from_socket; /* bytes read from fd's socket since attach */
    unsigned char data[READBUF_SIZE];
} rb = { .fd = -1 };

static ssize_t sys_read(int fd, void *buf, size_t count)
{
    return (ssize_t)syscall(SYS_read, fd, buf, count);
}

void mqtt_readbuf_attach(int fd)
{
    if (rb.fd == fd) return;
    rb.fd = fd;
    rb.start = rb.end = 0;
    rb.from_socket = 0;
}

size_t mqtt_readbuf_pending(int fd)
{
    return fd >= 0 && fd == rb.fd ? rb.end - rb.start : 0;
}

unsigned long long mqtt_readbuf_socket_bytes(int fd)
{
    return fd >= 0 && fd == rb.fd ? rb.from_socket : 0;
}

/* read(2) for the whole process: the buffered descriptor's bytes come from the buffer,
 * refilled with one read of as much as the socket holds; errno and the return value are
 * what read(2) would give (EAGAIN only when both the buffer and the socket are empty). */
ssize_t read(int fd, void *buf, size_t count)
{
    if (fd != rb.fd || fd < 0 || count == 0) return sys_read(fd, buf, count);
    if (rb.start == rb.end) {
        if (count >= READBUF_SIZE) {
            ssize_t n = sys_read(fd, buf, count);
            if (n > 0) rb.from_socket += (unsigned long long)n;
            return n;
        }
        ssize_t n = sys_read(fd, rb.data, READBUF_SIZE);
        if (n <= 0) return n;
        rb.from_socket += (unsigned long long)n;
        rb.start = 0;
        rb.end = (size_t)n;
    }
    size_t n = rb.end - rb.start;
    if (n > count) n = count;
    memcpy(buf, rb.data + rb.start, n);
    rb.start += n;
    return (ssize_t)n;
}

/* close(2) for the whole process: closing the buffered descriptor drops its bytes. */
int close(int fd)
{
    if (fd == rb.fd) {
        rb.fd = -1;
        rb.start = rb.end = 0;
        rb.from_socket = 0;
    }
    return (int)syscall(SYS_close, fd);
}
