/* svg.c - the sweep chart, written by hand as SVG 1.1.
 *
 * One slot per setting along x. Left axis: latency percentiles (p50, p99,
 * p99.9) as lines with markers, on a log scale when they span more than
 * 1.5 decades. Right axis: the cold-start ratio as translucent bars behind
 * the lines. An optional latency target is a dashed line, and the smallest
 * setting that meets the target gets a shaded slot. Every marker carries a
 * <title>, so a browser shows the exact number on hover.
 */
#include "bench/bench.h"
#include "common/cleanup.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#define W 820.0
#define H 500.0
#define X0 86.0 /* plot area */
#define X1 (W - 96.0)
#define Y0 78.0
#define Y1 (H - 124.0)

struct axis {
    bool log;
    double lo, hi; /* data range shown (log: decades as values) */
    double ticks[16];
    size_t n_ticks;
};

static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", f);
            break;
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

/* 1, 2 or 5 times a power of ten, at least @x. */
static double nice_step(double x)
{
    double p = pow(10, floor(log10(x)));
    double m = x / p;
    if (m <= 1.0)
        return p;
    if (m <= 2.0)
        return 2 * p;
    if (m <= 5.0)
        return 5 * p;
    return 10 * p;
}

static void axis_linear(struct axis *a, double max)
{
    if (!(max > 0))
        max = 1;
    double step = nice_step(max / 5);
    a->log = false;
    a->lo = 0;
    a->hi = step * ceil(max / step);
    if (a->hi < max)
        a->hi += step;
    a->n_ticks = 0;
    for (double v = 0; v <= a->hi * 1.0001 && a->n_ticks < 16; v += step)
        a->ticks[a->n_ticks++] = v;
}

static void axis_log(struct axis *a, double min, double max)
{
    a->log = true;
    a->lo = pow(10, floor(log10(min)));
    a->hi = pow(10, ceil(log10(max)));
    if (a->hi <= a->lo)
        a->hi = a->lo * 10;
    a->n_ticks = 0;
    for (double v = a->lo; v <= a->hi * 1.0001 && a->n_ticks < 16; v *= 10)
        a->ticks[a->n_ticks++] = v;
}

static double axis_y(const struct axis *a, double v)
{
    double f;
    if (a->log) {
        if (v < a->lo)
            v = a->lo;
        f = (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo));
    } else {
        f = (v - a->lo) / (a->hi - a->lo);
    }
    return Y1 - f * (Y1 - Y0);
}

/* 0.0123, 0.58, 22, 51.2, 1234: three significant digits, no trailing zeros. */
static void fmt_ms(char *buf, size_t len, double v)
{
    if (v >= 1000)
        snprintf(buf, len, "%.0f", v);
    else
        snprintf(buf, len, "%.3g", v);
}

static double slot_x(size_t i, size_t n)
{
    return X0 + ((double)i + 0.5) * (X1 - X0) / (double)n;
}

struct series {
    const char *name;
    const char *color;
    size_t offset; /* offsetof(struct sweep_row, pXX_ms) */
    const char *dash;
};

static const struct series series[] = {
    {"p50", "#1f77b4", offsetof(struct sweep_row, p50_ms), NULL},
    {"p99", "#d62728", offsetof(struct sweep_row, p99_ms), NULL},
    {"p99.9", "#6a3d9a", offsetof(struct sweep_row, p999_ms), "6 3"},
};

static double row_value(const struct sweep_row *r, const struct series *s)
{
    return *(const double *)((const char *)r + s->offset);
}

