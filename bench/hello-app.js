// The handler every server in the serve benchmark runs: fdpass workers and
// Node cluster workers alike.
module.exports = function hello(req, res) {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '6' });
  res.end('hello\n');
};
