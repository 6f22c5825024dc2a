/* deploy.c - PUT /v1/functions/{name}: a package upload becomes a version
 * of the function.
 *
 * Deploys stream the package to the store on the thread pool, one buffer at
 * a time, with the connection paused while a write is in flight, so neither
 * memory nor the loop depends on the package's size. Once the store has
 * committed the version, the pool moves to it (unless the package was
 * unchanged) before the client is answered.
 */
#include "gateway/api_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define DEPLOY_BUF_SIZE (256u << 10) /* bytes gathered before one write */

static void deploy_fail(struct api_req *ar, int status, const char *error, const char *detail);

static void work_begin(uv_work_t *w)
{
    struct api_req *ar = w->data;
    ar->status = store_upload_begin(ar->api->store, &ar->upload, &ar->err);
}

static void work_write(uv_work_t *w)
{
    struct api_req *ar = w->data;
    ar->status = store_upload_write(ar->upload, ar->wbuf, ar->wlen, &ar->err);
}

static void work_commit(uv_work_t *w)
{
    struct api_req *ar = w->data;
    struct store_upload *up = ar->upload;
    ar->upload = NULL; /* commit always frees it */
    ar->status = store_upload_commit(up, ar->name, &ar->rec, &ar->created, &ar->unchanged,
                                     &ar->err);
}

static void work_abort(uv_work_t *w)
{
    struct api_req *ar = w->data;
    if (ar->upload)
        store_upload_abort(ar->upload);
    ar->upload = NULL;
}

static void after_work(uv_work_t *w, int status)
{
    struct api_req *ar = w->data;
    ar->busy = false;
    free(ar->wbuf);
    ar->wbuf = NULL;
    if (status < 0 && ar->status == 0)
        ar->status = status;
    api__deploy_step(ar);
}

static void queue(struct api_req *ar, uv_work_cb cb)
{
    ar->busy = true;
    ar->work.data = ar;
    int r = uv_queue_work(ar->api->loop, &ar->work, cb, after_work);
    if (r < 0) {
        ar->busy = false;
        ar->status = r;
    }
}

static void on_deploy_aborted_cleanup(uv_work_t *w, int status)
{
    struct api_req *ar = w->data;
    (void)status;
    http_respond_error(ar->req, 400, "aborted", NULL, true);
    api__req_free(ar);
}

static void after_abort_free(uv_work_t *w, int status)
{
    (void)status;
    api__req_free(w->data);
}

static void deploy_fail(struct api_req *ar, int status, const char *error, const char *detail)
{
    ar->api->deploy_failures++;
    /* Answer now; the temporary file goes away on the thread pool after. */
    http_respond_error(ar->req, status, error, detail, !ar->body_done);
    ar->req = NULL;
    ar->work.data = ar;
    if (ar->upload && uv_queue_work(ar->api->loop, &ar->work, work_abort, after_abort_free) == 0)
        return;
    if (ar->upload)
        store_upload_abort(ar->upload); /* the queue refused: rare, do it here */
    ar->upload = NULL;
    api__req_free(ar);
}

/*
 * The deploy state machine, re-entered after every thread-pool step and
 * every body event: begin -> (write)* -> commit -> publish to the pool.
 */
void api__deploy_step(struct api_req *ar)
{
    struct api *a = ar->api;
    if (ar->busy)
        return;

    if (ar->aborted) {
        /* The client is gone, failed or not: nobody to answer, the upload
         * to drop. */
        ar->work.data = ar;
        if (ar->upload &&
            uv_queue_work(a->loop, &ar->work, work_abort, on_deploy_aborted_cleanup) == 0)
            return;
        on_deploy_aborted_cleanup(&ar->work, 0);
        return;
    }
    if (ar->status < 0) {
        int err = ar->err.code ? ar->err.code : ar->status;
        int code = err == -EINVAL ? 400 : err == -EFBIG ? 413 : 500;
        deploy_fail(ar, code,
                    code == 400 ? "bad package" : code == 413 ? "too large" : "store failed",
                    ar->err.msg[0] ? ar->err.msg : strerror(-ar->status));
        return;
    }
    if (ar->rec) {
        /* Committed: make the pool use the new version, then answer. */
        a->deploys++;
        if (!ar->unchanged)
            pool_function_update(a->pool, ar->rec);
        log_info("api: deployed %s version %.12s (%s)", ar->rec->name, ar->rec->version,
                 ar->created ? "new" : ar->unchanged ? "unchanged" : "updated");
        api__respond_json(ar->req, ar->created ? 201 : 200, api__function_json(a, ar->rec, false),
                          NULL, 0);
        api__req_free(ar);
        return;
    }
    if (!ar->upload) {
        queue(ar, work_begin);
        return;
    }
    /* Write what is buffered when the buffer is full or the body is done. */
    if (ar->buf_len > 0 && (ar->buf_len == DEPLOY_BUF_SIZE || ar->body_done)) {
        ar->wbuf = ar->buf;
        ar->wlen = ar->buf_len;
        ar->buf = malloc(DEPLOY_BUF_SIZE);
        ar->buf_len = 0;
        if (!ar->buf) {
            ar->status = -ENOMEM;
            api__deploy_step(ar);
            return;
        }
        queue(ar, work_write);
        return;
    }
    if (ar->body_done) {
        queue(ar, work_commit);
        return;
    }
    http_request_resume(ar->req);
}

void api__deploy_on_body(struct api_req *ar)
{
    struct http_request *req = ar->req;
    const uint8_t *p = req->chunk;
    size_t left = req->chunk_len;
    while (left > 0) {
        size_t room = DEPLOY_BUF_SIZE - ar->buf_len;
        if (room == 0) {
            /* The buffer is full and a write is in flight; the server was
             * paused, so this only happens inside one oversized chunk. */
            uint8_t *bigger = realloc(ar->buf, ar->buf_len + left);
            if (!bigger) {
                ar->status = -ENOMEM;
                return;
            }
            ar->buf = bigger;
            memcpy(ar->buf + ar->buf_len, p, left);
            ar->buf_len += left;
            break;
        }
        size_t n = left < room ? left : room;
        memcpy(ar->buf + ar->buf_len, p, n);
        ar->buf_len += n;
        p += n;
        left -= n;
    }
    if (ar->buf_len >= DEPLOY_BUF_SIZE) {
        http_request_pause(req);
        if (!ar->busy && ar->upload) {
            ar->wbuf = ar->buf;
            ar->wlen = ar->buf_len;
            ar->buf = malloc(DEPLOY_BUF_SIZE);
            ar->buf_len = 0;
            if (!ar->buf) {
                ar->buf = ar->wbuf;
                ar->buf_len = ar->wlen;
                ar->wbuf = NULL;
                ar->status = -ENOMEM;
                return;
            }
            queue(ar, work_write);
        }
    }
}

void api__handle_deploy(struct api_req *ar)
{
    struct api *a = ar->api;
    ar->buf = malloc(DEPLOY_BUF_SIZE);
    if (!ar->buf) {
        api__finish_error(ar, 500, "internal error", "out of memory");
        return;
    }
    if (http_request_read_body(ar->req, HTTP_BODY_STREAM, a->package_max) < 0) {
        /* the server answered 413 itself */
        a->deploy_failures++;
        api__req_free(ar);
        return;
    }
    http_request_pause(ar->req); /* until the temporary file exists */
    queue(ar, work_begin);
}