int svg_write_sweep(const char *path, const struct svg_chart *c)
{
    cleanup_fclose FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    size_t n = c->n_rows ? c->n_rows : 1;

    /* Left axis from the latencies that exist (a setting with no responses has 0). */
    double lmin = INFINITY, lmax = 0;
    for (size_t i = 0; i < c->n_rows; i++) {
        for (size_t s = 0; s < ARRAY_SIZE(series); s++) {
            double v = row_value(&c->rows[i], &series[s]);
            if (v > 0) {
                lmin = fmin(lmin, v);
                lmax = fmax(lmax, v);
            }
        }
    }
    if (!isnan(c->target_ms) && c->target_ms > 0) {
        lmin = fmin(lmin, c->target_ms);
        lmax = fmax(lmax, c->target_ms);
    }
    struct axis left;
    if (lmax > 0 && lmin > 0 && lmax / lmin > 30)
        axis_log(&left, lmin, lmax);
    else
        axis_linear(&left, lmax);

    double cmax = 0;
    bool have_cold = false;
    for (size_t i = 0; i < c->n_rows; i++) {
        if (c->rows[i].cold_ratio >= 0) {
            have_cold = true;
            cmax = fmax(cmax, c->rows[i].cold_ratio);
        }
    }
    struct axis right;
    axis_linear(&right, cmax > 0 ? cmax : 0.1);
    if (right.hi > 1.0) { /* a ratio: never past 100% */
        right.hi = 1.0;
        while (right.n_ticks > 0 && right.ticks[right.n_ticks - 1] > 1.0001)
            right.n_ticks--;
    }

    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"DejaVu Sans, Helvetica, Arial, "
            "sans-serif\" font-size=\"12\">\n",
            W, H, W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f,
            "<text x=\"%.0f\" y=\"24\" text-anchor=\"middle\" font-size=\"16\" "
            "font-weight=\"bold\">",
            W / 2);
    xml_text(f, c->title ? c->title : "ember-bench sweep");
    fprintf(f, "</text>\n");

    /* Legend. */
    double lx = X0;
    for (size_t s = 0; s < ARRAY_SIZE(series); s++) {
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"46\" x2=\"%.1f\" y2=\"46\" stroke=\"%s\" "
                "stroke-width=\"2.5\"%s%s%s/>\n",
                lx, lx + 26, series[s].color, series[s].dash ? " stroke-dasharray=\"" : "",
                series[s].dash ? series[s].dash : "", series[s].dash ? "\"" : "");
        fprintf(f, "<circle cx=\"%.1f\" cy=\"46\" r=\"3.5\" fill=\"%s\"/>\n", lx + 13,
                series[s].color);
        fprintf(f, "<text x=\"%.1f\" y=\"50\">%s latency</text>\n", lx + 32, series[s].name);
        lx += 120;
    }
    if (have_cold) {
        fprintf(f,
                "<rect x=\"%.1f\" y=\"39\" width=\"18\" height=\"14\" fill=\"#ff7f0e\" "
                "fill-opacity=\"0.35\" stroke=\"#ff7f0e\"/>\n",
                lx);
        fprintf(f, "<text x=\"%.1f\" y=\"50\">cold-start ratio (right axis)</text>\n", lx + 24);
    } else {
        fprintf(f, "<text x=\"%.1f\" y=\"50\" fill=\"#666\">cold-start ratio n/a</text>\n", lx);
    }

    /* The chosen slot, behind everything. */
    if (c->chosen >= 0 && (size_t)c->chosen < c->n_rows) {
        double sw = (X1 - X0) / (double)n;
        fprintf(f,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                "fill=\"#2ca02c\" fill-opacity=\"0.10\"/>\n",
                slot_x((size_t)c->chosen, n) - sw / 2, Y0, sw, Y1 - Y0);
    }

    /* Grid and left axis. */
    for (size_t t = 0; t < left.n_ticks; t++) {
        double y = axis_y(&left, left.ticks[t]);
        char lab[32];
        fmt_ms(lab, sizeof(lab), left.ticks[t]);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", X0,
                y, X1, y);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", X0 - 8, y + 4,
                lab);
    }
    fprintf(f,
            "<text transform=\"translate(24 %.1f) rotate(-90)\" text-anchor=\"middle\">"
            "latency (ms%s)</text>\n",
            (Y0 + Y1) / 2, left.log ? ", log scale" : "");
    if (have_cold) {
        for (size_t t = 0; t < right.n_ticks; t++) {
            double y = axis_y(&right, right.ticks[t]);
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#b35806\">%.3g%%</text>\n", X1 + 8,
                    y + 4, right.ticks[t] * 100);
        }
        fprintf(f,
                "<text transform=\"translate(%.1f %.1f) rotate(90)\" text-anchor=\"middle\" "
                "fill=\"#b35806\">cold-start ratio (acquire != warm)</text>\n",
                W - 22, (Y0 + Y1) / 2);
    }
    fprintf(f,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
            "stroke=\"#333\"/>\n",
            X0, Y0, X1 - X0, Y1 - Y0);

    /* Cold-start bars. */
    double sw = (X1 - X0) / (double)n;
    for (size_t i = 0; i < c->n_rows && have_cold; i++) {
        const struct sweep_row *r = &c->rows[i];
        if (r->cold_ratio < 0)
            continue;
        double y = axis_y(&right, r->cold_ratio);
        fprintf(f,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#ff7f0e\" "
                "fill-opacity=\"0.35\" stroke=\"#ff7f0e\"><title>cold-start ratio at ",
                slot_x(i, n) - sw * 0.25, y, sw * 0.5, Y1 - y);
        xml_text(f, c->knob);
        fprintf(f, "=");
        xml_text(f, r->value);
        fprintf(f, ": %.4f</title></rect>\n", r->cold_ratio);
    }

    /* Latency target. */
    if (!isnan(c->target_ms) && c->target_ms > 0) {
        double y = axis_y(&left, c->target_ms);
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#2ca02c\" "
                "stroke-width=\"1.5\" stroke-dasharray=\"8 4\"/>\n",
                X0, y, X1, y);
    }

    /* Latency lines; a setting without responses breaks the line. */
    for (size_t s = 0; s < ARRAY_SIZE(series); s++) {
        fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"2.5\"%s%s%s d=\"",
                series[s].color, series[s].dash ? " stroke-dasharray=\"" : "",
                series[s].dash ? series[s].dash : "", series[s].dash ? "\"" : "");
        bool pen = false;
        for (size_t i = 0; i < c->n_rows; i++) {
            double v = row_value(&c->rows[i], &series[s]);
            if (!(v > 0) || c->rows[i].completed == 0) {
                pen = false;
                continue;
            }
            fprintf(f, "%s%.1f %.1f ", pen ? "L" : "M", slot_x(i, n), axis_y(&left, v));
            pen = true;
        }
        fprintf(f, "\"/>\n");
        for (size_t i = 0; i < c->n_rows; i++) {
            double v = row_value(&c->rows[i], &series[s]);
            if (!(v > 0) || c->rows[i].completed == 0)
                continue;
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"><title>%s at ",
                    slot_x(i, n), axis_y(&left, v), series[s].color, series[s].name);
            xml_text(f, c->knob);
            fprintf(f, "=");
            xml_text(f, c->rows[i].value);
            fprintf(f, ": %.3f ms</title></circle>\n", v);
        }
    }
    if (!isnan(c->target_ms) && c->target_ms > 0) {
        double y = axis_y(&left, c->target_ms);
        /* On a white plate at the left end, so data lines do not run through it. */
        const char *label = c->target_label ? c->target_label : "";
        double tw = 7.0 * (double)(strlen(label) + 7);
        fprintf(f,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"16\" fill=\"white\" "
                "fill-opacity=\"0.85\"/>\n",
                X0 + 4, y - 18, tw);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#2ca02c\">target ", X0 + 8, y - 6);
        xml_text(f, label);
        fprintf(f, "</text>\n");
    }

    /* X axis: per setting its value, then a small table of the numbers
     * people weigh (p99, cold ratio, peak pool memory), errors, and the
     * target verdict. */
    fprintf(f,
            "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"10\" "
            "fill=\"#d62728\">p99 ms</text>\n",
            X0 - 8, Y1 + 34);
    if (have_cold)
        fprintf(f,
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"10\" "
                "fill=\"#b35806\">cold</text>\n",
                X0 - 8, Y1 + 47);
    bool have_mem = false;
    for (size_t i = 0; i < c->n_rows; i++)
        have_mem = have_mem || c->rows[i].peak_memory_bytes >= 0;
    if (have_mem)
        fprintf(f,
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"10\" "
                "fill=\"#555\">peak MiB</text>\n",
                X0 - 8, Y1 + 60);
    for (size_t i = 0; i < c->n_rows; i++) {
        const struct sweep_row *r = &c->rows[i];
        double x = slot_x(i, n);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>\n", x,
                Y1, x, Y1 + 5);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-weight=\"bold\">", x,
                Y1 + 19);
        xml_text(f, r->value);
        fprintf(f, "</text>\n");
        char lab[32];
        if (r->completed)
            fmt_ms(lab, sizeof(lab), r->p99_ms);
        else
            snprintf(lab, sizeof(lab), "-");
        fprintf(f,
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"10\" "
                "fill=\"#d62728\">%s</text>\n",
                x, Y1 + 34, lab);
        if (have_cold) {
            if (r->cold_ratio >= 0)
                snprintf(lab, sizeof(lab), "%.3g%%", r->cold_ratio * 100);
            else
                snprintf(lab, sizeof(lab), "n/a");
            fprintf(f,
                    "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"10\" "
                    "fill=\"#b35806\">%s</text>\n",
                    x, Y1 + 47, lab);
        }
        if (have_mem) {
            if (r->peak_memory_bytes >= 0)
                snprintf(lab, sizeof(lab), "%.0f", (double)r->peak_memory_bytes / 1048576.0);
            else
                snprintf(lab, sizeof(lab), "n/a");
            fprintf(f,
                    "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"10\" "
                    "fill=\"#555\">%s</text>\n",
                    x, Y1 + 60, lab);
        }
        double y = Y1 + (have_mem ? 74 : 61);
        if (r->errors) {
            fprintf(f,
                    "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"10\" "
                    "fill=\"#d62728\">%llu err</text>\n",
                    x, y, (unsigned long long)r->errors);
            y += 12;
        }
        if ((int)i == c->chosen)
            fprintf(f,
                    "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"10\" "
                    "fill=\"#2ca02c\" font-weight=\"bold\">meets target</text>\n",
                    x, y);
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-weight=\"bold\">",
            (X0 + X1) / 2, H - 18);
    xml_text(f, c->knob);
    fprintf(f, " (PATCH /v1/pool)</text>\n</svg>\n");
    if (fflush(f) != 0 || ferror(f))
        return -EIO;
    return 0;
}
