/* Unit tests for `routemq dev`'s file watching (devwatch.c): which writes
 * ask for a reload, including through a file the app links to elsewhere
 * (routemq's default app links the template's controller). inotify queues
 * an event before the write returns, so reading right after is certain. */
#include "test_util.h"
#include "devwatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[] = "/tmp/routemq-test-devwatch.XXXXXX";

static void make_dir(const char *rel)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    if (mkdir(path, 0755)) { perror(path); exit(2); }
}

int main(void)
{
    if (!mkdtemp(root)) { perror("mkdtemp"); return 2; }
    make_dir("app");
    make_dir("app/controllers");
    make_dir("shared");
    test_put_file(root, "app/controllers/own.lua", "return {}\n");
    test_put_file(root, "shared/linked.lua", "return {}\n");
    test_put_file(root, "shared/notes.txt", "x\n");
    char link[512];
    snprintf(link, sizeof link, "%s/app/controllers/linked.lua", root);
    if (symlink("../../shared/linked.lua", link)) { perror(link); return 2; }

    devwatch *w = devwatch_open(root);
    CHECK(w != NULL, "devwatch_open(%s)", root);
    if (!w) return TEST_SUMMARY("test_devwatch");
    CHECK(devwatch_read(w) == 0, "nothing changed yet");

    test_put_file(root, "app/controllers/own.lua", "return { 1 }\n");
    CHECK(devwatch_read(w) == 1, "a write to a file of app/ asks for a reload");
    CHECK(devwatch_read(w) == 0, "the events are consumed");

    test_put_file(root, "app/controllers/linked.lua", "return { 2 }\n");
    CHECK(devwatch_read(w) == 1, "a write through the link asks for a reload");

    test_put_file(root, "shared/linked.lua", "return { 3 }\n");
    CHECK(devwatch_read(w) == 1, "a write to the linked file itself asks for a reload");

    test_put_file(root, "shared/notes.txt", "y\n");
    CHECK(devwatch_read(w) == 0, "a file that is no Lua next to it does not");

    test_put_file(root, ".env", "A=1\n");
    CHECK(devwatch_read(w) == 1, "a write to .env asks for a reload");

    devwatch_close(w);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return TEST_SUMMARY("test_devwatch");
}
