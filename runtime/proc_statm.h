/* Resident memory of a process, as the kernel counts it in /proc/<pid>/statm. */
#ifndef ROUTEMQ_PROC_STATM_H
#define ROUTEMQ_PROC_STATM_H

#include <stdint.h>
#include <sys/types.h>

/* RSS in kB of pid (0: this process). 0 ok; -1 when it cannot be read (the
 * process is gone). */
int proc_rss_kb(pid_t pid, uint64_t *kb);

#endif
