/* `routemq new DIR`: a new application from the template in routemq's data
 * directory (share/template), with {{name}} and {{types}} filled in. */
#include "cli.h"
#include "luavm.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* State of one copy; nftw gives its callback no user pointer. */
static struct {
    const char *src, *dst, *name, *types;
    size_t srclen;
    char err[PATH_MAX + 256];
} job;

/* 1 when dir exists and holds anything, 0 when empty or missing, -1 on error. */
static int dir_has_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) found = 1;
    closedir(d);
    return found;
}

/* mkdir -p */
static int make_dirs(const char *path)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(buf, 0755) && errno != EEXIST ? -1 : 0;
}

/* Writes text to out with every {{name}} and {{types}} replaced. */
static void write_filled(FILE *out, const char *text)
{
    const char *p = text;
    for (;;) {
        const char *q = strstr(p, "{{");
        if (!q) { fputs(p, out); return; }
        fwrite(p, 1, (size_t)(q - p), out);
        if (!strncmp(q, "{{name}}", 8)) { fputs(job.name, out); p = q + 8; }
        else if (!strncmp(q, "{{types}}", 9)) { fputs(job.types, out); p = q + 9; }
        else { fputs("{{", out); p = q + 2; }
    }
}

static int copy_file(const char *from, const char *to, mode_t mode)
{
    FILE *in = fopen(from, "rb");
    if (!in) return -1;
    char *text = NULL;
    size_t len = 0;
    FILE *buf = open_memstream(&text, &len);
    char chunk[8192];
    size_t n;
    while (buf && (n = fread(chunk, 1, sizeof chunk, in)) > 0) fwrite(chunk, 1, n, buf);
    int bad = ferror(in) || !buf;
    fclose(in);
    if (buf) fclose(buf);
    if (bad) { free(text); return -1; }
    FILE *out = fopen(to, "wbx");
    if (!out) { free(text); return -1; }
    write_filled(out, text);
    free(text);
    if (fclose(out)) return -1;
    return chmod(to, mode & 0777);
}

static int copy_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    char to[PATH_MAX];
    const char *rel = path + job.srclen;
    /* Shipped as "gitignore": a .gitignore in the package would be taken for
     * version-control debris (and would apply to the template in our tree). */
    if (!strcmp(rel, "/gitignore")) rel = "/.gitignore";
    snprintf(to, sizeof to, "%s%s", job.dst, rel);
    if (type == FTW_D) {
        if (mkdir(to, 0755) && errno != EEXIST) goto fail;
        return 0;
    }
    if (type == FTW_F) {
        if (copy_file(path, to, st->st_mode)) goto fail;
        return 0;
    }
    errno = EINVAL;
fail:
    snprintf(job.err, sizeof job.err, "%s: %s", to, strerror(errno));
    return 1;
}

int cli_new(const char *dir)
{
    char share[PATH_MAX], err[PATH_MAX + 256], src[PATH_MAX + 16], types[PATH_MAX + 16];
    if (!dir || !*dir) {
        fputs("routemq: usage: routemq new DIR\n", stderr);
        return EXIT_USAGE;
    }
    int has = dir_has_entries(dir);
    if (has < 0) { fprintf(stderr, "routemq new: %s: %s\n", dir, strerror(errno)); return EXIT_USAGE; }
    if (has) {
        fprintf(stderr, "routemq new: %s is not empty; give a new or empty directory\n", dir);
        return EXIT_USAGE;
    }
    if (luavm_find_share(share, sizeof share, err, sizeof err)) {
        fprintf(stderr, "routemq: %s\n", err);
        return EXIT_USAGE;
    }
    char real[PATH_MAX], dst[PATH_MAX];
    if (!realpath(share, real)) { fprintf(stderr, "routemq new: %s: %s\n", share, strerror(errno)); return EXIT_USAGE; }
    snprintf(src, sizeof src, "%s/template", real);
    snprintf(types, sizeof types, "%s/types", real);
    if (make_dirs(dir) || !realpath(dir, dst)) {
        fprintf(stderr, "routemq new: cannot create %s: %s\n", dir, strerror(errno));
        return EXIT_USAGE;
    }
    char namebuf[PATH_MAX];
    snprintf(namebuf, sizeof namebuf, "%s", dst);
    job.src = src;
    job.srclen = strlen(src);
    job.dst = dst;
    job.name = basename(namebuf);
    job.types = types;
    job.err[0] = 0;
    if (nftw(src, copy_entry, 16, FTW_PHYS)) {
        fprintf(stderr, "routemq new: %s\n", job.err[0] ? job.err : strerror(errno));
        return EXIT_USAGE;
    }
    printf("created %s: app/routers, app/controllers, app/middleware, spec, .env.example\n\n"
           "  cd %s\n"
           "  routemq test      run its specs\n"
           "  routemq dev       run it on a private mosquitto; reloads on changes\n"
           "  routemq console   a LuaJIT prompt with the application loaded\n", dir, dir);
    return EXIT_OK;
}
