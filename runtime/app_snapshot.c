#include "app_snapshot.h"
#include "clock.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DEPTH 32  /* a symlink loop ends here, not in a stack overflow */

static const app_snapshot *current;

void app_snapshot_use(const app_snapshot *s) { current = s; }
const app_snapshot *app_snapshot_current(void) { return current; }

typedef struct {
    app_snapshot *s;
    const app_snapshot *prev;  /* files unchanged since it are not read */
    int cap;
    size_t bytes;
    char *err;
    size_t errlen;
} reader;

static int read_whole(const char *path, char **data, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        if (n == cap) {
            char *nb = cap <= APP_SNAPSHOT_MAX_BYTES ? realloc(buf, cap * 2 + 1) : NULL;
            if (!nb) { free(buf); buf = NULL; errno = ENOMEM; break; }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { int e = errno; free(buf); buf = NULL; errno = e; break; }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    if (!buf) return -1;
    buf[n] = 0;
    *data = buf;
    *len = n;
    return 0;
}

static int add_file(reader *r, const char *full, const char *rel, const struct stat *st)
{
    app_snapshot *s = r->s;
    if (s->nfiles == r->cap) {
        int cap = r->cap ? r->cap * 2 : 16;
        app_file *nf = realloc(s->files, (size_t)cap * sizeof *nf);
        if (!nf) { snprintf(r->err, r->errlen, "out of memory"); return -1; }
        s->files = nf;
        r->cap = cap;
    }
    app_file *f = &s->files[s->nfiles];
    memset(f, 0, sizeof *f);
    f->mtime_ns = (long long)st->st_mtim.tv_sec * NS_PER_S + st->st_mtim.tv_nsec;
    f->ino = (unsigned long long)st->st_ino;
    const app_file *old = app_snapshot_find(r->prev, rel);
    if (old && old->len == (size_t)st->st_size && old->mtime_ns == f->mtime_ns && old->ino == f->ino) {
        f->len = old->len;
    } else if (read_whole(full, &f->data, &f->len)) {
        snprintf(r->err, r->errlen, "%s: cannot read: %s", rel, strerror(errno));
        return -1;
    }
    r->bytes += f->len;
    if (r->bytes > APP_SNAPSHOT_MAX_BYTES) {
        free(f->data);
        snprintf(r->err, r->errlen, "app/: more than %u MiB of Lua files", APP_SNAPSHOT_MAX_BYTES >> 20);
        return -1;
    }
    if (!(f->path = strdup(rel))) {
        free(f->data);
        snprintf(r->err, r->errlen, "out of memory");
        return -1;
    }
    s->nfiles++;
    return 0;
}

static int walk(reader *r, const char *root, const char *rel, int depth)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", root, rel);
    DIR *d = opendir(dir);
    if (!d) {
        if (depth == 0 && errno == ENOENT) return 0;  /* no app/: the loader names what is missing */
        snprintf(r->err, r->errlen, "%s: cannot open: %s", rel, strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char sub[4096], full[8192];
        if ((size_t)snprintf(sub, sizeof sub, "%s/%s", rel, e->d_name) >= sizeof sub) continue;
        snprintf(full, sizeof full, "%s/%s", root, sub);
        struct stat st;
        if (stat(full, &st)) continue;  /* a dangling link is no code */
        if (S_ISDIR(st.st_mode)) {
            if (depth + 1 < MAX_DEPTH) rc = walk(r, root, sub, depth + 1);
        } else if (S_ISREG(st.st_mode)) {
            size_t n = strlen(e->d_name);
            if (n > 4 && !strcmp(e->d_name + n - 4, ".lua")) rc = add_file(r, full, sub, &st);
        }
    }
    closedir(d);
    return rc;
}

static int by_path(const void *a, const void *b)
{
    return strcmp(((const app_file *)a)->path, ((const app_file *)b)->path);
}

static app_snapshot *read_since(const char *root, const app_snapshot *prev, char *err, size_t errlen)
{
    app_snapshot *s = calloc(1, sizeof *s);
    if (!s) { snprintf(err, errlen, "out of memory"); return NULL; }
    reader r = { .s = s, .prev = prev, .err = err, .errlen = errlen };
    if (walk(&r, root, "app", 0)) {
        app_snapshot_free(s);
        return NULL;
    }
    if (s->nfiles > 1) qsort(s->files, (size_t)s->nfiles, sizeof *s->files, by_path);
    return s;
}

app_snapshot *app_snapshot_read(const char *root, char *err, size_t errlen)
{
    return read_since(root, NULL, err, errlen);
}

int app_snapshot_changed(const app_snapshot *snap, const char *root)
{
    char err[256];
    app_snapshot *now = read_since(root, snap, err, sizeof err);
    int changed = !app_snapshot_equal(now, snap);
    app_snapshot_free(now);
    return changed;
}

void app_snapshot_free(app_snapshot *s)
{
    if (!s) return;
    for (int i = 0; i < s->nfiles; i++) {
        free(s->files[i].path);
        free(s->files[i].data);
    }
    free(s->files);
    free(s);
}

int app_snapshot_equal(const app_snapshot *a, const app_snapshot *b)
{
    if (!a || !b) return a == b;
    if (a->nfiles != b->nfiles) return 0;
    for (int i = 0; i < a->nfiles; i++) {
        const app_file *x = &a->files[i], *y = &b->files[i];
        if (strcmp(x->path, y->path) || x->len != y->len) return 0;
        if (x->data && y->data && memcmp(x->data, y->data, x->len)) return 0;  /* NULL: known unchanged */
    }
    return 1;
}

const app_file *app_snapshot_find(const app_snapshot *s, const char *path)
{
    if (!s) return NULL;
    app_file key = { .path = (char *)path };
    return s->nfiles ? bsearch(&key, s->files, (size_t)s->nfiles, sizeof *s->files, by_path) : NULL;
}
