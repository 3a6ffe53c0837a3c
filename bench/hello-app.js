// The handler every server in the serve benchmark runs: fdpass workers and
// Node cluster and reusePort workers alike. GET /spin first burns SPIN_MS of
// this process's CPU (the mixed-load scenario's slow requests, bench/mixed.lua).
const SPIN_MS = 10;

function spin(ms) {
  const until = process.cpuUsage();
  const budget = ms * 1000;
  for (;;) {
    const d = process.cpuUsage(until);
    if (d.user + d.system >= budget) return;
  }
}

module.exports = function hello(req, res) {
  if (req.url === '/spin') spin(SPIN_MS);
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '6' });
  res.end('hello\n');
};
