/* Unit tests for the worker's read buffer (mqtt_readbuf.c): one read() takes what the
 * socket holds and small reads are served from it in order; EAGAIN only when both are
 * empty; other descriptors untouched; and a close() drops the buffered bytes, so a new
 * socket given the same number never reads the old connection's data. */
#include "test_util.h"
#include "../mqtt_readbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A non-blocking socket pair: sv[0] is read (the "broker connection"), sv[1] written. */
static void pair(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) { perror("socketpair"); exit(2); }
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
}

int main(void)
{
    int sv[2];
    char buf[64];
    pair(sv);
    mqtt_readbuf_attach(sv[0]);
    errno = 0;
    CHECK(read(sv[0], buf, 1) == -1 && errno == EAGAIN, "nothing to read: EAGAIN (errno %d)", errno);

    const char *stream = "\x30\x0b\x00\x03" "a/bhello" "\x30\x05\x00\x01" "xyz";
    size_t total = 4 + 8 + 4 + 3;
    CHECK(write(sv[1], stream, total) == (ssize_t)total, "written");
    CHECK(read(sv[0], buf, 1) == 1 && buf[0] == '\x30', "the first byte");
    CHECK(mqtt_readbuf_socket_bytes(sv[0]) == total, "the socket gave %llu bytes", mqtt_readbuf_socket_bytes(sv[0]));
    CHECK(mqtt_readbuf_pending(sv[0]) == total - 1, "one read took all the socket held: %zu pending",
          mqtt_readbuf_pending(sv[0]));
    CHECK(read(sv[0], buf, 1) == 1 && buf[0] == '\x0b', "then the next, from the buffer");
    CHECK(read(sv[0], buf, 10) == 10 && memcmp(buf, "\x00\x03" "a/bhello", 10) == 0, "a body");
    CHECK(read(sv[0], buf, 64) == 7 && memcmp(buf, "\x30\x05\x00\x01" "xyz", 7) == 0,
          "a larger read gets what is buffered, not more");
    errno = 0;
    CHECK(read(sv[0], buf, 1) == -1 && errno == EAGAIN, "drained: EAGAIN again (errno %d)", errno);

    int other[2];
    pair(other);
    CHECK(write(other[1], "zz", 2) == 2 && write(sv[1], "q", 1) == 1, "written");
    CHECK(read(other[0], buf, 1) == 1 && mqtt_readbuf_pending(other[0]) == 0, "another descriptor is not buffered");
    CHECK(read(other[0], buf, 1) == 1 && buf[0] == 'z', "and reads as it always did");

    /* Bytes left in the buffer when the connection is closed... */
    CHECK(write(sv[1], "old!", 4) == 4, "written");
    CHECK(read(sv[0], buf, 1) == 1 && buf[0] == 'q' && mqtt_readbuf_pending(sv[0]) == 4, "4 buffered");
    int old_fd = sv[0];
    close(sv[0]);
    close(sv[1]);
    CHECK(mqtt_readbuf_pending(old_fd) == 0 && mqtt_readbuf_socket_bytes(old_fd) == 0, "close drops them");
    /* ...are never served to the next socket, even with the same number. */
    pair(sv);
    CHECK(sv[0] == old_fd, "the new socket reuses the number (%d, %d)", sv[0], old_fd);
    errno = 0;
    CHECK(read(sv[0], buf, 4) == -1 && errno == EAGAIN, "the new socket reads nothing of the old (errno %d)", errno);
    mqtt_readbuf_attach(sv[0]);
    CHECK(write(sv[1], "new", 3) == 3 && read(sv[0], buf, 64) == 3 && memcmp(buf, "new", 3) == 0, "only its own");

    CHECK(write(sv[1], "", 0) == 0, "nothing");
    close(sv[1]);
    CHECK(read(sv[0], buf, 8) == 0, "end of stream: 0");
    close(sv[0]);
    close(other[0]);
    close(other[1]);
    return TEST_SUMMARY("test_mqtt_readbuf");
}
