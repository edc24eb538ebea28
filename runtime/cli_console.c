/* `routemq console`: a LuaJIT prompt (lua/routemq/console.lua) with the
 * application loaded through the testing harness. Line editing comes from
 * libreadline or libedit, loaded with dlopen here only, so that no worker
 * maps them; without either (or without a terminal) lines are read plainly. */
#include "cli.h"
#include "luavm.h"

#include <dlfcn.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *(*rl_readline)(const char *prompt);
static void (*rl_add_history)(const char *line);

static void load_line_editor(void)
{
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) return;
    static const char *const libs[] = { "libreadline.so.8", "libedit.so.2", NULL };
    for (int i = 0; libs[i]; i++) {
        void *h = dlopen(libs[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) continue;
        rl_readline = (char *(*)(const char *))dlsym(h, "readline");
        rl_add_history = (void (*)(const char *))dlsym(h, "add_history");
        if (rl_readline) return;
        dlclose(h);
    }
}

/* readline(prompt) -> the line without its newline, or nil at end of input. */
static int console_readline(lua_State *L)
{
    const char *prompt = luaL_optstring(L, 1, "> ");
    if (rl_readline) {
        char *line = rl_readline(prompt);
        if (!line) return 0;
        if (*line && rl_add_history) rl_add_history(line);
        lua_pushstring(L, line);
        free(line);
        return 1;
    }
    fputs(prompt, stdout);
    fflush(stdout);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) { free(line); return 0; }
    if (n > 0 && line[n - 1] == '\n') line[--n] = 0;
    lua_pushlstring(L, line, (size_t)n);
    free(line);
    return 1;
}

int cli_console(cli_opts *o)
{
    char err[4096];
    luavm_paths paths;
    if (luavm_find_paths(&paths, err, sizeof err)) { fprintf(stderr, "routemq: %s\n", err); return EXIT_USAGE; }
    /* In the application's directory, as `routemq test` runs its specs. */
    if (chdir(o->app)) { perror(o->app); return EXIT_USAGE; }
    lua_State *L = luavm_new(&paths, err, sizeof err);
    if (!L) { fprintf(stderr, "routemq: %s\n", err); return EXIT_USAGE; }
    load_line_editor();
    int rc = EXIT_USAGE;
    lua_getglobal(L, "require");
    lua_pushstring(L, "routemq.console");
    if (luavm_pcall(L, 1, 1, err, sizeof err, NULL, 0)) {
        fprintf(stderr, "routemq console: %s\n", err);
        lua_close(L);
        return EXIT_USAGE;
    }
    lua_getfield(L, -1, "run");
    lua_createtable(L, 0, 3);
    char cwd[PATH_MAX];
    lua_pushstring(L, getcwd(cwd, sizeof cwd) ? cwd : o->app);
    lua_setfield(L, -2, "app");
    lua_pushcfunction(L, console_readline);
    lua_setfield(L, -2, "readline");
    lua_pushboolean(L, rl_readline != NULL);
    lua_setfield(L, -2, "editing");
    if (luavm_pcall(L, 1, 1, err, sizeof err, NULL, 0)) fprintf(stderr, "routemq console: %s\n", err);
    else rc = lua_tointeger(L, -1) == 0 ? EXIT_OK : EXIT_USAGE;
    lua_close(L);
    return rc;
}
