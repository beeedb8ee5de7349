#define _GNU_SOURCE
#include "eddy/eddy.h"

#include <string.h>

const char *eddy_strerror(int err)
{
    if (err == 0)
        return "success";
    if (err > 0)
        return "not an error code (positive result)";
    /* strerrordesc_np is thread-safe and never formats into a buffer. */
    const char *s = strerrordesc_np(-err);
    return s ? s : "unknown error";
}
