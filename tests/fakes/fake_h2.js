// An OpenAI-compatible fake over TLS that speaks HTTP/2 (and HTTP/1.1 for
// clients that do not offer h2), to check that chatgate's HTTP client
// negotiates HTTP/2 and reuses one connection. Node's standard library
// only; independent of chatgate's code.
//   node fake_h2.js CERT KEY      prints "PORT n" once listening
// GET /stats answers {"sessions": n, "versions": [...]}: TLS connections
// accepted and the HTTP version of every completion request.
'use strict';
const fs = require('fs');
const http2 = require('http2');

const stats = { sessions: 0, versions: [] };
const server = http2.createSecureServer({
  cert: fs.readFileSync(process.argv[2]),
  key: fs.readFileSync(process.argv[3]),
  allowHTTP1: true,
});
server.on('secureConnection', () => { stats.sessions += 1; });
server.on('request', (req, res) => {
  if (req.method === 'GET' && req.url === '/stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(stats));
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    stats.versions.push(req.httpVersion);
    const answer = JSON.stringify({
      id: 'h2', object: 'chat.completion',
      choices: [{ index: 0, finish_reason: 'stop',
                  message: { role: 'assistant', content: 'reply over HTTP/' + req.httpVersion } }],
    });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(answer);
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write('PORT ' + server.address().port + '\n');
});
