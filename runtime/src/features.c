/*
 * Feature names, their parsing, and the switches that turn features off
 * (EDDY_DISABLE, EDDY_COMPAT).  What the kernel has is probed by the
 * backend; this file only knows the names and the rules between them.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *const feature_names[] = {
    "accept_multishot", "buf_ring",  "recv_multishot", "single_issuer",
    "defer_taskrun",    "coop_taskrun", "msg_ring",    "send_zc",
    "timeout_update",   "no_memlock", "registered_ring", "shutdown",
    "nodrop",           "ext_arg",   "cqe_skip",
};
#define NFEATURES (sizeof feature_names / sizeof feature_names[0])

const char *eddy_feature_name(unsigned feature)
{
    for (unsigned i = 0; i < NFEATURES; i++)
        if (feature == 1u << i)
            return feature_names[i];
    return NULL;
}

int eddy_feature_parse(const char *list, unsigned *mask)
{
    unsigned m = 0;
    const char *p = list ? list : "";
    while (*p) {
        while (*p == ',' || *p == ' ')
            p++;
        if (!*p)
            break;
        size_t n = strcspn(p, ", ");
        bool found = false;
        if (n == 3 && !strncmp(p, "all", 3)) {
            m |= (1u << NFEATURES) - 1;
            found = true;
        }
        for (unsigned i = 0; i < NFEATURES && !found; i++) {
            if (strlen(feature_names[i]) == n && !strncmp(p, feature_names[i], n)) {
                m |= 1u << i;
                found = true;
            }
        }
        if (!found)
            return -EINVAL;
        p += n;
    }
    *mask = m;
    return 0;
}

unsigned features_env_disable(const char **bad)
{
    unsigned m = 0;
    const char *compat = getenv("EDDY_COMPAT");
    if (compat && !strcmp(compat, "5.10"))
        m |= EDDY_FEAT_NOT_IN_5_10;
    const char *list = getenv("EDDY_DISABLE");
    unsigned d;
    if (list && eddy_feature_parse(list, &d) == 0)
        m |= d;
    else if (list)
        *bad = list;
    return m;
}

unsigned features_disable_closure(unsigned disable)
{
    /* Multishot recv needs the buffer ring, DEFER_TASKRUN needs
     * SINGLE_ISSUER. */
    if (disable & EDDY_FEAT_BUF_RING)
        disable |= EDDY_FEAT_RECV_MULTI;
    if (disable & EDDY_FEAT_SINGLE_ISSUER)
        disable |= EDDY_FEAT_DEFER_TASKRUN;
    return disable;
}

const char *features_env_backend(void)
{
    return getenv("EDDY_BACKEND");
}

const char *features_env_faults(void)
{
    return getenv("EDDY_FAULTS");
}
