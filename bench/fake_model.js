// A fake OpenAI-compatible model server for bench/backend.sh: answers every
// POST .../chat/completions after a fixed delay (DELAY_MS, default 200) with
// a small JSON completion, or as server-sent events when the request asks to
// stream. Node's standard library only; independent of chatgate's code.
//   node bench/fake_model.js PORT
'use strict';
const http = require('http');

const port = Number(process.argv[2] || 0);
const delay = Number(process.env.DELAY_MS || 200);

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let body = {};
    try {
      body = JSON.parse(Buffer.concat(chunks).toString() || '{}');
    } catch (e) {
      res.writeHead(400, { 'Content-Type': 'application/json' });
      res.end('{"error":{"message":"bad json"}}');
      return;
    }
    setTimeout(() => {
      const text = 'a fixed answer from the benchmark model';
      if (body.stream) {
        res.writeHead(200, { 'Content-Type': 'text/event-stream' });
        const chunk = { choices: [{ index: 0, delta: { content: text } }] };
        res.write('data: ' + JSON.stringify(chunk) + '\n\n');
        res.end('data: [DONE]\n\n');
        return;
      }
      const answer = JSON.stringify({
        id: 'bench', object: 'chat.completion',
        choices: [{ index: 0, finish_reason: 'stop', message: { role: 'assistant', content: text } }],
      });
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(answer) });
      res.end(answer);
    }, delay);
  });
});
server.keepAliveTimeout = 60000;
server.maxHeadersCount = 100;
server.listen(port, '127.0.0.1', () => {
  console.log('PORT ' + server.address().port);
});
