/*
 * Command-line numbers shared by eddy's programs (eddy-demo, eddy-echo):
 * one strict parser for each kind, so that every option of every program
 * accepts and refuses the same spellings.
 */
#ifndef EDDY_APPS_OPTS_H
#define EDDY_APPS_OPTS_H

#include <stdbool.h>

/* A whole decimal number in [min, max]: digits only (no sign, no blanks,
 * no base prefix).  true and *out, or false (*out untouched). */
bool opt_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out);

/*
 * Seconds, decimals allowed ("2.5"), to milliseconds rounded to the
 * nearest, at most max_ms.  zero_ok: "0" means 0 (off, for a timeout);
 * otherwise the value must be more than 0.  A positive value below half a
 * millisecond becomes 1 ms, never 0.  true and *ms, or false.
 */
bool opt_seconds(const char *s, bool zero_ok, unsigned long max_ms, unsigned *ms);

#endif
