# Tornado row for tools/bench/bench-http.sh: GET /plaintext -> "Hello, World!".
# usage: python3 tornado-server.py PORT   (0 = any; prints "listening on PORT")
import socket
import sys

import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web


class Plaintext(tornado.web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "text/plain")
        self.write(b"Hello, World!")


def main():
    app = tornado.web.Application([(r"/plaintext", Plaintext)])
    socks = tornado.netutil.bind_sockets(int(sys.argv[1]) if len(sys.argv) > 1 else 0,
                                         "127.0.0.1", family=socket.AF_INET, backlog=4096)
    server = tornado.httpserver.HTTPServer(app, idle_connection_timeout=300)
    server.add_sockets(socks)
    print("listening on %d" % socks[0].getsockname()[1], flush=True)
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
