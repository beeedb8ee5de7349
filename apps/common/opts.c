/* Command-line numbers shared by eddy's programs (opts.h). */
#include "opts.h"

#include <errno.h>
#include <stdlib.h>

bool opt_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
    if (*s < '0' || *s > '9')
        return false; /* strtoul would take a sign or leading blanks */
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

bool opt_seconds(const char *s, bool zero_ok, unsigned long max_ms, unsigned *ms)
{
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (errno || end == s || *end || !(zero_ok ? d >= 0 : d > 0) || d * 1000 > (double)max_ms)
        return false;
    unsigned v = (unsigned)(d * 1000 + 0.5);
    *ms = v == 0 && d > 0 ? 1 : v;
    return true;
}
