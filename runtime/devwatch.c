/* inotify over the application tree. Editors write files in many ways
 * (rename over, truncate and write, delete and create), so any write, move or
 * creation of a .lua file, and any change to .env, counts; the master
 * debounces. */
#include "devwatch.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ONLYDIR)

struct devwatch {
    int fd;
    int root_wd;          /* the application root, for .env */
    char app[PATH_MAX];   /* <app_dir>/app, watched recursively */
};

/* A file of the app that is a symbolic link (routemq's default app links
 * the template's controller): an edit reaches the file it points to, whose
 * directory is watched too. */
static void watch_link_target(devwatch *w, const char *path)
{
    struct stat st;
    char real[PATH_MAX];
    if (lstat(path, &st) || !S_ISLNK(st.st_mode) || !realpath(path, real)) return;
    char *slash = strrchr(real, '/');
    if (!slash || slash == real) return;
    *slash = 0;
    if (inotify_add_watch(w->fd, real, WATCH_MASK) < 0)
        log_warn("routemq dev: cannot watch %s: %s", real, strerror(errno));
}

static void watch_tree(devwatch *w, const char *dir, int depth)
{
    if (depth > 16) return;
    if (inotify_add_watch(w->fd, dir, WATCH_MASK) < 0) {
        log_warn("routemq dev: cannot watch %s: %s", dir, strerror(errno));
        return;
    }
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[PATH_MAX];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st)) continue;
        if (S_ISDIR(st.st_mode)) watch_tree(w, path, depth + 1);
        else watch_link_target(w, path);
    }
    closedir(d);
}

devwatch *devwatch_open(const char *app_dir)
{
    devwatch *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0) {
        log_warn("routemq dev: cannot watch files: %s", strerror(errno));
        free(w);
        return NULL;
    }
    snprintf(w->app, sizeof w->app, "%s/app", app_dir);
    watch_tree(w, w->app, 0);
    w->root_wd = inotify_add_watch(w->fd, app_dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE);
    return w;
}

int devwatch_fd(const devwatch *w) { return w->fd; }

int devwatch_read(devwatch *w)
{
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    int changed = 0;
    ssize_t n;
    while ((n = read(w->fd, buf, sizeof buf)) > 0) {
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            p += sizeof *ev + ev->len;
            const char *name = ev->len ? ev->name : "";
            size_t len = strlen(name);
            if (ev->wd == w->root_wd) {
                changed |= strcmp(name, ".env") == 0;
                continue;
            }
            if (name[0] == '.') continue;  /* editor swap and lock files */
            if ((ev->mask & IN_ISDIR) && (ev->mask & (IN_CREATE | IN_MOVED_TO))) {
                /* The event names the directory but not its parent's path: rescan;
                 * watching an already watched directory is a no-op. */
                watch_tree(w, w->app, 0);
                changed = 1;
                continue;
            }
            if (len > 4 && strcmp(name + len - 4, ".lua") == 0) changed = 1;
        }
    }
    return changed;
}

void devwatch_close(devwatch *w)
{
    if (!w) return;
    close(w->fd);
    free(w);
}
