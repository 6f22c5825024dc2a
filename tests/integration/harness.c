/* harness.c - the real emberd, real HTTP, real packages for integration tests. */
#include "harness.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"

extern char **environ;

const char *build_path(const char *rel, char buf[PATH_MAX])
{
    snprintf(buf, PATH_MAX, "%s/%s", EMBER_BUILD_DIR, rel);
    return buf;
}

void *read_file(const char *path, size_t *len)
{
    /* Read to EOF: /proc files report a size of 0. */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 4096, got = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        if (got == cap) {
            char *b = realloc(buf, cap * 2 + 1);
            if (!b) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (buf)
        buf[got] = '\0';
    if (len)
        *len = got;
    return buf;
}

/* ---- emberd ------------------------------------------------------------------ */

bool emberd_log_contains(const struct emberd *d, const char *needle)
{
    char *log = read_file(d->log_path, NULL);
    bool found = log && strstr(log, needle);
    free(log);
    return found;
}

int emberd_start(struct emberd *d, const char *const *extra_args)
{
    char path[PATH_MAX];
    if (!d->state_dir[0]) {
        snprintf(d->state_dir, sizeof(d->state_dir), "/tmp/ember-it-XXXXXX");
        if (!mkdtemp(d->state_dir))
            return -1;
        d->own_state = true;
    }
    if ((size_t)snprintf(d->log_path, sizeof(d->log_path), "%.*s.log", PATH_MAX - 8,
                         d->state_dir) >= sizeof(d->log_path))
        return -1;
    /* Orphans of emberd's sandboxes come to us, so emberd_leftovers sees them. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);

    const char *argv[64];
    int argc = 0;
    argv[argc++] = build_path("emberd", path);
    argv[argc++] = "--listen";
    argv[argc++] = "127.0.0.1:0";
    argv[argc++] = "--state";
    argv[argc++] = d->state_dir;
    for (int i = 0; extra_args && extra_args[i] && argc < 62; i++)
        argv[argc++] = extra_args[i];
    argv[argc] = NULL;

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, d->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    int r = posix_spawn(&d->pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0) {
        fprintf(stderr, "harness: cannot spawn %s: %s\n", argv[0], strerror(r));
        return -1;
    }

    /* Wait for "listening on http://127.0.0.1:PORT" (a restart appends to
     * the same log, so take the last one). */
    uint64_t deadline = ember_now_ns() + 30ull * 1000000000ull;
    while (ember_now_ns() < deadline) {
        char *log = read_file(d->log_path, NULL);
        const char *last = NULL;
        for (const char *p = log; p && (p = strstr(p, "listening on http://")); p++)
            last = p;
        if (last && d->pid > 0) {
            const char *colon = strrchr(last, ':');
            const char *nl = strchr(last, '\n');
            if (colon && nl && colon < nl) {
                /* ensure this line belongs to the current process: count lines */
                d->port = (uint16_t)atoi(colon + 1);
            }
        }
        /* A previous run's line must not count: require the count of
         * "listening" lines to exceed that of "stopped"/"killed" marks. */
        int listening = 0, ended = 0;
        for (const char *p = log; p && (p = strstr(p, "listening on http://")); p++)
            listening++;
        for (const char *p = log; p && (p = strstr(p, "== harness: emberd ended ==")); p++)
            ended++;
        free(log);
        if (d->port && listening > ended)
            return 0;
        d->port = 0;
        int status;
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            fprintf(stderr, "harness: emberd exited early (status %d); log:\n", status);
            char *l = read_file(d->log_path, NULL);
            fprintf(stderr, "%s\n", l ? l : "");
            free(l);
            d->pid = 0;
            return -1;
        }
        usleep(5000);
    }
    fprintf(stderr, "harness: emberd did not start listening\n");
    emberd_kill9(d);
    return -1;
}

static void mark_ended(const struct emberd *d)
{
    int fd = open(d->log_path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd >= 0) {
        const char *m = "== harness: emberd ended ==\n";
        ssize_t w = write(fd, m, strlen(m));
        (void)w;
        close(fd);
    }
}

