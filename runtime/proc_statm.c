#include "proc_statm.h"

#include <stdio.h>
#include <unistd.h>

int proc_rss_kb(pid_t pid, uint64_t *kb)
{
    char path[64];
    if (pid > 0) snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    else snprintf(path, sizeof path, "/proc/self/statm");
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    unsigned long size, pages;
    int ok = fscanf(f, "%lu %lu", &size, &pages) == 2;
    fclose(f);
    if (!ok) return -1;
    long page = sysconf(_SC_PAGESIZE);
    *kb = (uint64_t)pages * (uint64_t)((page > 0 ? page : 4096) / 1024);
    return 0;
}
