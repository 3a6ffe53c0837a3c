// fdpass serve --listen 127.0.0.1:8080 --listen 127.0.0.1:8443,tls \
//   --cert certs/dev-localhost.crt --key certs/dev-localhost.key examples/serve-app.js
//
// An APP for `fdpass serve`: createServer() returns one server per listener
// name. The https listener's connections reach the worker already decrypted
// (the worker does the TLS handshake with --cert/--key), so a plain http
// server serves both; connectionInfo() tells how each connection came.
const http = require('node:http');
const { connectionInfo } = require('..');

function handler(req, res) {
  const info = connectionInfo(req.socket);
  res.end(`worker ${process.pid} got this on ${info?.listener.address} (${info?.listener.name}), ` +
    `handed over in a batch of ${info?.batch}\n`);
}

module.exports.createServer = () => {
  const server = http.createServer(handler);
  return { http: server, https: server };
};
