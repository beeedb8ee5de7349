// Node.js row for tools/bench/bench-http.sh: GET /plaintext -> "Hello, World!".
// usage: node node-server.js PORT   (0 = any; prints "listening on PORT")
'use strict';
const http = require('http');
const body = Buffer.from('Hello, World!');
const server = http.createServer((req, res) => {
  if (req.url === '/plaintext') {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
    res.end(body);
  } else {
    res.writeHead(404, { 'Content-Length': 0 });
    res.end();
  }
});
// The default 5 s keep-alive timeout would close the idle connections the
// memory figure holds; the other servers keep them for a minute or more.
server.keepAliveTimeout = 300000;
server.headersTimeout = 310000;
server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.log('listening on ' + server.address().port);
});
process.on('SIGTERM', () => process.exit(0));
