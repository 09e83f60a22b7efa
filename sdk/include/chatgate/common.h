/* chatgate plugin SDK: versions, string views, error codes.
 *
 * Conventions for every SDK header:
 * - Pure C. Structs that cross the boundary start with `uint32_t struct_size`;
 *   a reader checks it before touching a field marked `since 1.N`.
 * - Tables are append-only. A field or function added in minor N carries a
 *   `since 1.N` marker; nothing is ever removed or reordered within a major.
 * - Strings are `cg_str_t` views, not NUL-terminated unless stated.
 * - OWNERSHIP: what the host hands a plugin is borrowed until the callback or
 *   call returns; what a plugin hands the host is copied by the host before
 *   the call returns.
 * - THREAD: everything runs on the host's loop thread unless stated. Only
 *   `cg_host_api_t.post` may be called from another thread.
 * - Errors: 0 on success or a negative CG_E* code. An async call that returns
 *   an error never calls its callback; otherwise its completion fires exactly
 *   once (cancel included), and never before the call has returned.
 */
#ifndef CHATGATE_COMMON_H
#define CHATGATE_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version this header describes. A host loads a plugin whose major
 * equals its own and whose minor is <= its own. */
#define CG_ABI_MAJOR 1
#define CG_ABI_MINOR 8

/* Marks the one symbol a plugin exports. Build plugins with
 * -fvisibility=hidden so nothing else leaks out. */
#if defined(__GNUC__)
#define CG_EXPORT __attribute__((visibility("default")))
#else
#define CG_EXPORT
#endif

/* A borrowed view of bytes. `ptr` may be NULL only when `len` is 0. */
typedef struct cg_str_s {
  const char *ptr;
  size_t len;
} cg_str_t;

/* Builds a view of a NUL-terminated string (or an empty view for NULL).
 * THREAD: any. OWNERSHIP: the view borrows `s`; keep `s` alive while it is
 * used. */
static inline cg_str_t cg_str(const char *s) {
  cg_str_t v;
  size_t n = 0;
  if (s != NULL) {
    while (s[n] != '\0') n++;
  }
  v.ptr = s;
  v.len = n;
  return v;
}

/* Error codes. Values are stable within a major version; new codes are
 * appended. Unknown negative values must be treated as generic failure. */
#define CG_ERRNO_MAP(XX)                                                    \
  XX(EINVAL, -1, "invalid argument")                                        \
  XX(ENOMEM, -2, "out of memory")                                           \
  XX(ENOENT, -3, "not found")                                               \
  XX(EEXIST, -4, "already exists")                                          \
  XX(EBUSY, -5, "busy, try again later")                                    \
  XX(ETIMEDOUT, -6, "timed out")                                            \
  XX(ECANCELED, -7, "operation canceled")                                   \
  XX(EIO, -8, "i/o error")                                                  \
  XX(ENOTSUP, -9, "not supported")                                          \
  XX(EPROTO, -10, "protocol error")                                         \
  XX(ECLOSED, -11, "closed or shutting down")                               \
  XX(ECONFIG, -12, "invalid configuration")                                 \
  XX(EUNAVAIL, -13, "service unavailable")                                  \
  XX(ETOOBIG, -14, "too large")                                             \
  XX(EPERM, -15, "not permitted")                                           \
  XX(EAGAIN, -16, "resource temporarily unavailable")

enum {
#define CG_ERRNO_ENUM(name, value, text) CG_##name = (value),
  CG_ERRNO_MAP(CG_ERRNO_ENUM)
#undef CG_ERRNO_ENUM
  CG_OK = 0
};

/* Returns a human-readable description of an error code. Header-only so a
 * plugin needs no host symbol for it. THREAD: any. OWNERSHIP: a static
 * string; never free it. */
static inline const char *cg_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
#define CG_ERRNO_CASE(name, value, text)                                    \
  case (value):                                                             \
    return text;
    CG_ERRNO_MAP(CG_ERRNO_CASE)
#undef CG_ERRNO_CASE
  default:
    return "unknown error";
  }
}

/* Returns the symbolic name of an error code ("CG_ETIMEDOUT"). THREAD: any.
 * OWNERSHIP: a static string; never free it. */
static inline const char *cg_err_name(int err) {
  switch (err) {
  case 0:
    return "CG_OK";
#define CG_ERRNO_NAME(name, value, text)                                    \
  case (value):                                                             \
    return "CG_" #name;
    CG_ERRNO_MAP(CG_ERRNO_NAME)
#undef CG_ERRNO_NAME
  default:
    return "CG_E_UNKNOWN";
  }
}

/* Log levels, shared by the host's logger and the plugin's calls. */
typedef enum cg_log_level_e {
  CG_LOG_TRACE = 0,
  CG_LOG_DEBUG = 1,
  CG_LOG_INFO = 2,
  CG_LOG_WARN = 3,
  CG_LOG_ERROR = 4
} cg_log_level_t;

#ifdef __cplusplus
}
#endif

#endif /* CHATGATE_COMMON_H */
