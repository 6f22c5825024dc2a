/* harness.h - what every integration test uses: the real emberd on port 0
 * with a temporary state directory, a small blocking HTTP client over
 * loopback, and packages built by the test with libarchive.
 *
 * Paths: EMBER_BUILD_DIR (compile definition) holds emberd, ember-agent,
 * ember-vmm, the example packages and the test functions (tests/functions).
 */
#ifndef EMBER_TESTS_HARNESS_H
#define EMBER_TESTS_HARNESS_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct emberd {
    pid_t pid;
    uint16_t port;
    char state_dir[PATH_MAX];
    char log_path[PATH_MAX]; /* emberd's stderr */
    bool own_state;          /* remove state_dir at stop */
};

/**
 * Start build/emberd --listen 127.0.0.1:0 --state <tmp> plus @extra_args
 * (NULL-terminated, may be NULL), wait for "listening on http://" in its log
 * and read the port. If d->state_dir is non-empty on entry it is reused (for
 * restart tests). Returns 0 or -1 (with the log printed to stderr).
 */
int emberd_start(struct emberd *d, const char *const *extra_args);
/** SIGTERM and wait; returns the exit status (0 for a clean drain). */
int emberd_stop(struct emberd *d);
/** SIGKILL and reap, keeping the state directory. */
void emberd_kill9(struct emberd *d);
/** Remove the state directory (after stop). */
void emberd_cleanup(struct emberd *d);
/** Does emberd's log contain @needle? */
bool emberd_log_contains(const struct emberd *d, const char *needle);

struct resp {
    int status;
    char *head; /* raw status line + headers, NUL-terminated */
    char *body; /* NUL-terminated for convenience */
    size_t body_len;
};

/**
 * One request on a fresh connection (Connection: close). @headers is a
 * NULL-terminated list of "Name: value" strings (may be NULL). Returns 0 or
 * -1 on a transport error. Times out after 30 s.
 */
int http_call(uint16_t port, const char *method, const char *target, const char *const *headers,
              const void *body, size_t body_len, struct resp *out);
/** Header value (case-insensitive name) as a malloc'd string, or NULL. */
char *resp_header(const struct resp *r, const char *name);
void resp_free(struct resp *r);

/** Raw TCP: connect to 127.0.0.1:port (blocking fd), or -1. */
int tcp_connect(uint16_t port);
/** Send all of @data. */
int tcp_send_all(int fd, const void *data, size_t len);
/** Read until EOF or @timeout_ms of silence; malloc'd, NUL-terminated. */
char *tcp_read_all(int fd, int timeout_ms, size_t *len);

/** One file of a package under construction. */
enum pkg_kind { PKG_FILE, PKG_DIR, PKG_SYMLINK, PKG_HARDLINK, PKG_FIFO, PKG_CHARDEV };
struct pkg_entry {
    const char *path; /* as stored in the archive */
    enum pkg_kind kind;
    const void *data; /* PKG_FILE */
    size_t len;
    unsigned mode;         /* permission bits (0 = 0644 / 0755 for dirs) */
    const char *link;      /* symlink / hardlink target */
    int64_t size_override; /* >0: claim this size and write zeros (bombs) */
};

enum pkg_format { PKG_TAR_GZ, PKG_TAR, PKG_ZIP };

/** Write a package with libarchive to @out_path. 0 or -1. */
int pkg_write(const char *out_path, enum pkg_format fmt, const struct pkg_entry *entries, size_t n);
/** Read a whole file (e.g. a built .so) into a malloc'd buffer. */
void *read_file(const char *path, size_t *len);
/** Build dir path of an artefact: "%s/%s" EMBER_BUILD_DIR, rel. Static buffer per call. */
const char *build_path(const char *rel, char buf[PATH_MAX]);

/**
 * Package a native function: function.json from @manifest_json, plus the
 * built shared object @so_rel (relative to the build dir) stored as
 * @handler_name. Writes to a temp file, PUTs it as @name, returns the status
 * (201/200 expected) or -1; fills @out if non-NULL.
 */
int deploy_native(uint16_t port, const char *name, const char *manifest_json, const char *so_rel,
                  const char *handler_name, struct resp *out);
/**
 * Deploy the test function build/tests/functions/@so as @name with the
 * manifest {"runtime": "native", "handler": @so, @extra_manifest} (@extra may
 * be NULL). Returns the HTTP status (201/200 expected); on anything else the
 * response body is printed to stderr.
 */
int deploy_test_function(uint16_t port, const char *name, const char *so, const char *extra);

/** PUT an arbitrary package file. */
int deploy_file(uint16_t port, const char *name, const char *pkg_path, struct resp *out);

/** How many of function @name's sandboxes are in @state ("zygote", "idle",
 *  ...; GET /v1/functions/{name} stats.instances), or -1. */
int fn_instances(uint16_t port, const char *name, const char *state);

/** stats.@key of GET /v1/functions/{name} (an integer), or -1. */
long long fn_stat(uint16_t port, const char *name, const char *key);

/** @callers threads (at most 16) make @calls GETs of @target each; returns
 *  how many answered 200. */
int concurrent_gets(uint16_t port, const char *target, int callers, int calls);

/** One GET on a thread of its own, for a call that must be in flight while
 *  the test makes others: bg_get_start, then bg_get_join for the answer. */
struct bg_get {
    uint16_t port;
    const char *target;
    int status; /* 0 if the call failed */
    char body[256];
    pthread_t thread;
};
void bg_get_start(struct bg_get *g, uint16_t port, const char *target);
void bg_get_join(struct bg_get *g);

/** Skip reasons: NULL when the environment can run sandboxes, else why not. */
const char *need_root_and_namespaces(void);
const char *need_kvm(void);

/**
 * After emberd_stop: is anything of that emberd left on the host? Processes
 * (emberd_start makes the test process a child subreaper, so orphaned
 * sandbox processes would be re-parented to it), mounts under its state
 * directory, and sandbox cgroups (sb-*) under ember's cgroup roots that
 * mention its state directory's hash. Fills @what with the first found.
 */
bool emberd_leftovers(const struct emberd *d, char *what, size_t len);

/**
 * Call @fn with the pid and /proc/PID/status text of each process whose
 * parent is @parent (zombies too), until @fn returns false.
 */
void proc_children_each(pid_t parent, bool (*fn)(pid_t pid, const char *status, void *data),
                        void *data);
/** Is the process of this /proc/PID/status text a zombie (or dead)? */
bool proc_status_dead(const char *status);

/** What warm_wakeups saw. */
struct warm_wakeups {
    pid_t busiest; /* the process named @name that switched most */
    long switches; /* its context switches over the calls, voluntary or not */
    bool pinned;   /* emberd and those processes ran on two different CPUs */
};

/**
 * Make @calls GETs of @target (each must answer 200) and count the context
 * switches of the processes named @name under emberd (its children, and
 * theirs through processes of that name). Where the test may use two CPUs,
 * emberd's loop thread and those processes are pinned apart first: on one
 * CPU emberd preempts a sandbox before it sleeps, and a second wake-up per
 * call would never be seen. 0, or -1 if no such process exists.
 */
int warm_wakeups(const struct emberd *d, const char *target, const char *name, int calls,
                 struct warm_wakeups *out);
/**
 * Did the busiest process sleep about once per call (more than half a
 * switch per call, fewer than one and a half; counted only if pinned) and
 * run as SCHED_BATCH? If not, says what in @why.
 */
bool warm_wakeups_ok(const struct warm_wakeups *w, int calls, char *why, size_t len);

#endif
