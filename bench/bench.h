/* bench.h - the parts of ember-bench and how they call each other.
 *
 * ember-bench is one executable on one libuv loop:
 *   hist.c    log-linear latency histogram (HdrHistogram-like)
 *   httpc.c   target URL, keep-alive client connections (llhttp), a
 *             closed-loop batch runner for admin calls, Server-Timing parsing
 *   load.c    open-loop arrival scheduler and the per-request accounting
 *   report.c  run results as text, JSON and per-request CSV
 *   sweep.c   PATCH /v1/pool knob sweeps, /metrics polling, target search
 *   svg.c     the sweep chart
 *   admin.c   deploy-rate and cold
 *   main.c    command line
 * Everything here is private to the bench/ folder; names are prefixed with
 * the file they live in.
 */
#ifndef EMBER_BENCH_BENCH_H
#define EMBER_BENCH_BENCH_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <uv.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* ---- hist.c ------------------------------------------------------------ */

/*
 * Values below 2^HIST_SUB_BITS are counted exactly; above, every power of two
 * is split into 2^HIST_SUB_BITS linear sub-buckets, so a reported value is
 * within 1/2^HIST_SUB_BITS (0.8%) of the true one, from nanoseconds to
 * centuries, in a fixed 59 KiB.
 */
#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
    uint64_t total;
    uint64_t min, max; /* exact */
    long double sum;
    uint64_t counts[HIST_BUCKETS];
};

/** A zeroed histogram on the heap, or NULL (out of memory). Free with free(). */
struct hist *hist_new(void);
/** Forget every sample. */
void hist_reset(struct hist *h);
/** Count one value (nanoseconds, by convention). Never fails. */
void hist_record(struct hist *h, uint64_t value);
/** Add every count of @src to @dst. */
void hist_merge(struct hist *dst, const struct hist *src);
/** Value at percentile @p (0..100): the midpoint of its bucket clamped to [min, max]; 0 if empty.
 */
uint64_t hist_percentile(const struct hist *h, double p);
/** Exact mean of the recorded values; 0 if empty. */
double hist_mean(const struct hist *h);

/* ---- httpc.c: where to send -------------------------------------------- */

struct bench_target {
    char url[512];         /* as given, for reports */
    char host_header[300]; /* "127.0.0.1:8080" */
    char prefix[256];      /* URL path prefix without trailing '/', often "" */
    const char *token;     /* Bearer token for /v1/ and /metrics, or NULL */
    struct sockaddr_storage addr;
};

/**
 * Parse "http://HOST[:PORT][/PREFIX]" and resolve HOST (getaddrinfo; the
 * first address wins). @token is borrowed. 0, or -1 with @err filled.
 */
int httpc_target_parse(const char *url, const char *token, struct bench_target *t, char *err,
                       size_t errlen);

/**
 * A request head: "METHOD PREFIX+PATH HTTP/1.1" with Host, Content-Length (if
 * @body_len > 0 or the method usually has a body) and Content-Type (if not
 * NULL). The Authorization header is added for every path except /fn/...:
 * the operator's token must never reach function code. malloc'd, or NULL.
 */
char *httpc_format_head(const struct bench_target *t, const char *method, const char *path,
                        const char *content_type, size_t body_len);

/* ---- httpc.c: Server-Timing --------------------------------------------- */

enum acq_kind {
    ACQ_WARM,
    ACQ_STEM,
    ACQ_ZYGOTE,
    ACQ_SNAPSHOT,
    ACQ_COLD,
    ACQ_OTHER,
    ACQ_NONE,
    ACQ__COUNT
};
enum phase { PH_QUEUE, PH_ACQUIRE, PH_INIT, PH_RUN, PH__COUNT };

extern const char *const acq_kind_names[ACQ__COUNT];
extern const char *const phase_names[PH__COUNT];

struct timing {
    enum acq_kind kind; /* ACQ_NONE if there was no acquire metric */
    unsigned have;      /* bit per phase with a dur */
    double dur_ms[PH__COUNT];
};

/** Parse a Server-Timing value (RFC-style list of metric;param=value). Never fails. */
void httpc_timing_parse(const char *s, size_t len, struct timing *out);

/* ---- httpc.c: connections ---------------------------------------------- */

#define HRESP_TIMING_MAX 512
#define HRESP_BODY_MAX (16u << 20)

struct hresp {
    int status;
    bool keep_alive;
    uint64_t done_ns;              /* ember_now_ns() when the last byte parsed */
    char timing[HRESP_TIMING_MAX]; /* Server-Timing (repeats joined with ", ") */
    size_t timing_len;
    char *body; /* only when hconn.keep_body; owned by the conn */
    size_t body_len, body_cap;
};

struct hconn;

struct hconn_ops {
    /** The request finished: @err 0 and c->resp filled, or a libuv error
     *  code (UV_ECONNREFUSED, UV_ECONNRESET, UV_EOF, UV_EPROTO, UV_ETIMEDOUT...). */
    void (*on_response)(struct hconn *c, int err);
    /** The connection can take hconn_send() again. */
    void (*on_idle)(struct hconn *c);
    /** After hconn_close_final(): the handle is closed; may be NULL. */
    void (*on_closed)(struct hconn *c);
};

