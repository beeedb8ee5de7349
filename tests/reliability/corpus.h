/*
 * The bad-bytes corpus (corpus.txt) loader, shared by the corpus runner
 * and the seed dump for the fuzzer.  The format is described at the top of
 * corpus.txt.
 */
#ifndef EDDY_RELIABILITY_CORPUS_H
#define EDDY_RELIABILITY_CORPUS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CORPUS_MAX_ANS 16

struct ccase {
    int line;
    char name[96];
    char ref[256];
    int status[CORPUS_MAX_ANS]; /* expected answers, in order */
    int nstatus;
    int closes;                 /* 1: the server closes after the last answer */
    int known;                  /* '!': a known deviation from the RFC */
    char *req;
    size_t len;
};

static int hexnib(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Decodes the escapes of s[0..n) into out (NULL: only count); returns the
 * decoded length or -1 on a bad escape. */
static long corpus_unescape(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '\\' && i + 1 < n) {
            char e = s[++i];
            if (e == 'r')
                ch = '\r';
            else if (e == 'n')
                ch = '\n';
            else if (e == 't')
                ch = '\t';
            else if (e == '\\')
                ch = '\\';
            else if (e == 'x' && i + 2 < n && hexnib(s[i + 1]) >= 0 && hexnib(s[i + 2]) >= 0) {
                ch = (char)(hexnib(s[i + 1]) * 16 + hexnib(s[i + 2]));
                i += 2;
            } else
                return -1;
        } else if (ch == '\\') {
            return -1;
        }
        if (out)
            out[o] = ch;
        o++;
    }
    return (long)o;
}

/* Decodes a request field: escapes plus {N*text} repeats. */
static long corpus_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    size_t i = 0;
    while (i < n) {
        const char *br = memchr(s + i, '{', n - i);
        size_t plain = br ? (size_t)(br - (s + i)) : n - i;
        long k = corpus_unescape(s + i, plain, out ? out + o : NULL);
        if (k < 0)
            return -1;
        o += (size_t)k;
        i += plain;
        if (!br)
            break;
        const char *end = memchr(br, '}', n - i);
        char *star;
        long rep = strtol(br + 1, &star, 10);
        if (!end || *star != '*' || star > end || rep <= 0 || rep > 100000)
            return -1;
        long one = corpus_unescape(star + 1, (size_t)(end - star - 1), NULL);
        if (one < 0)
            return -1;
        for (long r = 0; r < rep; r++) {
            if (out)
                corpus_unescape(star + 1, (size_t)(end - star - 1), out + o);
            o += (size_t)one;
        }
        i = (size_t)(end + 1 - s);
    }
    return (long)o;
}

/* Loads path into a malloc'ed array (*out, *n).  Returns 0, or the line
 * number of the first malformed line (negative: the file is missing). */
static int corpus_load(const char *path, struct ccase **out, size_t *n)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t cap = 256, cnt = 0;
    struct ccase *cs = calloc(cap, sizeof *cs);
    char *line = NULL;
    size_t lcap = 0;
    ssize_t ll;
    int lineno = 0, bad = 0;
    while ((ll = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        while (ll > 0 && (line[ll - 1] == '\n' || line[ll - 1] == '\r'))
            line[--ll] = 0;
        if (ll == 0 || line[0] == '#')
            continue;
        char *f1 = strstr(line, " | ");
        char *f2 = f1 ? strstr(f1 + 3, " | ") : NULL;
        char *f3 = f2 ? strstr(f2 + 3, " | ") : NULL;
        if (!f3) {
            bad = lineno;
            break;
        }
        if (cnt == cap) {
            cap *= 2;
            cs = realloc(cs, cap * sizeof *cs);
        }
        struct ccase *c = &cs[cnt];
        memset(c, 0, sizeof *c);
        c->line = lineno;
        *f1 = *f2 = *f3 = 0;
        char *e = line;
        if (*e == '!') {
            c->known = 1;
            e++;
        }
        for (;;) {
            char *end;
            long st = strtol(e, &end, 10);
            if (end == e || c->nstatus == CORPUS_MAX_ANS) {
                bad = lineno;
                break;
            }
            c->status[c->nstatus++] = (int)st;
            e = end;
            if (*e != ',')
                break;
            e++;
        }
        if (bad)
            break;
        if (!strcmp(e, " close"))
            c->closes = 1;
        else if (strcmp(e, " keep")) {
            bad = lineno;
            break;
        }
        if (c->nstatus == 1 && c->status[0] == 0)
            c->nstatus = 0;
        snprintf(c->name, sizeof c->name, "%s", f1 + 3);
        snprintf(c->ref, sizeof c->ref, "%s", f2 + 3);
        const char *rq = f3 + 3;
        long len = corpus_decode(rq, strlen(rq), NULL);
        if (len <= 0) {
            bad = lineno;
            break;
        }
        c->req = malloc((size_t)len);
        corpus_decode(rq, strlen(rq), c->req);
        c->len = (size_t)len;
        cnt++;
    }
    free(line);
    fclose(f);
    if (bad) {
        for (size_t i = 0; i < cnt; i++)
            free(cs[i].req);
        free(cs);
        return bad;
    }
    *out = cs;
    *n = cnt;
    return 0;
}

static void corpus_free(struct ccase *cs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(cs[i].req);
    free(cs);
}

#endif
