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

/* Where everything goes: computed once from the timeline. */
struct geom {
    unsigned rows, shown; /* connections; rows drawn */
    double row_h, bar_h, plot_h, pw, axis_y, height;
    double span_us, span_ms; /* the time the x axis covers */
};

static void geom_of(const struct timeline *t, struct geom *g)
{
    g->rows = t->workers ? t->workers : 1;
    g->shown = g->rows < MAX_ROWS ? g->rows : MAX_ROWS;
    g->row_h = floor(480.0 / g->shown);
    if (g->row_h > 24)
        g->row_h = 24;
    if (g->row_h < 2)
        g->row_h = 2;
    g->bar_h = g->row_h >= 6 ? g->row_h - 2 : g->row_h;
    g->plot_h = g->row_h * g->shown;
    g->pw = W - LEFT - RIGHT;
    g->axis_y = TOP + g->plot_h + 4;
    g->height = g->axis_y + 70;
    /* The span: the end of the last stored request (at least 1 ms). */
    g->span_us = 1000;
    for (size_t i = 0; i < t->nrecs; i++) {
        double e = (double)t->recs[i].start_us + (double)t->recs[i].dur_us;
        if (e > g->span_us)
            g->span_us = e;
    }
    g->span_ms = g->span_us / 1000;
}

/* The document's head, the title and the run's figures. */
static void svg_head(FILE *out, const struct timeline *t, const struct geom *g)
{
    fprintf(out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
            W, g->height, W, g->height);
    fputs("<style>.req{stroke:none}.grid{stroke:#ddd;stroke-width:1}"
          ".axis{stroke:#333;stroke-width:1}.lbl{fill:#333}</style>\n",
          out);
    fprintf(out, "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#fff\"/>\n", W,
            g->height);
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
}

/* Grid, time axis and the rows' labels. */
static void svg_axes(FILE *out, const struct geom *g)
{
    /* Grid and time axis. */
    double step = tick_step(g->span_ms);
    for (int k = 0;; k++) {
        double ms = k * step;
        if (ms > g->span_ms * 1.0001)
            break;
        double x = LEFT + ms / g->span_ms * g->pw;
        char lbl[32];
        tick_label(lbl, sizeof lbl, ms, g->span_ms, step);
        fprintf(out, "<line class=\"grid\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", x,
                TOP, x, g->axis_y);
        fprintf(out, "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", x,
                g->axis_y, x, g->axis_y + 5);
        fprintf(out,
                "<text class=\"tick\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x,
                g->axis_y + 18, lbl);
    }
    fprintf(out, "<line class=\"axis\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", LEFT,
            g->axis_y, LEFT + g->pw, g->axis_y);
    fprintf(out,
            "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">time since the "
            "start of the run</text>\n",
            LEFT + g->pw / 2, g->axis_y + 36);

    /* Row labels: every row when they fit, else every k-th. */
    unsigned every = (unsigned)ceil(14.0 / g->row_h);
    for (unsigned r = 0; r < g->shown; r += every)
        fprintf(out,
                "<text class=\"row\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" "
                "font-size=\"%.0f\">conn %u</text>\n",
                LEFT - 6, TOP + r * g->row_h + g->row_h / 2 + 4, g->row_h < 12 ? 10.0 : 11.0, r);
}

/* One rect for the request at ord[k] and the runs of tiny bars that follow
 * it; returns how many records it drew. */
static size_t svg_bar(FILE *out, const struct timeline *t, const struct geom *g, const size_t *ord,
                      size_t k, size_t nord)
{
    int titles = t->nrecs <= MAX_TITLES;
    const struct rec *q = &t->recs[ord[k]];
    double x0 = LEFT + (double)q->start_us / g->span_us * g->pw;
    double x1 = x0 + (double)q->dur_us / g->span_us * g->pw;
    const char *fill = color(q->outcome);
    size_t n = 1;
    while (x1 - x0 < 2 && k + n < nord) {
        const struct rec *nx = &t->recs[ord[k + n]];
        double nx0 = LEFT + (double)nx->start_us / g->span_us * g->pw;
        double nx1 = nx0 + (double)nx->dur_us / g->span_us * g->pw;
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
    double y = TOP + q->worker * g->row_h + (g->row_h - g->bar_h) / 2;
    fprintf(out,
            "<rect class=\"%s\" x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" "
            "fill=\"%s\">",
            n == 1 ? "req" : "reqs", x0, y, w, g->bar_h, fill);
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
    return n;
}

/* The bars, row by row.  A worker runs one request at a time, so a row's
 * records are in start order.  Runs of tiny bars (under 2 px, closer than
 * 0.75 px, same colour) become one rect of class "reqs": at 100,000
 * requests that keeps the file in the hundreds of KB instead of megabytes
 * of invisible slivers. */
static int svg_bars(FILE *out, const struct timeline *t, const struct geom *g)
{
    size_t *ord = malloc((t->nrecs ? t->nrecs : 1) * sizeof *ord);
    size_t *first = calloc(g->shown + 1, sizeof *first);
    if (!ord || !first) {
        free(ord);
        free(first);
        return -ENOMEM;
    }
    for (size_t i = 0; i < t->nrecs; i++)
        if (t->recs[i].worker < g->shown)
            first[t->recs[i].worker + 1]++;
    for (unsigned r = 0; r < g->shown; r++)
        first[r + 1] += first[r];
    size_t nord = first[g->shown];
    for (size_t i = 0; i < t->nrecs; i++)
        if (t->recs[i].worker < g->shown)
            ord[first[t->recs[i].worker]++] = i;

    for (size_t k = 0; k < nord;)
        k += svg_bar(out, t, g, ord, k, nord);
    free(ord);
    free(first);
    return 0;
}

/* The legend and the notes on what was left out. */
static void svg_legend(FILE *out, const struct timeline *t, const struct geom *g)
{
    static const struct {
        int outcome;
        const char *name;
    } legend[] = {{200, "2xx"}, {300, "3xx"}, {400, "4xx"}, {500, "5xx"}, {-1, "error"}};
    double lx = LEFT, ly = g->axis_y + 56;
    for (size_t i = 0; i < sizeof legend / sizeof legend[0]; i++) {
        fprintf(out,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"%s\"/>"
                "<text class=\"lbl\" x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                lx, ly - 10, color(legend[i].outcome), lx + 16, ly, legend[i].name);
        lx += 70;
    }
    char note[200] = "";
    size_t nl = 0;
    if (g->rows > g->shown)
        nl += (size_t)snprintf(note + nl, sizeof note - nl, "rows %u of %u shown. ", g->shown,
                               g->rows);
    if (t->nrecs < t->total)
        nl += (size_t)snprintf(note + nl, sizeof note - nl, "the first %zu of %llu requests shown.",
                               t->nrecs, (unsigned long long)t->total);
    fprintf(out,
            "<text class=\"note\" x=\"%.1f\" y=\"%.1f\">one row per connection "
            "(worker)%s%s</text>\n",
            lx + 10, ly, nl ? "; " : "", note);
}

int svg_timeline(FILE *out, const struct timeline *t)
{
    struct geom g;
    geom_of(t, &g);
    svg_head(out, t, &g);
    svg_axes(out, &g);
    if (svg_bars(out, t, &g) < 0)
        return -ENOMEM;
    svg_legend(out, t, &g);
    fputs("</svg>\n", out);
    return ferror(out) ? -EIO : 0;
}