int emberd_stop(struct emberd *d)
{
    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    int status = 0;
    uint64_t deadline = ember_now_ns() + 60ull * 1000000000ull;
    for (;;) {
        pid_t r = waitpid(d->pid, &status, WNOHANG);
        if (r == d->pid)
            break;
        if (ember_now_ns() > deadline) {
            fprintf(stderr, "harness: emberd did not stop after SIGTERM; killing\n");
            kill(d->pid, SIGKILL);
            waitpid(d->pid, &status, 0);
            break;
        }
        usleep(2000);
    }
    d->pid = 0;
    mark_ended(d);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || emberd_log_contains(d, "Sanitizer") ||
        emberd_log_contains(d, "runtime error:")) {
        /* A sanitizer report or an unclean exit: show the daemon's log. */
        char *log = read_file(d->log_path, NULL);
        fprintf(stderr, "harness: emberd exit status %d; its log:\n%s\n", status, log ? log : "");
        free(log);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            return 99; /* a sanitizer spoke but the exit code hid it */
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

void emberd_kill9(struct emberd *d)
{
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    d->pid = 0;
    d->port = 0;
    mark_ended(d);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void emberd_cleanup(struct emberd *d)
{
    if (d->pid > 0)
        emberd_stop(d);
    if (d->own_state && d->state_dir[0]) {
        nftw(d->state_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        unlink(d->log_path);
    }
    d->state_dir[0] = '\0';
}

/* ---- HTTP ---------------------------------------------------------------------- */

int tcp_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

int tcp_send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

char *tcp_read_all(int fd, int timeout_ms, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, timeout_ms);
        if (r <= 0)
            break;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
        ssize_t got = recv(fd, buf + n, cap - n, 0);
        if (got <= 0)
            break;
        n += (size_t)got;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* Parse one HTTP/1.1 response from @buf (Content-Length or close-delimited). */
static int parse_response(char *buf, size_t len, struct resp *out)
{
    char *end = strstr(buf, "\r\n\r\n");
    if (!end || strncmp(buf, "HTTP/1.", 7) != 0)
        return -1;
    size_t head_len = (size_t)(end - buf) + 4;
    out->status = atoi(buf + 9);
    out->head = strndup(buf, head_len);
    size_t body_len = len - head_len;
    char *cl = resp_header(out, "Content-Length");
    if (cl) {
        size_t want = (size_t)strtoull(cl, NULL, 10);
        if (want < body_len)
            body_len = want;
        free(cl);
    }
    out->body = malloc(body_len + 1);
    memcpy(out->body, buf + head_len, body_len);
    out->body[body_len] = '\0';
    out->body_len = body_len;
    return 0;
}

int http_call(uint16_t port, const char *method, const char *target, const char *const *headers,
              const void *body, size_t body_len, struct resp *out)
{
    memset(out, 0, sizeof(*out));
    int fd = tcp_connect(port);
    if (fd < 0)
        return -1;
    size_t cap = 4096;
    for (int i = 0; headers && headers[i]; i++)
        cap += strlen(headers[i]) + 2;
    char *req = malloc(cap);
    int n = snprintf(req, cap, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n", method,
                     target);
    for (int i = 0; headers && headers[i]; i++)
        n += snprintf(req + n, cap - (size_t)n, "%s\r\n", headers[i]);
    if (body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
        strcmp(method, "PATCH") == 0)
        n += snprintf(req + n, cap - (size_t)n, "Content-Length: %zu\r\n", body_len);
    n += snprintf(req + n, cap - (size_t)n, "\r\n");
    int r = tcp_send_all(fd, req, (size_t)n);
    free(req);
    if (r == 0 && body_len)
        r = tcp_send_all(fd, body, body_len);
    if (r < 0) {
        close(fd);
        return -1;
    }
    size_t len;
    char *buf = tcp_read_all(fd, 30000, &len);
    close(fd);
    r = parse_response(buf, len, out);
    free(buf);
    return r;
}

char *resp_header(const struct resp *r, const char *name)
{
    if (!r->head)
        return NULL;
    size_t nl = strlen(name);
    for (const char *line = strstr(r->head, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            return strndup(v, e ? (size_t)(e - v) : strlen(v));
        }
    }
    return NULL;
}

void resp_free(struct resp *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* ---- packages ------------------------------------------------------------------------ */

int pkg_write(const char *out_path, enum pkg_format fmt, const struct pkg_entry *entries, size_t n)
{
    struct archive *a = archive_write_new();
    if (fmt == PKG_ZIP) {
        archive_write_set_format_zip(a);
    } else {
        archive_write_set_format_pax_restricted(a);
        if (fmt == PKG_TAR_GZ)
            archive_write_add_filter_gzip(a);
    }
    if (archive_write_open_filename(a, out_path) != ARCHIVE_OK) {
        archive_write_free(a);
        return -1;
    }
    static char zeros[65536];
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct pkg_entry *e = &entries[i];
        struct archive_entry *ae = archive_entry_new();
        archive_entry_set_pathname(ae, e->path);
        archive_entry_set_mtime(ae, 1700000000, 0);
        switch (e->kind) {
        case PKG_FILE: {
            int64_t size = e->size_override > 0 ? e->size_override : (int64_t)e->len;
            archive_entry_set_filetype(ae, AE_IFREG);
            archive_entry_set_perm(ae, e->mode ? e->mode : 0644);
            archive_entry_set_size(ae, size);
            break;
        }
        case PKG_DIR:
            archive_entry_set_filetype(ae, AE_IFDIR);
            archive_entry_set_perm(ae, e->mode ? e->mode : 0755);
            break;
        case PKG_SYMLINK:
            archive_entry_set_filetype(ae, AE_IFLNK);
            archive_entry_set_perm(ae, 0777);
            archive_entry_set_symlink(ae, e->link);
            break;
        case PKG_HARDLINK:
            archive_entry_set_filetype(ae, AE_IFREG);
            archive_entry_set_perm(ae, 0644);
            archive_entry_set_hardlink(ae, e->link);
            break;
        case PKG_FIFO:
            archive_entry_set_filetype(ae, AE_IFIFO);
            archive_entry_set_perm(ae, 0644);
            break;
        case PKG_CHARDEV:
            archive_entry_set_filetype(ae, AE_IFCHR);
            archive_entry_set_perm(ae, 0644);
            archive_entry_set_rdev(ae, makedev(1, 3));
            break;
        }
        if (archive_write_header(a, ae) != ARCHIVE_OK)
            rc = -1;
        if (rc == 0 && e->kind == PKG_FILE) {
            if (e->size_override > 0) {
                int64_t left = e->size_override;
                while (left > 0 && rc == 0) {
                    size_t chunk = left > (int64_t)sizeof(zeros) ? sizeof(zeros) : (size_t)left;
                    if (archive_write_data(a, zeros, chunk) < 0)
                        rc = -1;
                    left -= (int64_t)chunk;
                }
            } else if (e->len && archive_write_data(a, e->data, e->len) < 0) {
                rc = -1;
            }
        }
        archive_entry_free(ae);
    }
    if (archive_write_close(a) != ARCHIVE_OK)
        rc = -1;
    archive_write_free(a);
    return rc;
}

int deploy_file(uint16_t port, const char *name, const char *pkg_path, struct resp *out)
{
    size_t len;
    void *data = read_file(pkg_path, &len);
    if (!data)
        return -1;
    char target[256];
    snprintf(target, sizeof(target), "/v1/functions/%s", name);
    struct resp tmp;
    struct resp *r = out ? out : &tmp;
    int rc = http_call(port, "PUT", target, NULL, data, len, r);
    free(data);
    int status = rc < 0 ? -1 : r->status;
    if (!out)
        resp_free(&tmp);
    return status;
}

int deploy_native(uint16_t port, const char *name, const char *manifest_json, const char *so_rel,
                  const char *handler_name, struct resp *out)
{
    char path[PATH_MAX];
    size_t so_len;
    void *so = read_file(build_path(so_rel, path), &so_len);
    if (!so) {
        fprintf(stderr, "harness: cannot read %s\n", path);
        return -1;
    }
    char pkg[PATH_MAX];
    snprintf(pkg, sizeof(pkg), "/tmp/ember-pkg-%d-%s.tar.gz", getpid(), name);
    struct pkg_entry entries[] = {
        {.path = "function.json",
         .kind = PKG_FILE,
         .data = manifest_json,
         .len = strlen(manifest_json)},
        {.path = handler_name, .kind = PKG_FILE, .data = so, .len = so_len, .mode = 0755},
    };
    int rc = pkg_write(pkg, PKG_TAR_GZ, entries, 2);
    free(so);
    if (rc < 0)
        return -1;
    rc = deploy_file(port, name, pkg, out);
    unlink(pkg);
    return rc;
}

int deploy_test_function(uint16_t port, const char *name, const char *so, const char *extra)
{
    char manifest[1024], rel[256];
    snprintf(manifest, sizeof(manifest), "{\"runtime\": \"native\", \"handler\": \"%s\"%s%s}", so,
             extra ? ", " : "", extra ? extra : "");
    snprintf(rel, sizeof(rel), "tests/functions/%s", so);
    struct resp r;
    int status = deploy_native(port, name, manifest, rel, so, &r);
    if (status != 200 && status != 201)
        fprintf(stderr, "harness: deploy %s: %d %s\n", name, status, r.body ? r.body : "");
    resp_free(&r);
    return status;
}

/* ---- environment --------------------------------------------------------------------- */

const char *need_root_and_namespaces(void)
{
    if (geteuid() != 0)
        return "needs root (sandboxes use namespaces and cgroups)";
    if (access("/proc/self/ns/user", F_OK) != 0)
        return "needs user namespaces (no /proc/self/ns/user)";
    char *max = read_file("/proc/sys/user/max_user_namespaces", NULL);
    bool zero = max && atoi(max) == 0;
    free(max);
    if (zero)
        return "user namespaces are disabled (user.max_user_namespaces = 0)";
    return NULL;
}

const char *need_kvm(void)
{
    if (access("/dev/kvm", R_OK | W_OK) != 0)
        return "needs /dev/kvm";
    return NULL;
}

void proc_children_each(pid_t parent, bool (*fn)(pid_t pid, const char *status, void *data),
                        void *data)
{
    DIR *proc = opendir("/proc");
    struct dirent *de;
    bool more = true;
    while (more && proc && (de = readdir(proc))) {
        if (de->d_name[0] < '1' || de->d_name[0] > '9')
            continue;
        char path[64];
        snprintf(path, sizeof(path), "/proc/%.32s/status", de->d_name);
        char *st = read_file(path, NULL);
        const char *pp = st ? strstr(st, "\nPPid:") : NULL;
        if (pp && atoi(pp + 6) == parent)
            more = fn(atoi(de->d_name), st, data);
        free(st);
    }
    if (proc)
        closedir(proc);
}

struct named_procs {
    const char *status_name; /* "Name:\t<name>\n" */
    pid_t pid[128];
    long switches[128];
    int n;
};

static bool note_named(pid_t pid, const char *status, void *data)
{
    struct named_procs *np = data;
    const char *vol = strstr(status, "\nvoluntary_ctxt_switches:");
    const char *nonvol = strstr(status, "\nnonvoluntary_ctxt_switches:");
    if (strncmp(status, np->status_name, strlen(np->status_name)) != 0 || !vol || !nonvol)
        return true;
    if (np->n < 128) {
        np->pid[np->n] = pid;
        np->switches[np->n++] = atol(vol + 25) + atol(nonvol + 28);
    }
    proc_children_each(pid, note_named, np);
    return np->n < 128;
}

/* Pin @pid to the @nth CPU this process may use; false if there is none. */
static bool pin_nth_cpu(pid_t pid, int nth)
{
    cpu_set_t allowed, set;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
        return false;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (CPU_ISSET(cpu, &allowed) && nth-- == 0) {
            CPU_ZERO(&set);
            CPU_SET(cpu, &set);
            return sched_setaffinity(pid, sizeof(set), &set) == 0;
        }
    }
    return false;
}

int warm_wakeups(const struct emberd *d, const char *target, const char *name, int calls,
                 struct warm_wakeups *out)
{
    char status_name[64];
    snprintf(status_name, sizeof(status_name), "Name:\t%s\n", name);
    struct named_procs before = {.status_name = status_name};
    struct named_procs after = {.status_name = status_name};
    proc_children_each(d->pid, note_named, &before);
    if (before.n == 0)
        return -1;
    out->pinned = pin_nth_cpu(d->pid, 0);
    for (int i = 0; out->pinned && i < before.n; i++)
        out->pinned = pin_nth_cpu(before.pid[i], 1);
    for (int i = 0; i < calls; i++) {
        struct resp r = {0};
        int rc = http_call(d->port, "GET", target, NULL, NULL, 0, &r);
        int status = r.status;
        resp_free(&r);
        if (rc != 0 || status != 200)
            return -1;
    }
    proc_children_each(d->pid, note_named, &after);
    out->busiest = 0;
    out->switches = 0;
    for (int i = 0; i < after.n; i++) {
        for (int j = 0; j < before.n; j++) {
            long sw = after.switches[i] - before.switches[j];
            if (after.pid[i] == before.pid[j] && sw > out->switches) {
                out->switches = sw;
                out->busiest = after.pid[i];
            }
        }
    }
    return 0;
}

bool warm_wakeups_ok(const struct warm_wakeups *w, int calls, char *why, size_t len)
{
    if (w->pinned && w->switches <= calls / 2)
        snprintf(why, len, "%ld context switches for %d calls: not the process that served them?",
                 w->switches, calls);
    else if (w->pinned && w->switches >= calls * 3 / 2)
        snprintf(why, len, "%ld context switches for %d calls: woken twice per call?", w->switches,
                 calls);
    else if (sched_getscheduler(w->busiest) != SCHED_BATCH)
        snprintf(why, len, "process %d does not run as SCHED_BATCH", (int)w->busiest);
    else
        return true;
    return false;
}

struct first_orphan {
    char *what;
    size_t len;
};

bool proc_status_dead(const char *status)
{
    const char *state = strstr(status, "\nState:");
    return state && (strstr(state, "Z (") == state + 8 || strstr(state, "X (") == state + 8);
}

static bool describe_orphan(pid_t pid, const char *status, void *data)
{
    struct first_orphan *o = data;
    if (proc_status_dead(status))
        return true; /* reaped on the next try */
    const char *name = strstr(status, "Name:");
    snprintf(o->what, o->len, "process %d (%.*s)", (int)pid,
             name ? (int)strcspn(name + 6, "\n") : 0, name ? name + 6 : "");
    return false;
}

/* A process of ours (re-parented to this subreaper) still alive? Reaps the
 * dead ones on the way. */
static bool orphan_alive(char *what, size_t len)
{
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    what[0] = '\0';
    struct first_orphan o = {what, len};
    proc_children_each(getpid(), describe_orphan, &o);
    return what[0] != '\0';
}

bool emberd_leftovers(const struct emberd *d, char *what, size_t len)
{
    what[0] = '\0';
    /* Processes killed with their zygote may take a moment to be reaped. */
    bool alive = true;
    for (int i = 0; i < 100 && (alive = orphan_alive(what, len)); i++)
        usleep(20000);
    if (alive)
        return true;
    struct dirent *de;
    /* mounts under the state directory */
    char *mi = read_file("/proc/self/mountinfo", NULL);
    if (mi && d->state_dir[0] && strstr(mi, d->state_dir)) {
        snprintf(what, len, "a mount under %s", d->state_dir);
        free(mi);
        return true;
    }
    free(mi);
    /* sandbox cgroups: any sb-* under a controller's ember/<id>/ whose id
     * directory was created by this daemon (it records its state dir) */
    const char *roots[] = {"/sys/fs/cgroup/memory/ember", "/sys/fs/cgroup/pids/ember",
                           "/sys/fs/cgroup/cpu/ember", "/sys/fs/cgroup/ember"};
    for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
        DIR *dd = opendir(roots[i]);
        if (!dd)
            continue;
        while ((de = readdir(dd))) {
            if (de->d_name[0] == '.' || de->d_type != DT_DIR)
                continue;
            char sub[PATH_MAX];
            snprintf(sub, sizeof(sub), "%s/%s", roots[i], de->d_name);
            /* only this daemon's: its id dir must be empty of live tasks */
            char procs[PATH_MAX + 32];
            snprintf(procs, sizeof(procs), "%s/cgroup.procs", sub);
            (void)procs;
            DIR *s2 = opendir(sub);
            if (!s2)
                continue;
            struct dirent *se;
            while ((se = readdir(s2))) {
                if (strncmp(se->d_name, "sb-", 3) != 0)
                    continue;
                char tasks[PATH_MAX + 300];
                snprintf(tasks, sizeof(tasks), "%s/%s/cgroup.procs", sub, se->d_name);
                char *t = read_file(tasks, NULL);
                bool live = false;
                for (char *p = t; p && *p; p++)
                    if (*p >= '0' && *p <= '9') {
                        /* a task whose parent is us is ours */
                        char st[64];
                        snprintf(st, sizeof(st), "/proc/%d/status", atoi(p));
                        char *s3 = read_file(st, NULL);
                        const char *pp2 = s3 ? strstr(s3, "\nPPid:") : NULL;
                        live = pp2 && atoi(pp2 + 6) == getpid();
                        free(s3);
                        break;
                    }
                free(t);
                if (live) {
                    snprintf(what, len, "cgroup %s/%s", sub, se->d_name);
                    closedir(s2);
                    closedir(dd);
                    return true;
                }
            }
            closedir(s2);
        }
        closedir(dd);
    }
    return false;
}

/* stats.@key (stats.@key.@sub with @sub) of GET /v1/functions/{name}. */
static long long fn_stats_int(uint16_t port, const char *name, const char *key, const char *sub)
{
    char target[300];
    snprintf(target, sizeof(target), "/v1/functions/%s", name);
    struct resp r;
    if (http_call(port, "GET", target, NULL, NULL, 0, &r) < 0)
        return -1;
    json_t *j = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
    resp_free(&r);
    json_t *n = json_object_get(json_object_get(j, "stats"), key);
    if (sub)
        n = json_object_get(n, sub);
    long long v = json_is_integer(n) ? (long long)json_integer_value(n) : -1;
    json_decref(j);
    return v;
}

int fn_instances(uint16_t port, const char *name, const char *state)
{
    return (int)fn_stats_int(port, name, "instances", state);
}

long long fn_stat(uint16_t port, const char *name, const char *key)
{
    return fn_stats_int(port, name, key, NULL);
}

struct burst {
    uint16_t port;
    const char *target;
    int calls, ok;
};

static void *burst_caller(void *arg)
{
    struct burst *b = arg;
    for (int i = 0; i < b->calls; i++) {
        struct resp r;
        if (http_call(b->port, "GET", b->target, NULL, NULL, 0, &r) == 0) {
            b->ok += r.status == 200;
            resp_free(&r);
        }
    }
    return NULL;
}

int concurrent_gets(uint16_t port, const char *target, int callers, int calls)
{
    pthread_t th[16];
    struct burst b[16];
    if (callers > 16)
        callers = 16;
    for (int i = 0; i < callers; i++) {
        b[i] = (struct burst){.port = port, .target = target, .calls = calls};
        pthread_create(&th[i], NULL, burst_caller, &b[i]);
    }
    int ok = 0;
    for (int i = 0; i < callers; i++) {
        pthread_join(th[i], NULL);
        ok += b[i].ok;
    }
    return ok;
}

static void *bg_get_run(void *arg)
{
    struct bg_get *g = arg;
    struct resp r;
    if (http_call(g->port, "GET", g->target, NULL, NULL, 0, &r) == 0) {
        g->status = r.status;
        snprintf(g->body, sizeof(g->body), "%s", r.body ? r.body : "");
        resp_free(&r);
    }
    return NULL;
}

void bg_get_start(struct bg_get *g, uint16_t port, const char *target)
{
    g->port = port;
    g->target = target;
    g->status = 0;
    g->body[0] = '\0';
    pthread_create(&g->thread, NULL, bg_get_run, g);
}

void bg_get_join(struct bg_get *g)
{
    pthread_join(g->thread, NULL);
}
