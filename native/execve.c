/*
 * keywarden_execve: replace the current process image with another program (execve(2)).
 *
 * Node 20 has no process.execve, and `keywarden exec` must not stay behind as a parent, so this
 * tiny Node-API addon does it. Exports one function:
 *
 *   execve(file: string, argv: string[], env: string[]): never
 *
 * `env` holds "NAME=value" strings and becomes the new program's entire environment. `file` is
 * resolved like execvp(3): used as a path if it contains '/', else searched on the PATH of the
 * current process (default "/usr/bin:/bin"). Unlike execvp there is no /bin/sh fallback for
 * ENOEXEC: no shell is ever involved. On success the call does not return; on failure it throws
 * an Error with `code` (e.g. "ENOENT") and `errno` set, after restoring the process state it
 * changed.
 *
 * Before exec it resets what Node changes and the new program would otherwise inherit: SIGPIPE
 * and SIGXFSZ go back to SIG_DFL (Node ignores them), the signal mask is cleared, and O_NONBLOCK
 * and FD_CLOEXEC are cleared on fds 0-2 (libuv may set them; the new program must inherit its
 * standard streams as they are, in blocking mode).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <node_api.h>

#define DEFAULT_PATH "/usr/bin:/bin"

static void free_strv(char **v) {
  if (!v) return;
  for (char **p = v; *p; p++) free(*p);
  free(v);
}

/* Copies a JS string; NULL (with a pending exception) if it is not a string or contains NUL. */
static char *get_string(napi_env env, napi_value value, const char *what) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &len) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", what);
    return NULL;
  }
  char *buf = malloc(len + 1);
  if (!buf) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  size_t copied = 0;
  napi_get_value_string_utf8(env, value, buf, len + 1, &copied);
  if (strlen(buf) != copied) {
    free(buf);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "strings passed to execve must not contain NUL bytes");
    return NULL;
  }
  return buf;
}

/* Copies a JS array of strings into a NULL-terminated vector. */
static char **get_strv(napi_env env, napi_value array, const char *what) {
  bool is_array = false;
  if (napi_is_array(env, array, &is_array) != napi_ok || !is_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", what);
    return NULL;
  }
  uint32_t n = 0;
  napi_get_array_length(env, array, &n);
  char **v = calloc((size_t)n + 1, sizeof(char *));
  if (!v) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value item;
    if (napi_get_element(env, array, i, &item) != napi_ok || !(v[i] = get_string(env, item, what))) {
      free_strv(v);
      return NULL;
    }
  }
  return v;
}

static const char *errno_code(int e) {
  switch (e) {
    case ENOENT: return "ENOENT";
    case ENOTDIR: return "ENOTDIR";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ENOEXEC: return "ENOEXEC";
    case E2BIG: return "E2BIG";
    case ELOOP: return "ELOOP";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ETXTBSY: return "ETXTBSY";
    case EISDIR: return "EISDIR";
    case ENOMEM: return "ENOMEM";
    case EINVAL: return "EINVAL";
    case EIO: return "EIO";
    default: return "EUNKNOWN";
  }
}

static void throw_errno(napi_env env, int e, const char *file) {
  napi_value code, msg, err, num;
  const char *reason = strerror(e);
  size_t len = strlen(file) + strlen(reason) + 16;
  char *text = malloc(len);
  if (text) snprintf(text, len, "execve %s: %s", file, reason);
  napi_create_string_utf8(env, errno_code(e), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, text ? text : reason, NAPI_AUTO_LENGTH, &msg);
  free(text);
  napi_create_error(env, code, msg, &err);
  napi_create_int32(env, e, &num);
  napi_set_named_property(env, err, "errno", num);
  napi_set_named_property(env, err, "code", code);
  napi_throw(env, err);
}

