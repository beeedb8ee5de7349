/*
 * common.h: what the HTTP server (internal.h) and the client
 * (client_codec.h) both need: RFC 9110's token and field-value rules, and
 * the one growth rule every growing buffer of the layer follows.  Not
 * installed.
 */
#ifndef EDDY_PROTO_COMMON_H
#define EDDY_PROTO_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* ASCII letters and digits, whatever the locale (isalnum() follows it). */
static inline bool ascii_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

/* RFC 9110 5.6.2: a character of a token (field-name, method). */
static inline bool is_tchar(unsigned char c)
{
    return ascii_alnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* A token: one tchar or more.  NULL is not one. */
static inline bool is_token(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (!is_tchar((unsigned char)*s))
            return false;
    return true;
}

/* RFC 9110 5.5: a field value is visible characters, obs-text, SP and
 * HTAB; no other control character (CR, LF ... would end or split the
 * line; NUL cannot occur inside a C string).  NULL is not one. */
static inline bool is_field_value(const char *s)
{
    if (!s)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

/* The capacity for need bytes: cap (init when 0) doubled until it holds
 * them, so a run of appends costs O(1) each.  Every growing buffer of the
 * layer is sized here: the server's through grow() (internal.h) and
 * out_reserve(), the client's responses through grow_append(). */
static inline size_t grow_cap(size_t cap, size_t need, size_t init)
{
    if (!cap)
        cap = init;
    while (cap < need)
        cap *= 2;
    return cap;
}

#endif /* EDDY_PROTO_COMMON_H */
