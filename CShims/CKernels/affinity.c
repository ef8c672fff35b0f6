// The CPUs in this process's affinity mask (sched_getaffinity needs _GNU_SOURCE, which Swift's
// Glibc module does not define).
#define _GNU_SOURCE
#include <sched.h>
#include "vlm_kernels.h"

int vlm_affinity_cpus(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    return CPU_COUNT(&set);
}

#include <pthread.h>

void vlm_set_thread_name(const char *name) {
    pthread_setname_np(pthread_self(), name);
}