enum hconn_state { HCONN_CLOSED, HCONN_CONNECTING, HCONN_IDLE, HCONN_BUSY, HCONN_CLOSING };

/*
 * One keep-alive HTTP/1.1 client connection, one request at a time. It
 * connects on the first send and reconnects on the send after the server
 * closed it. The caller embeds it and finds itself with container_of.
 */
struct hconn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    llhttp_t parser;
    uv_loop_t *loop;
    const struct bench_target *target;
    const struct hconn_ops *ops;
    enum hconn_state state;
    bool in_flight; /* a request is out and on_response not yet called */
    bool final;     /* closing for good */
    bool keep_body;
    bool head; /* HEAD request: the response has no body */
    bool complete;
    bool write_pending; /* uv_write queued, write_req in use */
    bool idle_pending;  /* a request ended with a drop: on_idle after close */
    bool field_timing, value_started;
    uv_buf_t bufs[2]; /* the request being sent (borrowed) */
    unsigned nbufs;
    uint64_t sent_ns;
    struct hresp resp;
    char field[16];
    size_t field_len;
    char rbuf[16384];
};

/** Set up a closed connection to @t (borrowed, must outlive @c); nothing is opened yet. */
void hconn_init(struct hconn *c, uv_loop_t *loop, const struct bench_target *t,
                const struct hconn_ops *ops);
/** Connect ahead of the first request (a failure is silent: the send retries). */
void hconn_connect(struct hconn *c);
/**
 * Send one request: @bufs (at most 2: head and body) are borrowed until
 * on_response. The connection must not be in flight. Connects if needed.
 * @now_ns is ember_now_ns() if the caller has it, else 0.
 */
void hconn_send(struct hconn *c, const uv_buf_t *bufs, unsigned nbufs, bool head, uint64_t now_ns);
/** Fail the request in flight (if any) with @err and drop the connection;
 *  on_idle follows once it is closed. */
void hconn_abort(struct hconn *c, int err);
/** Close for good without calling on_response; on_closed follows. */
void hconn_close_final(struct hconn *c);
/** Free what the connection owns (after on_closed or if it never opened). */
void hconn_destroy(struct hconn *c);

/* ---- httpc.c: closed-loop batches (admin calls, deploys, cold calls) ---- */

struct batch_item {
    /* in */
    const char *method;
    char *path; /* owned by the caller */
    const void *body;
    size_t body_len;
    const char *content_type;
    /* out */
    int status; /* 0 on a transport error */
    int err;    /* 0 or a libuv error */
    uint64_t latency_ns;
    struct timing timing;
    char *resp_body; /* when keep_body: malloc'd, NUL-terminated; caller frees */
    size_t resp_body_len;
};

/**
 * Run @items with @concurrency connections, each taking the next item when
 * its previous one finished (closed loop). @timeout_ms per request. Runs the
 * loop until all are done. @elapsed_ns (may be NULL) gets the wall time.
 * Returns 0, or -ENOMEM.
 */
int httpc_batch(uv_loop_t *loop, const struct bench_target *t, struct batch_item *items, size_t n,
                unsigned concurrency, uint32_t timeout_ms, bool keep_body, uint64_t *elapsed_ns);

/** One request, body kept. Returns the status, or -1 on a transport error
 *  (with *err_out set if not NULL). *body_out is malloc'd (caller frees). */
int httpc_call(uv_loop_t *loop, const struct bench_target *t, const char *method, const char *path,
               const char *content_type, const void *body, size_t body_len, uint32_t timeout_ms,
               char **body_out, int *err_out);

/* ---- load.c ------------------------------------------------------------ */

enum pattern { PAT_CONSTANT, PAT_POISSON, PAT_BURST, PAT_TRACE };

struct load_fn {
    char *name;
    char *head; /* the prebuilt request head */
    size_t head_len;
};

struct trace_event {
    uint64_t t_ns;
    uint32_t fn;
};

struct load_config {
    const struct bench_target *target;
    struct load_fn *fns;
    size_t n_fns;
    const void *body;
    size_t body_len;
    bool head_method;
    enum pattern pattern;
    double rate; /* req/s, all functions together */
    uint32_t burst_size, burst_interval_ms;
    const struct trace_event *trace;
    size_t n_trace;
    double duration_s;
    uint32_t connections;
    uint32_t timeout_ms;
    uint64_t seed;
    uint64_t max_requests; /* 0: rate x duration bounds it */
    bool quiet;
    bool keep_records;
    uint32_t metrics_poll_ms; /* 0: do not poll GET /metrics */
};

enum load_err { LERR_TIMEOUT, LERR_CONNECT, LERR_IO, LERR_PROTO, LERR_UNSENT, LERR__COUNT };
extern const char *const load_err_names[LERR__COUNT];

