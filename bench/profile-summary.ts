// Summarises a V8 .cpuprofile (from `node --cpu-prof`): self time by package / source area,
// the top functions by self time, and inclusive time of the broker's own functions.
// Usage: node --import tsx bench/profile-summary.ts <file.cpuprofile> [top=25] [skip-ms=0]
// skip-ms leaves out the first milliseconds of the profile (process start-up).
import fs from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
const file = process.argv[2];
const top = Number(process.argv[3] ?? 25);
const skipUs = Number(process.argv[4] ?? 0) * 1000;
const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as { nodes: Node[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number };
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const selfUs = new Map<number, number>();
let t = 0;
let counted = 0;
let totalUs = 0;
for (let i = 0; i < prof.samples.length; i++) {
  t += prof.timeDeltas[i] ?? 0;
  if (t < skipUs) continue;
  // the delta before a sample is the time attributed to it (V8's own convention)
  const d = prof.timeDeltas[i] ?? 0;
  selfUs.set(prof.samples[i], (selfUs.get(prof.samples[i]) ?? 0) + d);
  totalUs += d;
  counted++;
}

function area(url: string, fn: string): string {
  if (!url) return fn.startsWith('(') ? fn : '(native/builtin)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1];
  if (url.startsWith('node:')) return url.split('/').slice(0, 2).join('/');
  const src = /\/src\/(.*)$/.exec(url);
  if (src) return `src/${src[1].split('/')[0]}`;
  return url;
}
const key = (n: Node) => `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.replace(/^.*\/(node_modules|src)\//, '$1/')}:${n.callFrame.lineNumber + 1}`;

const areas = new Map<string, number>();
const fns = new Map<string, number>();
for (const n of prof.nodes) {
  const us = selfUs.get(n.id) ?? 0;
  if (!us) continue;
  const a = area(n.callFrame.url, n.callFrame.functionName);
  areas.set(a, (areas.get(a) ?? 0) + us);
  fns.set(key(n), (fns.get(key(n)) ?? 0) + us);
}
// inclusive time per broker function (src/ only), counted once per stack
const parent = new Map<number, number>();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const inclusive = new Map<string, number>();
for (const [id, us] of selfUs) {
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const n = byId.get(cur)!;
    if (!/\/src\//.test(n.callFrame.url) || /node_modules/.test(n.callFrame.url)) continue;
    const k = key(n);
    if (seen.has(k)) continue;
    seen.add(k);
    inclusive.set(k, (inclusive.get(k) ?? 0) + us);
  }
}
const pct = (us: number) => `${((100 * us) / totalUs).toFixed(1).padStart(5)}%`;
const table = (m: Map<string, number>, n: number) =>
  [...m.entries()]
    .sort((x, y) => y[1] - x[1])
    .slice(0, n)
    .map(([k, us]) => `  ${pct(us)}  ${(us / 1000).toFixed(0).padStart(7)} ms  ${k}`)
    .join('\n');
console.log(`profile ${file}: ${(totalUs / 1e6).toFixed(1)} s summarised (first ${(skipUs / 1e6).toFixed(1)} s of start-up skipped), ${counted} samples`);
console.log(`\nself time by area:\n${table(areas, 20)}`);
console.log(`\ntop ${top} functions by self time:\n${table(fns, top)}`);
console.log(`\nbroker (src/) functions by inclusive time (synchronous stacks only):\n${table(inclusive, top)}`);
