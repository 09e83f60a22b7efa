/* LD_PRELOAD shim for bench/allocs.sh: counts malloc, calloc and realloc
 * calls in the process and writes the running total to stderr on SIGUSR2.
 * Not linked into chatgate; the benchmark builds it on the fly. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static unsigned long count;

void *malloc(size_t n) {
  __atomic_add_fetch(&count, 1, __ATOMIC_RELAXED);
  return __libc_malloc(n);
}

void *calloc(size_t a, size_t b) {
  __atomic_add_fetch(&count, 1, __ATOMIC_RELAXED);
  return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n) {
  __atomic_add_fetch(&count, 1, __ATOMIC_RELAXED);
  return __libc_realloc(p, n);
}

static void report(int sig) {
  (void)sig;
  char buf[64];
  int len = snprintf(buf, sizeof buf, "MALLOC_COUNT %lu\n", count);
  if (len > 0) (void)!write(2, buf, (size_t)len);
}

__attribute__((constructor)) static void install(void) { signal(SIGUSR2, report); }