/* execvp(3)-style search without the shell fallback. Returns only on failure, with an errno. */
static int exec_search(const char *file, char *const argv[], char *const envp[]) {
  if (*file == '\0') return ENOENT;
  if (strchr(file, '/')) {
    execve(file, argv, envp);
    return errno;
  }
  const char *path = getenv("PATH");
  if (!path || !*path) path = DEFAULT_PATH;
  size_t flen = strlen(file);
  int seen_eacces = 0;
  int last = ENOENT;
  const char *p = path;
  for (;;) {
    const char *end = strchr(p, ':');
    size_t dlen = end ? (size_t)(end - p) : strlen(p);
    char candidate[PATH_MAX];
    if (dlen + 1 + flen + 1 <= sizeof candidate) {
      /* an empty PATH element means the current directory */
      if (dlen == 0) {
        memcpy(candidate, file, flen + 1);
      } else {
        memcpy(candidate, p, dlen);
        candidate[dlen] = '/';
        memcpy(candidate + dlen + 1, file, flen + 1);
      }
      execve(candidate, argv, envp);
      switch (errno) {
        case EACCES:
          seen_eacces = 1;
          break;
        case ENOENT:
        case ENOTDIR:
        case ESTALE:
        case ETIMEDOUT:
        case ENODEV:
          break;
        default:
          /* found something but could not run it (ENOEXEC, ETXTBSY, E2BIG, ...): stop here */
          return errno;
      }
    } else {
      last = ENAMETOOLONG;
    }
    if (!end) break;
    p = end + 1;
  }
  return seen_eacces ? EACCES : last;
}

static napi_value do_execve(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value args[3];
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  if (argc < 3) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "execve(file, argv, env) needs three arguments");
    return NULL;
  }
  char *file = get_string(env, args[0], "file must be a string");
  if (!file) return NULL;
  char **argv = get_strv(env, args[1], "argv must be an array of strings");
  if (!argv) {
    free(file);
    return NULL;
  }
  char **envp = get_strv(env, args[2], "env must be an array of strings");
  if (!envp) {
    free(file);
    free_strv(argv);
    return NULL;
  }
  if (!argv[0]) {
    free(file);
    free_strv(argv);
    free_strv(envp);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "argv must not be empty");
    return NULL;
  }

  /* Reset what Node changed and the new program would inherit. */
  struct sigaction dfl, old_pipe, old_xfsz;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(SIGPIPE, &dfl, &old_pipe);
  sigaction(SIGXFSZ, &dfl, &old_xfsz);
  sigset_t none, old_mask;
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, &old_mask);
  int old_flags[3], old_fdflags[3];
  for (int fd = 0; fd < 3; fd++) {
    old_flags[fd] = fcntl(fd, F_GETFL);
    if (old_flags[fd] != -1 && (old_flags[fd] & O_NONBLOCK)) fcntl(fd, F_SETFL, old_flags[fd] & ~O_NONBLOCK);
    old_fdflags[fd] = fcntl(fd, F_GETFD);
    if (old_fdflags[fd] != -1 && (old_fdflags[fd] & FD_CLOEXEC)) fcntl(fd, F_SETFD, old_fdflags[fd] & ~FD_CLOEXEC);
  }

  int e = exec_search(file, argv, envp);

  /* Still here: exec failed. Put things back so Node keeps working. */
  for (int fd = 0; fd < 3; fd++) {
    if (old_flags[fd] != -1 && (old_flags[fd] & O_NONBLOCK)) fcntl(fd, F_SETFL, old_flags[fd]);
    if (old_fdflags[fd] != -1 && (old_fdflags[fd] & FD_CLOEXEC)) fcntl(fd, F_SETFD, old_fdflags[fd]);
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
  sigaction(SIGPIPE, &old_pipe, NULL);
  sigaction(SIGXFSZ, &old_xfsz, NULL);
  throw_errno(env, e, file);
  free(file);
  free_strv(argv);
  free_strv(envp);
  return NULL;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_value fn;
  if (napi_create_function(env, "execve", NAPI_AUTO_LENGTH, do_execve, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "execve", fn) != napi_ok) return NULL;
  return exports;
}
