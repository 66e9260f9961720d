// Baseline: the machine's ceiling for a Node HTTP server.
import http from 'node:http';
http.createServer((_req, res) => res.end('hello')).listen(Number(process.env.PORT), '127.0.0.1', () => process.send?.('ready'));
