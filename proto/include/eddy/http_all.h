/*
 * eddy/http_all.h — an umbrella for the whole HTTP layer: the server
 * (eddy/http.h), the client (eddy/http_client.h) and the fiber routes and
 * awaiting fetch (eddy/http_fiber.h).  A program that uses only one of
 * them includes that one.
 */
#ifndef EDDY_HTTP_ALL_H
#define EDDY_HTTP_ALL_H

#include "eddy/http.h"
#include "eddy/http_client.h"
#include "eddy/http_fiber.h"

#endif /* EDDY_HTTP_ALL_H */
