/* fuzz_proto.c - libFuzzer driver for the frame decoders (clang only).
 *
 * The input is a byte stream as a sandbox could write it: frames one after
 * another. Each header goes through proto_hdr_check, each payload through the
 * decoder its type selects; a request or response that decodes is encoded
 * again and must decode to the same fields (a round-trip oracle, beyond the
 * sanitizers' memory checks).
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sandbox/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int str_same(struct proto_str a, struct proto_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static void pairs_same(const struct proto_pair *a, const struct proto_pair *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        assert(str_same(a[i].key, b[i].key) && str_same(a[i].value, b[i].value));
}

static void check_request(const uint8_t *p, size_t len)
{
    static struct proto_request a, b;
    if (proto_request_decode(p, len, &a) < 0)
        return;
    struct proto_buf buf;
    proto_buf_init(&buf);
    int r = proto_buf_begin(&buf, PROTO_INVOKE, 0);
    r = r ? r : proto_put_bytes(&buf, a.method.p, a.method.len);
    r = r ? r : proto_put_bytes(&buf, a.path.p, a.path.len);
    r = r ? r : proto_put_bytes(&buf, a.query.p, a.query.len);
    r = r ? r : proto_put_pairs(&buf, a.headers, a.n_headers);
    r = r ? r : proto_put_bytes(&buf, a.body.p, a.body.len);
    r = r ? r : proto_buf_finish(&buf);
    assert(r == 0);
    assert(buf.len - PROTO_HDR_SIZE == len && memcmp(buf.data + PROTO_HDR_SIZE, p, len) == 0);
    assert(proto_request_decode(buf.data + PROTO_HDR_SIZE, buf.len - PROTO_HDR_SIZE, &b) == 0);
    assert(b.n_headers == a.n_headers);
    pairs_same(a.headers, b.headers, a.n_headers);
    proto_buf_free(&buf);
}

static void check_response(const uint8_t *p, size_t len)
{
    static struct proto_response a, b;
    if (proto_response_decode(p, len, &a) < 0)
        return;
    struct proto_buf buf;
    proto_buf_init(&buf);
    int r = proto_buf_begin(&buf, PROTO_RESPONSE, 0);
    r = r ? r : proto_put_u32(&buf, a.status);
    r = r ? r : proto_put_pairs(&buf, a.headers, a.n_headers);
    r = r ? r : proto_put_bytes(&buf, a.body.p, a.body.len);
    r = r ? r : proto_buf_finish(&buf);
    assert(r == 0);
    assert(proto_response_decode(buf.data + PROTO_HDR_SIZE, buf.len - PROTO_HDR_SIZE, &b) == 0);
    assert(a.status == b.status && a.n_headers == b.n_headers && str_same(a.body, b.body));
    pairs_same(a.headers, b.headers, a.n_headers);
    proto_buf_free(&buf);
}

static void check_other(uint16_t type, const uint8_t *p, size_t len)
{
    struct proto_reader r;
    proto_reader_init(&r, p, len);
    uint32_t u;
    uint64_t w;
    struct proto_str s;
    static struct proto_pair pairs[PROTO_MAX_PAIRS];
    uint32_t n;
    switch (type) {
    case PROTO_HELLO:
    case PROTO_LOAD:
        (void)proto_get_pairs(&r, pairs, PROTO_MAX_PAIRS, &n);
        break;
    case PROTO_LOADED:
        if (proto_get_u32(&r, &u) == 0 && proto_get_bytes(&r, &s) == 0)
            (void)proto_get_u64(&r, &w);
        break;
    case PROTO_FAILED:
        if (proto_get_u32(&r, &u) == 0)
            (void)proto_get_bytes(&r, &s);
        break;
    case PROTO_FORKED:
    case PROTO_EXITED:
        if (proto_get_u32(&r, &u) == 0)
            (void)proto_get_u32(&r, &u);
        break;
    case PROTO_RESET_DONE:
        if (proto_get_u32(&r, &u) == 0)
            (void)proto_get_u64(&r, &w);
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    while (size >= PROTO_HDR_SIZE) {
        struct proto_hdr h;
        memcpy(&h, data, PROTO_HDR_SIZE);
        data += PROTO_HDR_SIZE;
        size -= PROTO_HDR_SIZE;
        if (proto_hdr_check(&h) < 0 || h.len > size)
            return 0;
        if (h.type == PROTO_INVOKE)
            check_request(data, h.len);
        else if (h.type == PROTO_RESPONSE)
            check_response(data, h.len);
        else
            check_other(h.type, data, h.len);
        /* the small payload decoders take any bytes without reading past them */
        struct proto_loaded lo;
        struct proto_failed fa;
        struct proto_forked fo;
        struct proto_exited ex;
        struct proto_done rd;
        struct proto_log lg;
        if (proto_loaded_decode(data, h.len, &lo) == 0)
            assert(lo.message.len <= h.len);
        if (proto_failed_decode(data, h.len, &fa) == 0)
            assert(fa.message.len <= h.len);
        (void)proto_forked_decode(data, h.len, &fo);
        (void)proto_exited_decode(data, h.len, &ex);
        (void)proto_done_decode(data, h.len, &rd);
        if (proto_log_decode(data, h.len, &lg) == 0)
            assert(lg.len <= PROTO_LOG_LINE_MAX && (lg.stream == 1 || lg.stream == 2));
        data += h.len;
        size -= h.len;
    }
    return 0;
}