/** One request, when per-request records are kept (--csv). */
struct load_record {
    uint64_t intended_ns; /* from the run's start */
    uint64_t latency_ns;  /* intended send -> last byte; 0 on error */
    uint32_t fn;
    uint16_t status;           /* 0: transport error */
    uint8_t kind;              /* enum acq_kind */
    uint8_t err;               /* enum load_err + 1, 0 if none */
    float phase_ms[PH__COUNT]; /* -1 if absent */
};

struct load_result {
    uint64_t scheduled, sent, completed; /* completed: an HTTP response arrived */
    uint64_t ok;                         /* 2xx and 3xx */
    uint64_t status_counts[600];
    uint64_t errs[LERR__COUNT];
    uint64_t kinds[ACQ__COUNT];
    long double phase_sum_ms[PH__COUNT];
    uint64_t phase_n[PH__COUNT];
    struct hist *latency; /* every completed response */
    struct hist *kind_latency[ACQ__COUNT];
    struct hist *send_lag; /* actual send - intended send */
    double elapsed_s;      /* start -> last response (>= duration) */
    uint64_t max_backlog;  /* due, waiting for a connection */
    /* GET /metrics, when polled */
    int64_t peak_memory_bytes; /* -1: n/a */
    int64_t peak_sandboxes;    /* -1: n/a */
    uint32_t metrics_polls;
    struct load_record *records;
    size_t n_records, cap_records;
};

/** Allocate the histograms. 0 or -ENOMEM. */
int load_result_init(struct load_result *r);
/** Free what init and the run allocated; @r is zeroed. */
void load_result_destroy(struct load_result *r);
/** Requests that failed: transport errors, unsent ones and HTTP >= 400. */
uint64_t load_result_errors(const struct load_result *r);
/** Non-warm over responses that named an acquire kind; -1 if none did. */
double load_result_cold_ratio(const struct load_result *r);

/**
 * Drive the load described by @cfg and fill @res (initialised). Returns 0
 * when the run happened (whatever the server answered), -errno if it could
 * not start.
 */
int load_run(uv_loop_t *loop, const struct load_config *cfg, struct load_result *res);

/**
 * Sum the samples of gauge @name (any labels) in Prometheus text. Returns
 * true and *out if at least one sample was found.
 */
bool load_metrics_sum(const char *text, const char *name, double *out);

/* ---- report.c ---------------------------------------------------------- */

/** The human report of one run. */
void report_run_text(FILE *f, const struct load_config *cfg, const struct load_result *r);
/** jansson object (json_t *) describing the run; NULL on OOM. */
void *report_run_json(const struct load_config *cfg, const struct load_result *r);
/** One row per request (needs cfg->keep_records). 0 or -errno. */
int report_run_csv(const char *path, const struct load_config *cfg, const struct load_result *r);
/** "1.23 ms", "850 us", "12.3 s" into @buf. */
const char *report_fmt_ns(char *buf, size_t len, double ns);

/* ---- sweep.c / svg.c --------------------------------------------------- */

struct sweep_row {
    char value[64];
    double numeric; /* NAN if the value is not a number */
    uint64_t completed, errors;
    double throughput;
    double cold_ratio; /* -1: n/a */
    double p50_ms, p90_ms, p99_ms, p999_ms, max_ms;
    int64_t peak_memory_bytes; /* -1: n/a */
    int64_t peak_sandboxes;
    bool meets;
};

struct svg_chart {
    const char *title;
    const char *knob;
    const struct sweep_row *rows;
    size_t n_rows;
    double target_ms; /* a latency target line, or NAN */
    const char *target_label;
    int chosen; /* index of the setting that meets the target, or -1 */
};

/** Write the sweep chart to @path. 0 or -errno. */
int svg_write_sweep(const char *path, const struct svg_chart *chart);

struct sweep_options {
    const char *knob;
    char **values;
    size_t n_values;
    uint32_t settle_ms;
    const char *target; /* "p99=5ms,cold_ratio=0.05" or NULL */
    const char *csv_path, *svg_path;
    bool json;
    bool restore; /* PATCH the knob back to its old value at the end */
};

/** Returns an exit status: 0, 1 (could not run), 3 (target met by none). */
int sweep_main(uv_loop_t *loop, struct load_config *cfg, const struct sweep_options *o);

/* ---- admin.c ----------------------------------------------------------- */

struct admin_options {
    const char *package, *package2;
    const char *name; /* deploy-rate with one name, alternating packages */
    const char *prefix;
    uint32_t count, concurrency;
    uint32_t timeout_ms;
    bool keep; /* do not delete what was deployed */
    bool json;
    bool second_call; /* cold: also time a second (warm) call */
    const char *method, *path;
};

/** deploy-rate: print the report; returns an exit status (0, or 1 if no PUT succeeded). */
int admin_deploy_rate(uv_loop_t *loop, const struct bench_target *t, const struct admin_options *o);
/** cold: print the report; returns an exit status (0, or 1 if no first call succeeded). */
int admin_cold(uv_loop_t *loop, const struct bench_target *t, const struct admin_options *o);

/** Read a whole file; malloc'd; NULL with errno on failure. */
void *bench_read_file(const char *path, size_t *len);

#endif
