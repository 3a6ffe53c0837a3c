// Baseline for the serve benchmark: Node's cluster with the same handler.
// usage: node cluster-server.js rr|none PORT WORKERS
const cluster = require('node:cluster');
const http = require('node:http');
const [policy, port, workers] = process.argv.slice(2);
cluster.schedulingPolicy = policy === 'none' ? cluster.SCHED_NONE : cluster.SCHED_RR;
if (cluster.isPrimary) {
  let up = 0;
  for (let i = 0; i < Number(workers); i++) {
    cluster.fork().on('listening', () => {
      if (++up === Number(workers)) console.log(JSON.stringify({ ready: true, pid: process.pid }));
    });
  }
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers)) w.kill();
    process.exit(0);
  });
} else {
  http.createServer(require('./hello-app')).listen(Number(port), '127.0.0.1');
}
