/*
 * The timeline of eddy-load as SVG: one row per worker, one bar per
 * request from its start to its end, coloured by outcome, with a labelled
 * time axis.  Plain fprintf; the file is meant to be read by eye.
 */
#include "load.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define W 1000.0
#define LEFT 70.0
#define RIGHT 20.0
#define TOP 56.0
#define MAX_ROWS 200
#define MAX_TITLES 10000 /* tooltips only for smaller runs: they cost ~60 bytes a bar */

static void xml_escaped(FILE *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", out);
            break;
        case '<':
            fputs("&lt;", out);
            break;
        case '>':
            fputs("&gt;", out);
            break;
        case '"':
            fputs("&quot;", out);
            break;
        default:
            fputc(*s, out);
        }
    }
}

static const char *color(int outcome)
{
    if (outcome < 0)
        return "#9a9a9a"; /* error */
    if (outcome < 300)
        return "#2e9d4a";
    if (outcome < 400)
        return "#3b7dd8";
    if (outcome < 500)
        return "#f0a030";
    return "#d9362b";
}

/* A tick step of 1, 2 or 5 times a power of ten giving at most ~10 ticks. */
static double tick_step(double span_ms)
{
    double raw = span_ms / 10.0;
    if (raw <= 0)
        return 1;
    double p = pow(10.0, floor(log10(raw)));
    double m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

static void tick_label(char *buf, size_t cap, double ms, double span_ms, double step)
{
    if (span_ms >= 2000) {
        if (step >= 1000)
            snprintf(buf, cap, "%.0f s", ms / 1000);
        else
            snprintf(buf, cap, "%.*f s", step >= 100 ? 1 : 2, ms / 1000);
    } else if (step >= 1) {
        snprintf(buf, cap, "%.0f ms", ms);
    } else {
        snprintf(buf, cap, "%.*f ms", step >= 0.1 ? 1 : 2, ms);
    }
}

int svg_timeline(FILE *out, const struct timeline *t)
{
    unsigned rows = t->workers ? t->workers : 1;
    unsigned shown = rows < MAX_ROWS ? rows : MAX_ROWS;
    double row_h = floor(480.0 / shown);
    if (row_h > 24)
        row_h = 24;
    if (row_h < 2)
        row_h = 2;
    double bar_h = row_h >= 6 ? row_h - 2 : row_h;
    double plot_h = row_h * shown;
    double pw = W - LEFT - RIGHT;
    double axis_y = TOP + plot_h + 4;
    double height = axis_y + 70;

    /* The span: the end of the last stored request (at least 1 ms). */
    double span_us = 1000;
    for (size_t i = 0; i < t->nrecs; i++) {
        double e = (double)t->recs[i].start_us + (double)t->recs[i].dur_us;
        if (e > span_us)
            span_us = e;
    }
    double span_ms = span_us / 1000;

    fprintf(out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
            W, height, W, height);
    fputs("<style>.req{stroke:none}.grid{stroke:#ddd;stroke-width:1}"
          ".axis{stroke:#333;stroke-width:1}.lbl{fill:#333}</style>\n",
          out);
    fprintf(out, "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#fff\"/>\n", W,
            height);
    fputs("<text class=\"title\" x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">GET ",
          out);
    xml_escaped(out, t->url);
    fputs("</text>\n", out);
    fprintf(out,
            "<text class=\"lbl\" x=\"10\" y=\"40\">%llu requests, %u connections, %.3f s, "
            "%.1f req/s, p50 %.1f ms, p99 %.1f ms; %llu 2xx, %llu other status, "
            "%llu errors</text>\n",
            (unsigned long long)t->total, t->workers, t->duration_s, t->rps, t->p50_ms, t->p99_ms,
            (unsigned long long)t->ok2xx, (unsigned long long)t->other_status,
            (unsigned long long)t->errors);

    /* Grid and time axis. */
    double step = tick_step(span_ms);
    for (int k = 0;; k++) {
        double ms = k * step;
        if (ms > span_ms * 1.0001)
            break;
        double x = LEFT + ms / span_ms * pw;
        char lbl[32];
        tick_label(lbl, sizeof lbl, ms, span_ms, step);
        fprintf(out, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", x,
                TOP, x, axis_y);
        fprintf(out, "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", x,
                axis_y, x, axis_y + 5);
        fprintf(out,
                "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x,
                axis_y + 18, lbl);
    }
    fprintf(out, "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", LEFT,
            axis_y, LEFT + pw, axis_y);
    fprintf(out,
            "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">time since the "
            "start of the run</text>\n",
            LEFT + pw / 2, axis_y + 36);

    /* Row labels: every row when they fit, else every k-th. */
    unsigned every = (unsigned)ceil(14.0 / row_h);
    for (unsigned r = 0; r < shown; r += every)
        fprintf(out,
                "<text class=\"row\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" "
                "font-size=\"%.0f\">conn %u</text>\n",
                LEFT - 6, TOP + r * row_h + row_h / 2 + 4, row_h < 12 ? 10.0 : 11.0, r);

    /* The bars, row by row.  A worker runs one request at a time, so a
     * row's records are in start order.  Runs of tiny bars (under 2 px,
     * closer than 0.75 px, same colour) become one rect of class "reqs":
     * at 100,000 requests that keeps the file in the hundreds of KB
     * instead of megabytes of invisible slivers. */
    size_t *ord = malloc((t->nrecs ? t->nrecs : 1) * sizeof *ord);
    size_t *first = calloc(shown + 1, sizeof *first);
    if (!ord || !first) {
        free(ord);
        free(first);
        return -ENOMEM;
    }
    for (size_t i = 0; i < t->nrecs; i++)
        if (t->recs[i].worker < shown)
            first[t->recs[i].worker + 1]++;
    for (unsigned r = 0; r < shown; r++)
        first[r + 1] += first[r];
    size_t nord = first[shown];
    for (size_t i = 0; i < t->nrecs; i++)
        if (t->recs[i].worker < shown)
            ord[first[t->recs[i].worker]++] = i;

    int titles = t->nrecs <= MAX_TITLES;
    size_t k = 0;
    while (k < nord) {
        const struct rec *q = &t->recs[ord[k]];
        double x0 = LEFT + (double)q->start_us / span_us * pw;
        double x1 = x0 + (double)q->dur_us / span_us * pw;
        const char *fill = color(q->outcome);
        size_t n = 1;
        while (x1 - x0 < 2 && k + n < nord) {
            const struct rec *nx = &t->recs[ord[k + n]];
            double nx0 = LEFT + (double)nx->start_us / span_us * pw;
            double nx1 = nx0 + (double)nx->dur_us / span_us * pw;
            if (nx->worker != q->worker || color(nx->outcome) != fill || nx1 - nx0 >= 2 ||
                nx0 - x1 > 0.75)
                break;
            if (nx1 > x1)
                x1 = nx1;
            n++;
        }
        double w = x1 - x0;
        if (n == 1 && w > 2)
            w -= 0.6; /* a gap between a request and the next one of its row */
        else if (w < 0.5)
            w = 0.5; /* keep instant requests visible */
        double y = TOP + q->worker * row_h + (row_h - bar_h) / 2;
        fprintf(out,
                "<rect class=\"%s\" x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" "
                "fill=\"%s\">",
                n == 1 ? "req" : "reqs", x0, y, w, bar_h, fill);
        if (n > 1)
            fprintf(out, "<title>conn %u: %zu requests from %.3f ms</title>", q->worker, n,
                    q->start_us / 1000.0);
        else if (titles && q->outcome >= 0)
            fprintf(out, "<title>conn %u: %d, %.3f ms at %.3f ms</title>", q->worker, q->outcome,
                    q->dur_us / 1000.0, q->start_us / 1000.0);
        else if (titles)
            fprintf(out, "<title>conn %u: %s, %.3f ms at %.3f ms</title>", q->worker,
                    strerror(-q->outcome), q->dur_us / 1000.0, q->start_us / 1000.0);
        fputs("</rect>\n", out);
        k += n;
    }
    free(ord);
    free(first);

    /* Legend and notes. */
    static const struct {
        int outcome;
        const char *name;
    } legend[] = {{200, "2xx"}, {300, "3xx"}, {400, "4xx"}, {500, "5xx"}, {-1, "error"}};
    double lx = LEFT, ly = axis_y + 56;
    for (size_t i = 0; i < sizeof legend / sizeof legend[0]; i++) {
        fprintf(out,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"%s\"/>"
                "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                lx, ly - 10, color(legend[i].outcome), lx + 16, ly, legend[i].name);
        lx += 70;
    }
    char note[200] = "";
    size_t nl = 0;
    if (rows > shown)
        nl += (size_t)snprintf(note + nl, sizeof note - nl, "rows %u of %u shown. ", shown, rows);
    if (t->nrecs < t->total)
        nl += (size_t)snprintf(note + nl, sizeof note - nl, "the first %zu of %llu requests shown.",
                               t->nrecs, (unsigned long long)t->total);
    fprintf(out,
            "<text class=\"note\" x=\"%.1f\" y=\"%.1f\">one row per connection "
            "(worker)%s%s</text>\n",
            lx + 10, ly, nl ? "; " : "", note);
    fputs("</svg>\n", out);
    return ferror(out) ? -EIO : 0;
}
