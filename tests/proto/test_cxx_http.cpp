// The public HTTP headers compile as C++ (-Wall -Wextra -Werror) together
// (eddy/http_all.h: server, client, fibers), and the client's pair type
// brace-initialises without the struct keyword: the server's
// eddy_http_arg() function once hid a struct of that name.
#include "eddy/http_all.h"

#include <cstdio>
#include <cstring>

int main()
{
    eddy_http_pair a{"x", "y"};
    const eddy_http_pair list[] = {{"time", "1.5"}, {"Host", "example.com"}};
    eddy_http_fetch f{};
    f.url = "http://127.0.0.1:1/";
    f.args = list;
    f.nargs = sizeof list / sizeof list[0];
    eddy_http_response r{};
    // C linkage: these resolve against libeddy_http.a.
    const char *(*arg_fn)(struct eddy_http_req *, const char *, const char *) = eddy_http_arg;
    if (eddy_http_response_header(&r, "x") != nullptr || arg_fn == nullptr)
        return 1;
    eddy_http_response_free(&r);
    if (std::strcmp(a.name, "x") != 0 || std::strcmp(a.value, "y") != 0 || f.nargs != 2)
        return 1;
    std::printf("ok\n");
    return 0;
}
