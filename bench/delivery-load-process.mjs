// Runs bench/delivery-load-worker.mjs in a process of its own (bench/loop-stalls.ts forks it),
// so that the broker's process does nothing but serve: its CPU time over a stall of the event
// loop is then the broker's own, and a stall that used little CPU was the machine's scheduler
// (other processes on the same cores), not work on the loop. Messages are relayed both ways.
import { Worker } from 'node:worker_threads';

const worker = new Worker(new URL('./delivery-load-worker.mjs', import.meta.url), { workerData: JSON.parse(process.argv[2]) });
worker.on('message', (m) => process.send(m));
worker.on('error', (err) => {
  process.stderr.write(`load worker: ${err.message}\n`);
  process.exit(1);
});
worker.on('exit', (code) => process.exit(code));
process.on('message', (m) => worker.postMessage(m));
